"""The Spiking Heidelberg Digits (SHD) and Spiking Speech Commands (SSC) from their published
HDF5 files (Cramer, Stradmann, Schemmel & Zenke, IEEE TNNLS 33:2744, 2022), and any set written in
the same layout (the spiking keyword set, :mod:`spinnray.data.keyword_spikes`).

The sets cannot be downloaded from here: get them from
https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/ (files at https://zenkelab.org/datasets/),
decompress them, and point ``data.root`` at the directory that holds

* SHD (20 classes, digits 0-9 in English and German): ``shd_train.h5``, ``shd_test.h5``;
* SSC (35 words of Speech Commands v0.02): ``ssc_train.h5``, ``ssc_valid.h5``, ``ssc_test.h5``.

**Layout of one file** (what this reader requires; ``extra/meta_info`` and anything else is ignored):

* ``spikes/times``: (N,) variable-length floats (any width; SHD stores float16), sample i's spike times
  in **seconds**, finite and >= 0;
* ``spikes/units``: (N,) variable-length integers, the channel of each of those spikes, in
  ``[0, channels)`` (700 for SHD and SSC), as many as times in every sample;
* ``labels``: (N,) integers >= 0;
* ``extra/speaker``: (N,) integers, the speaker of each sample (optional; needed for ``val_speakers``);
* ``extra/keys``: (K,) strings, the class names by label (optional; default ``"0", "1", ...``).

**Binning.**  Spike (t, u) goes to step ``floor(t * 1000 / dt_ms)`` of channel u.  A step holds 0 or 1
(the network's input is a boolean spike raster: a spike is one event of unit weight), so two spikes
of one channel in one step become one; they are counted (``merged``).  A sample lasts ``duration_ms``
(``steps = ceil(duration_ms / dt_ms)``; ``network.steps`` overrides it): spikes at or after its end
are dropped and counted (``dropped``).  mlGeNN's EventProp SHD example uses dt = 1 ms and crops at
1 s, the defaults here.

**Validation.**  SHD defines a training and a test file only (8,156 / 2,264 samples in the current
release; 12 speakers, 2 of them only in the test set) and no validation set; studies select models
on the test set or by leave-one-speaker-out cross-validation on the training file (Nowotny, Turner &
Knight 2025 report their 93.5 +- 0.7 % that way).  ``val_speakers=[s, ...]`` holds the samples of those
speakers out of the training file as the validation split: one fold of that protocol.  SSC defines its
validation split itself (``ssc_valid.h5``; 75,466 / 9,981 / 20,382 samples): it is the validation
split, and ``val_speakers`` is refused.

**Memory.**  A file is read a chunk of samples at a time and each sample is kept as its sorted,
distinct ``step * channels + channel`` keys (int32, 4 bytes per spike kept) in a
:class:`~spinnray.data.base.EventSplit`, which rasterises only the mini-batch asked for,
``(steps, batch, channels)`` bool.  Every size read from a
file (samples, classes, spikes per chunk) is checked before anything of that size is allocated; the
ragged arrays themselves are bounded by the file (HDF5 stores variable-length data uncompressed).
Malformed files raise :class:`~spinnray.errors.DataError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinnray.config import opt
from spinnray.data.base import Dataset, EventSplit, Timing, register
from spinnray.data.keywords import DEFAULT_PER_WORD
from spinnray.errors import ConfigError, DataError

try:                            # optional: pip install 'spinnray[shd]'
    import h5py
except ImportError:             # pragma: no cover - exercised only without the extra
    h5py = None

__all__ = ["CHANNELS", "SETS", "KEYWORD_OPTIONS", "SpikeSet", "SHDConfig", "SpikeFile", "read_spike_file",
           "spike_dataset", "write_spike_file", "load"]

log = logging.getLogger(__name__)

#: input channels of SHD and SSC (the cochlea model's 700 hair cells)
CHANNELS = 700
#: the most samples a file and the most classes a set may declare, the longest sample in steps, the most
#: spikes one split may keep (int32 keys: 4 GiB)
MAX_SAMPLES, MAX_CLASSES, MAX_STEPS = 10_000_000, 100_000, 1_000_000
MAX_EVENTS = 1 << 30
#: samples read from a file at a time
CHUNK = 1024
URL = "https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/"


@dataclass(frozen=True)
class SpikeSet:
    """A data set in this layout: its file per split (``val`` None: the set defines no validation split)."""

    name: str
    title: str
    train: str
    test: str
    val: str | None = None

    def files(self) -> dict[str, str]:
        return {k: f for k, f in (("train", self.train), ("val", self.val), ("test", self.test)) if f}


SETS = {
    "shd": SpikeSet("shd", "Spiking Heidelberg Digits", "shd_train.h5", "shd_test.h5"),
    "ssc": SpikeSet("ssc", "Spiking Speech Commands", "ssc_train.h5", "ssc_test.h5", "ssc_valid.h5"),
}


#: the options only the spiking keyword set (:mod:`spinnray.data.keyword_spikes`) reads: how it is made
KEYWORD_OPTIONS = ("audio_root", "per_word", "data_seed", "bands", "levels_db", "hysteresis_db", "smooth_ms")


@dataclass(frozen=True)
class SHDConfig:
    """A data set in the SHD layout: SHD or SSC from the published files at ``root`` (module docstring),
    or the spiking keyword set (:mod:`spinnray.data.keyword_spikes`).  One config for the three, so that
    ``data.name`` switches between them on the command line; the keyword set's options are refused for
    the published sets unless left at their defaults."""

    name: str = opt("shd", "shd (Spiking Heidelberg Digits) | ssc (Spiking Speech Commands) | keyword_spikes (the "
                           "offline keyword set as spikes)", choices=(*SETS, "keyword_spikes"))
    root: str | None = opt(None, "directory of the files (shd_train.h5, shd_test.h5; ssc_train.h5, ssc_valid.h5, "
                                 "ssc_test.h5); keyword_spikes: where they are written (null = "
                                 "~/.cache/spinnray/keyword_spikes)", path=True)
    duration_ms: float = opt(1000.0, "length of a sample: steps = ceil(duration_ms / network.dt_ms) (network.steps "
                                     "overrides it); later spikes are dropped", min=1e-3, max=1e7)
    val_speakers: tuple[int, ...] | None = opt(None, "SHD: speakers of the training file held out as the validation "
                                                     "split (SHD defines none: one fold of leave-one-speaker-out); "
                                                     "null = none (SSC and keyword_spikes define theirs)")
    limit: int | None = opt(None, "use only the first N samples of each split", min=1, max=MAX_SAMPLES)
    audio_root: str | None = opt(None, "keyword_spikes: the espeak-ng keyword set they are encoded from (generated "
                                       "on first use; null = ~/.cache/spinnray/keywords)", path=True)
    per_word: int = opt(DEFAULT_PER_WORD, "keyword_spikes: keyword set clips per word", min=1, max=100_000)
    data_seed: int = opt(0, "keyword_spikes: keyword set generator seed", min=0, max=2**32 - 1)
    bands: int = opt(32, "keyword_spikes front end: mel bands (100 Hz - 8 kHz)", min=1, max=256)
    levels_db: tuple[float, ...] = opt(None, "keyword_spikes front end: crossing levels, dB below the clip's loudest "
                                             "band-frame", factory=lambda: (-6.0, -12.0, -18.0, -24.0, -30.0, -36.0))
    hysteresis_db: float = opt(3.0, "keyword_spikes front end: a detector re-arms after falling (rising) this far "
                                    "past its level", min=0.0, max=60.0)
    smooth_ms: float = opt(10.0, "keyword_spikes front end: time constant of the band-energy low-pass (0 = none)",
                           min=0.0, max=1000.0)

    def __post_init__(self):
        if self.name in SETS:
            for f in dataclasses.fields(self):
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                if f.name in KEYWORD_OPTIONS and getattr(self, f.name) != default:
                    raise ConfigError(f"data.{f.name} = {getattr(self, f.name)!r}: an option of data.name="
                                      f"keyword_spikes; data.name={self.name} reads the published files (expected "
                                      f"{default!r})")
        spec = SETS.get(self.name)
        if self.val_speakers and (spec is None or spec.val is not None):
            title, val = (spec.title, spec.val) if spec else ("the spiking keyword set", "keyword_spikes_valid.h5")
            raise ConfigError(f"data.val_speakers = {list(self.val_speakers)}: {title} defines its validation "
                              f"split ({val}); expected null")


# --------------------------------------------------------------------------- #
# reading one file
# --------------------------------------------------------------------------- #
@dataclass
class SpikeFile:
    """One file read and binned: the split, each sample's speaker (None: no ``extra/speaker``), the
    class names (None: no ``extra/keys``) and the spikes it held, dropped (at or after the sample's
    end) and merged (same step and channel)."""

    split: EventSplit
    speakers: np.ndarray | None
    keys: list[str] | None
    spikes: int
    dropped: int
    merged: int


def _require_h5py() -> None:
    if h5py is None:
        raise DataError("reading SHD-layout HDF5 files needs h5py: pip install 'spinnray[shd]' (or pip install h5py)")


def _dataset(path: Path, f, name: str):
    obj = f.get(name)
    if obj is None:
        raise DataError(f"{path}: no {name}")
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{path}: {name} is a {type(obj).__name__}; expected a dataset")
    return obj


def _int_column(path: Path, f, name: str, n: int | None, optional: bool = False):
    if optional and name not in f:
        return None
    ds = _dataset(path, f, name)
    if ds.dtype.kind not in "iu" or ds.ndim != 1 or (n is not None and ds.shape[0] != n):
        raise DataError(f"{path}: {name} has shape {ds.shape} and dtype {ds.dtype}; expected 1-D integers"
                        + (f" of length {n} (one per label)" if n is not None else ""))
    if ds.shape[0] > MAX_SAMPLES:
        raise DataError(f"{path}: {name} holds {ds.shape[0]} samples; at most {MAX_SAMPLES}")
    return ds


def _ragged(path: Path, f, name: str, kinds: str, n: int):
    ds = _dataset(path, f, name)
    base = h5py.check_vlen_dtype(ds.dtype)
    if base is None or base.kind not in kinds or ds.shape != (n,):
        what = "floats" if kinds == "f" else "integers"
        raise DataError(f"{path}: {name} has shape {ds.shape} and dtype {base or ds.dtype}; expected ({n},) "
                        f"variable-length {what} (one array per sample)")
    return ds


def _class_keys(path: Path, f) -> list[str] | None:
    if "extra/keys" not in f:
        return None
    ds = _dataset(path, f, "extra/keys")
    if ds.ndim != 1 or ds.shape[0] > MAX_CLASSES or not (ds.dtype.kind == "S" or h5py.check_string_dtype(ds.dtype)):
        raise DataError(f"{path}: extra/keys has shape {ds.shape} and dtype {ds.dtype}; expected at most "
                        f"{MAX_CLASSES} strings")
    try:
        return [k.decode() if isinstance(k, bytes) else str(k) for k in ds[()]]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: extra/keys is not UTF-8 text ({e})") from None


def _bin_chunk(path: Path, first: int, times, units, steps: int, channels: int, dt_ms: float):
    """The sorted distinct keys of a chunk's samples and each one's count; spikes seen, dropped, merged."""
    for i, (t, u) in enumerate(zip(times, units)):
        if len(t) != len(u):
            raise DataError(f"{path}: sample {first + i} has {len(t)} spikes/times but {len(u)} spikes/units")
    lengths = np.fromiter((len(t) for t in times), np.int64, len(times))
    if lengths.sum() > MAX_EVENTS:
        raise DataError(f"{path}: samples {first}..{first + len(times) - 1} hold {int(lengths.sum())} spikes; "
                        f"at most {MAX_EVENTS} per split")
    t = np.concatenate([np.asarray(x, np.float64) for x in times]) if len(times) else np.zeros(0)
    u = np.concatenate([np.asarray(x, np.int64) for x in units]) if len(units) else np.zeros(0, np.int64)
    sample = np.repeat(np.arange(len(times)), lengths)
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: spikes/times of sample {first + int(sample[k])} holds {float(t[k])}; expected finite "
                        "times >= 0 in seconds")
    bad = (u < 0) | (u >= channels)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: spikes/units of sample {first + int(sample[k])} holds {int(u[k])}; expected "
                        f"channels in [0, {channels})")
    step = np.floor(t * 1000.0 / dt_ms)             # as documented: floor(t * 1000 / dt_ms)
    keep = step < steps
    key = (sample[keep] * steps + step[keep].astype(np.int64)) * channels + u[keep]
    distinct = np.unique(key)
    which = distinct // (steps * channels)
    counts = np.bincount(which, minlength=len(times))
    return ((distinct % (steps * channels)).astype(np.int32), counts, len(t), int((~keep).sum()),
            int(keep.sum()) - len(distinct))


def read_spike_file(path: Path, channels: int, dt_ms: float, steps: int, limit: int | None = None) -> SpikeFile:
    """Read and bin one file in the layout above (its first ``limit`` samples)."""
    _require_h5py()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if steps * channels >= 2**31:
        raise DataError(f"{steps} steps x {channels} channels: keys would not fit int32; use fewer steps")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})"[:300]) from None
    with f:
        field = "labels"            # what is being read, for the message if h5py fails on it
        try:
            labels_ds = _int_column(path, f, "labels", None)
            n_all = labels_ds.shape[0]
            n = n_all if limit is None else min(n_all, limit)
            field = "spikes/times"
            times = _ragged(path, f, field, "f", n_all)
            field = "spikes/units"
            units = _ragged(path, f, field, "iu", n_all)
            field = "extra/speaker"
            speaker_ds = _int_column(path, f, field, n_all, optional=True)
            speakers = None if speaker_ds is None else np.asarray(speaker_ds[:n], np.int64)
            field = "extra/keys"
            names = _class_keys(path, f)
            field = "labels"
            labels = np.asarray(labels_ds[:n], np.int64)
            if n and (labels.min() < 0 or labels.max() >= MAX_CLASSES):
                bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
                raise DataError(f"{path}: labels hold {bad}; expected integers in [0, {MAX_CLASSES})")
            parts, counts, kept, seen, dropped, merged = [], [], 0, 0, 0, 0
            for first in range(0, n, CHUNK):
                field = "spikes/times"
                t = times[first:min(first + CHUNK, n)]
                field = "spikes/units"
                u = units[first:min(first + CHUNK, n)]
                keys, c, s, d, m = _bin_chunk(path, first, t, u, steps, channels, dt_ms)
                seen, dropped, merged, kept = seen + s, dropped + d, merged + m, kept + len(keys)
                if kept > MAX_EVENTS:
                    raise DataError(f"{path}: more than {MAX_EVENTS} input events; use data.limit")
                parts.append(keys)
                counts.append(c)
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
            raise DataError(f"{path}: {field} is unreadable ({type(e).__name__}: {e})"[:300]) from None
    offsets = np.zeros(n + 1, np.int64)
    if n:
        np.cumsum(np.concatenate(counts), out=offsets[1:])
    keys = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    return SpikeFile(EventSplit.from_keys(keys, offsets, labels, steps, channels), speakers, names, seen, dropped,
                     merged)


# --------------------------------------------------------------------------- #
# a data set of such files
# --------------------------------------------------------------------------- #
def sample_steps(duration_ms: float, timing: Timing) -> int:
    """Steps per sample: the network's ``steps`` if it sets them, else ``ceil(duration_ms / dt_ms)``."""
    steps = timing.steps if timing.steps is not None else math.ceil(duration_ms / timing.dt_ms - 1e-9)
    if not 1 <= steps <= MAX_STEPS:
        raise ConfigError(f"data.duration_ms = {duration_ms:g} at network.dt_ms = {timing.dt_ms:g}: {steps} steps; "
                          f"expected 1 to {MAX_STEPS}")
    return steps


def spike_dataset(name: str, paths: dict[str, Path], channels: int, timing: Timing, duration_ms: float,
                  val_speakers: tuple[int, ...] | None = None, limit: int | None = None) -> Dataset:
    """The :class:`Dataset` of the files ``paths`` (split -> file: ``train``, ``test``, optionally ``val``)."""
    steps = sample_steps(duration_ms, timing)
    read = {s: read_spike_file(p, channels, timing.dt_ms, steps, None if val_speakers else limit)
            for s, p in paths.items()}
    for s, r in read.items():
        if r.dropped or r.merged:
            log.info("%s %s: %d spikes, %d at or after %g ms dropped, %d merged into a step already holding one "
                     "(%g ms steps)", name, s, r.spikes, r.dropped, steps * timing.dt_ms, r.merged, timing.dt_ms)
    splits = {s: r.split for s, r in read.items()}
    if val_speakers:
        splits["train"], splits["val"] = _hold_out(name, paths["train"], read["train"], val_speakers)
        if limit is not None:
            splits = {s: sp.subset(np.arange(min(limit, len(sp)))) for s, sp in splits.items()}
    names = [r.keys for r in read.values() if r.keys is not None]
    if any(k != names[0] for k in names):
        raise DataError(f"data.name = {name!r}: the files' extra/keys disagree ({names[0]} against "
                        f"{next(k for k in names if k != names[0])})")
    n_classes = max(int(sp.labels.max()) + 1 if len(sp) else 0 for sp in splits.values())
    class_names = names[0] if names else [str(i) for i in range(n_classes)]
    if len(class_names) < n_classes:
        raise DataError(f"data.name = {name!r}: labels reach {n_classes - 1} but extra/keys has {len(class_names)} "
                        "names")
    return Dataset(name, "spikes", channels, steps, class_names, splits["train"], splits["test"], splits.get("val"))


def _hold_out(name: str, path: Path, train: SpikeFile, speakers: tuple[int, ...]):
    if train.speakers is None:
        raise DataError(f"{path}: no extra/speaker; data.val_speakers needs the speaker of each sample")
    known = sorted(set(train.speakers.tolist()))
    unknown = sorted(set(speakers) - set(known))
    if unknown:
        raise ConfigError(f"data.val_speakers = {list(speakers)}: speaker(s) {unknown} are not in {path.name}, "
                          f"whose speakers are {known}")
    held = np.isin(train.speakers, np.asarray(speakers))
    if held.all():
        raise ConfigError(f"data.val_speakers = {list(speakers)}: every training sample of {name} is theirs; "
                          "expected some speakers left to train on")
    return train.split.subset(np.flatnonzero(~held)), train.split.subset(np.flatnonzero(held))


def _files(spec: SpikeSet, root: Path) -> dict[str, Path]:
    paths = {s: root / f for s, f in spec.files().items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(f"data.root = {str(root)!r}: no {', '.join(missing)}. The {spec.title} cannot be downloaded "
                        f"from here: get the .h5.gz (or .h5.zip) files from {URL} (files at "
                        f"https://zenkelab.org/datasets/), decompress them and set data.root to their directory")
    return paths


@register("shd", SHDConfig)
@register("ssc", SHDConfig)
def load(cfg: SHDConfig, timing: Timing, progress: bool = True) -> Dataset:
    spec = SETS[cfg.name]
    if cfg.root is None:
        raise ConfigError(f"data.root = null: data.name={cfg.name} needs the directory of "
                          f"{', '.join(spec.files().values())} ({spec.title}, from {URL})")
    _require_h5py()
    root = Path(cfg.root).expanduser()
    return spike_dataset(cfg.name, _files(spec, root), CHANNELS, timing, cfg.duration_ms, cfg.val_speakers, cfg.limit)


def write_spike_file(path, times, units, labels, speakers=None, keys=None, time_dtype=np.float32,
                     unit_dtype=np.uint16) -> None:
    """Write one file in the layout above: ``times[i]`` (seconds) and ``units[i]`` the spikes of sample i."""
    _require_h5py()
    n = len(labels)
    if len(times) != n or len(units) != n:
        raise DataError(f"{len(times)} spike-time and {len(units)} unit arrays for {n} labels; expected one each")
    with h5py.File(path, "w") as f:
        t = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.dtype(time_dtype)))
        u = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.dtype(unit_dtype)))
        for i in range(n):
            t[i] = np.asarray(times[i], time_dtype)
            u[i] = np.asarray(units[i], unit_dtype)
        f.create_dataset("labels", data=np.asarray(labels, np.uint16))
        if speakers is not None:
            f.create_dataset("extra/speaker", data=np.asarray(speakers))
        if keys is not None:
            f.create_dataset("extra/keys", data=np.asarray([k.encode() for k in keys]))
