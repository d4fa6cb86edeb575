"""A data set a user brings as files (``data.name=files data.path=DIR``): spike events or analog
features with labels, in NumPy ``.npz`` archives read with ``allow_pickle=False``.

``DIR`` holds ``train.npz`` and ``test.npz`` (and, optionally, ``val.npz``).  Each archive has

* ``labels``: integers ``(N,)`` in ``[0, n_classes)``;
* either **analog** input: ``x``, floats ``(N, steps, channels)``, one row per network step;
* or **spike events**: ``event_sample`` ``(E,)`` (which sample, ``[0, N)``), ``event_channel``
  ``(E,)`` (which input, ``[0, channels)``), and ``event_step`` ``(E,)`` (integer steps) or
  ``event_time_ms`` ``(E,)`` (times in ms, binned to the network's ``dt_ms`` as
  ``floor(t / dt_ms)``); plus the scalars ``channels`` and ``steps`` (the length of a sample in
  steps; a network that sets ``network.steps`` uses its own and events at or past it are refused).

Optional everywhere: ``class_names`` (a string array; default ``"0", "1", ...``).  All archives
of a set must agree on the kind of input, channels and steps.  Anything else is refused with a
:class:`~spinnray.errors.DataError` that names the file, the array and what was expected.

Memory: spike events are held as events (a batch's raster is made when it is asked for); analog
``x`` is read from the file per batch when the archive is uncompressed (``numpy.savez``,
:func:`write_analog`), and held as float32 when it is compressed (``numpy.savez_compressed``).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinnray.config import opt
from spinnray.data.base import ArraySplit, Dataset, EventSplit, NpzRows, Timing, register
from spinnray.errors import ConfigError, DataError

__all__ = ["FilesConfig", "load", "write_events", "write_analog"]

#: the most samples, steps and channels a file may declare (sizes are checked before allocating)
MAX_SAMPLES, MAX_STEPS, MAX_CHANNELS = 10_000_000, 1_000_000, 100_000
#: the largest raster of one sample (bytes, one per step and channel): a batch is made of such rasters
MAX_RASTER = 256 << 20


@dataclass(frozen=True)
class FilesConfig:
    """A user's data set in the documented ``.npz`` layout (module docstring)."""

    name: str = opt("files", "data set", choices=("files",))
    path: str | None = opt(None, "directory holding train.npz, test.npz and optionally val.npz", path=True)
    limit: int | None = opt(None, "use only the first N samples of each split", min=1, max=10_000_000)


def _read(path: Path) -> dict[str, np.ndarray | None]:
    """The archive's arrays, but ``x`` (None here: :func:`_analog` reads it)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: None if k == "x" else z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})"[:300]) from None


def _int_array(path: Path, arrays: dict, key: str, n: int | None = None) -> np.ndarray:
    a = arrays.get(key)
    if a is None:
        raise DataError(f"{path}: no array {key!r}")
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer) or (n is not None and len(a) != n):
        raise DataError(f"{path}: {key} has shape {a.shape} and dtype {a.dtype}; expected 1-D integers"
                        + (f" of length {n}" if n is not None else ""))
    return a.astype(np.int64)


def _scalar(path: Path, arrays: dict, key: str, hi: int) -> int:
    a = arrays.get(key)
    if a is None or a.shape != () or not np.issubdtype(a.dtype, np.integer) or not 1 <= int(a) <= hi:
        shown = "missing" if a is None else (str(a.item()) if a.shape == () else f"an array of shape {a.shape}")
        raise DataError(f"{path}: {key} = {shown}; expected an integer scalar in [1, {hi}]")
    return int(a)


def _analog(path: Path) -> NpzRows | np.ndarray:
    """``x``: read per batch if it is stored uncompressed (``numpy.savez``), else loaded here."""
    try:
        with zipfile.ZipFile(path) as z:
            stored = z.getinfo("x.npy").compress_type == zipfile.ZIP_STORED
        if stored:
            return NpzRows(path, "x")
        with np.load(path, allow_pickle=False) as z:
            return z["x"]
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: x is not a readable array ({type(e).__name__}: {e})"[:300]) from None


def _split(path: Path, dt_ms: float, steps: int | None, limit: int | None):
    """``(kind, channels, steps, split, class names or None)`` of one archive."""
    arrays = _read(path)
    labels = _int_array(path, arrays, "labels")
    if len(labels) > MAX_SAMPLES:
        raise DataError(f"{path}: {len(labels)} samples; at most {MAX_SAMPLES}")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{path}: labels hold {int(labels.min())}; expected integers >= 0")
    names = arrays.get("class_names")
    if names is not None and (names.ndim != 1 or names.dtype.kind != "U"):
        raise DataError(f"{path}: class_names of dtype {names.dtype}; expected a 1-D string array")
    n = len(labels) if limit is None else min(len(labels), limit)
    if "x" in arrays:
        x = _analog(path)
        if len(x.shape) != 3 or x.shape[0] != len(labels) or not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{path}: x has shape {x.shape} and dtype {x.dtype}; expected numbers of shape "
                            f"({len(labels)}, steps, channels)")
        # held: float32 at once; read per batch: checked block by block, cast per batch
        x = x.head(n) if isinstance(x, NpzRows) else np.asarray(x[:n], np.float32)
        if not all(np.isfinite(b.astype(np.float32)).all() for b in (x.blocks() if isinstance(x, NpzRows) else [x])):
            raise DataError(f"{path}: x holds non-finite values")
        if steps is not None and x.shape[1] != steps:
            raise DataError(f"{path}: x has {x.shape[1]} steps; the network runs network.steps = {steps}")
        return "analog", x.shape[2], x.shape[1], ArraySplit(x, labels[:n], dtype=np.float32), names
    if "event_sample" not in arrays:
        raise DataError(f"{path}: neither x (analog input) nor event_sample, event_channel and event_step or "
                        "event_time_ms (spike events)")
    sample = _int_array(path, arrays, "event_sample")
    channel = _int_array(path, arrays, "event_channel", len(sample))
    channels = _scalar(path, arrays, "channels", MAX_CHANNELS)
    file_steps = _scalar(path, arrays, "steps", MAX_STEPS)
    steps_from = "the file's steps" if steps is None else "network.steps"
    steps = file_steps if steps is None else steps
    if "event_step" in arrays:
        step = _int_array(path, arrays, "event_step", len(sample))
    elif "event_time_ms" in arrays:
        t = arrays["event_time_ms"]
        if t.shape != sample.shape or not np.issubdtype(t.dtype, np.number) or not np.isfinite(t).all():
            raise DataError(f"{path}: event_time_ms has shape {t.shape} and dtype {t.dtype}; expected finite "
                            f"numbers, one per event ({len(sample)})")
        step = np.floor(np.asarray(t, np.float64) / dt_ms).astype(np.int64)
    else:
        raise DataError(f"{path}: neither x (analog input) nor event_step / event_time_ms (spike events)")
    for key, values, hi in (("event_sample", sample, len(labels)), ("event_channel", channel, channels),
                            ("event step", step, steps)):
        if len(values) and (values.min() < 0 or values.max() >= hi):
            bad = int(values.min()) if values.min() < 0 else int(values.max())
            raise DataError(f"{path}: {key} {bad} outside [0, {hi})" + (f" ({steps_from})" if key == "event step" else ""))
    if steps * channels > MAX_RASTER:
        raise DataError(f"{path}: one sample of {steps} steps x {channels} channels is a spike raster of more than "
                        f"{MAX_RASTER >> 20} MB; expected fewer steps or channels")
    keep = sample < n
    return "spikes", channels, steps, EventSplit(sample[keep], step[keep], channel[keep], labels[:n], steps,
                                                 channels), names


@register("files", FilesConfig)
def load(cfg: FilesConfig, timing: Timing, progress: bool = True) -> Dataset:
    if cfg.path is None:
        raise ConfigError("data.path = null: data.name=files needs the directory of train.npz and test.npz")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path = {cfg.path!r}: not a directory")
    parts = {}
    for split in ("train", "test", "val"):
        path = root / f"{split}.npz"
        if split == "val" and not path.exists():
            continue
        parts[split] = _split(path, timing.dt_ms, timing.steps, cfg.limit)
    kinds = {(k, c, s) for k, c, s, _, _ in parts.values()}
    if len(kinds) != 1:
        raise DataError(f"data.path = {cfg.path!r}: the files disagree on (input kind, channels, steps): "
                        f"{sorted(kinds)}")
    kind, channels, steps = kinds.pop()
    names = next((p[4] for p in parts.values() if p[4] is not None), None)
    n_classes = max(int(p[3].labels.max()) + 1 if len(p[3]) else 0 for p in parts.values())
    class_names = [str(s) for s in names] if names is not None else [str(i) for i in range(n_classes)]
    if len(class_names) < n_classes:
        raise DataError(f"data.path = {cfg.path!r}: labels reach {n_classes - 1} but class_names has "
                        f"{len(class_names)} names")
    return Dataset("files", kind, channels, steps, class_names, parts["train"][3], parts["test"][3],
                   parts["val"][3] if "val" in parts else None)


def write_events(path, labels, event_sample, event_channel, event_step, channels: int, steps: int,
                 class_names=None) -> None:
    """Write one split of spike events in the layout above (for users and tests)."""
    extra = {} if class_names is None else {"class_names": np.asarray(class_names, str)}
    np.savez(path, labels=np.asarray(labels, np.int64), event_sample=np.asarray(event_sample, np.int64),
             event_channel=np.asarray(event_channel, np.int64), event_step=np.asarray(event_step, np.int64),
             channels=np.int64(channels), steps=np.int64(steps), **extra)


def write_analog(path, labels, x, class_names=None) -> None:
    """Write one split of analog input ``x`` (N, steps, channels) in the layout above."""
    extra = {} if class_names is None else {"class_names": np.asarray(class_names, str)}
    np.savez(path, labels=np.asarray(labels, np.int64), x=np.asarray(x, np.float32), **extra)
