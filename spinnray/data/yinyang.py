"""The Yin-Yang data set: generator, loader of the published arrays, spike encoders.

The data set is Kriener, Göltz & Petrovici, "The Yin-Yang dataset" (NICE 2022,
arXiv 2102.08211; repository lkriener/yin_yang_data_set, MIT).  :func:`yin_yang`
is an independent reimplementation of their generator that reproduces the
published ``publication_data/`` arrays bit for bit for the canonical splits in
:data:`CANONICAL`.

Sample layout: ``(x, y, 1 - x, 1 - y)`` as float64; labels are int64 in
``{0, 1, 2}`` (see :func:`yin_yang` for which region has which label).

Encoders turn samples into one spike per input (time-to-first-spike code):

* ``"wunderlich"`` (Wunderlich & Pehle 2021): ``t = x * t_max_ms``, late means large;
* ``"bena"`` (Béna et al., snnTorch ``spikegen.latency(linear=True, normalize=True)``):
  large means early, within steps ``[t_min_step, steps - 1]``.

Both add a bias input (spike at step 0) as the last column when ``bias=True``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinnray.checks import check_int, check_real
from spinnray.config import opt
from spinnray.data.base import Dataset, RasterSplit, Timing, register
from spinnray.errors import ConfigError, DataError

__all__ = [
    "CANONICAL",
    "N_CLASSES",
    "N_FEATURES",
    "SCHEMES",
    "yin_yang",
    "load_yin_yang_arrays",
    "spike_steps_yin_yang",
    "encode_yin_yang",
]

#: Canonical splits of the published data: split name -> (size, seed).
CANONICAL: dict[str, tuple[int, int]] = {
    "train": (5000, 42),
    "validation": (1000, 41),
    "test": (1000, 40),
}

#: Number of classes (labels 0, 1, 2) and of columns of a sample.
N_CLASSES = 3
N_FEATURES = 4

#: Spike-time encodings known to :func:`encode_yin_yang`.
SCHEMES = ("wunderlich", "bena")

_SEED_LIMIT = 2**32  # numpy.random.RandomState accepts integer seeds in [0, 2**32)


# --------------------------------------------------------------------------- #
# argument checks
# --------------------------------------------------------------------------- #
# --------------------------------------------------------------------------- #
# generator
# --------------------------------------------------------------------------- #
def _which_class(x: float, y: float, r_small: float, r_big: float) -> int:
    """Label of the point (x, y) of the Yin-Yang figure centred at (r_big, r_big).

    2 inside either dot (radius ``r_small`` around (0.5 r_big, r_big) and
    (1.5 r_big, r_big)); otherwise 1 on the "yin" side (the ring around the left
    dot up to 0.5 r_big, or the upper half outside the right half-disc);
    otherwise 0.  Distances are ``sqrt(dx*dx + dy*dy)``, compared exactly as the
    reference does, so that boundary cases agree with the published arrays.
    """
    dy = y - r_big
    dx_right = x - 1.5 * r_big
    dx_left = x - 0.5 * r_big
    d_right = math.sqrt(dx_right * dx_right + dy * dy)
    d_left = math.sqrt(dx_left * dx_left + dy * dy)
    if d_right < r_small or d_left < r_small:
        return 2
    is_yin = (
        d_right <= r_small
        or (r_small < d_left <= 0.5 * r_big)
        or (y > r_big and d_right > 0.5 * r_big)
    )
    return 1 if is_yin else 0


def yin_yang(
    size: int, seed: int, r_small: float = 0.1, r_big: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``size`` class-balanced Yin-Yang samples from ``seed``.

    Contract (identical stream of random draws to Kriener et al.'s generator,
    hence bit-identical output; the canonical (size, seed) pairs in
    :data:`CANONICAL` reproduce the published ``publication_data/`` arrays):

    1. ``rng = numpy.random.RandomState(seed)``.
    2. For each sample, in order:

       a. ``goal = rng.randint(3)`` (one draw of the goal class);
       b. repeat: ``x, y = rng.rand(2) * 2.0 * r_big`` (x is the first of the
          two doubles); reject and redraw if
          ``sqrt((x - r_big)**2 + (y - r_big)**2) > r_big`` (outside the big
          circle), or if the class of (x, y) differs from ``goal``;
       c. emit ``(x, y, 1.0 - x, 1.0 - y)`` with label ``goal``.

    Class rule, with ``d_r``/``d_l`` the distances to the right/left dot
    centres ``(1.5 r_big, r_big)``/``(0.5 r_big, r_big)``:
    label 2 if ``d_r < r_small or d_l < r_small``; else label 1 if
    ``d_r <= r_small or r_small < d_l <= 0.5 r_big or (y > r_big and
    d_r > 0.5 r_big)``; else label 0.  (The reference code names its classes
    ['yin', 'yang', 'dot'] but returns ``int(is_yin)``; only the numbers matter.)

    Args:
        size: number of samples, an integer >= 0.
        seed: seed of ``numpy.random.RandomState``, an integer in [0, 2**32).
        r_small: radius of the two dots, 0 < r_small < 0.5 * r_big (otherwise
            the label-1 region is empty and rejection sampling never ends).
        r_big: radius of the whole figure, > 0.  Coordinates lie in
            [0, 2 r_big); with the default 0.5 all four columns lie in [0, 1].

    Returns:
        ``(samples, labels)``: float64 array of shape (size, 4) and int64 array
        of shape (size,).

    Raises:
        ConfigError: an argument has the wrong type or is out of range.
    """
    size = check_int("size", size, minimum=0)
    seed = check_int("seed", seed, minimum=0, maximum=_SEED_LIMIT - 1)
    r_big = check_real("r_big", r_big, 0.0, strict=True)
    r_small = check_real("r_small", r_small, 0.0, strict=True)
    if not r_small < 0.5 * r_big:
        raise ConfigError(
            f"r_small = {r_small!r}: expected r_small < 0.5 * r_big = {0.5 * r_big!r} "
            f"(r_big = {r_big!r}); otherwise class 1 has no area and sampling cannot finish"
        )

    rng = np.random.RandomState(seed)
    samples = np.empty((size, N_FEATURES), dtype=np.float64)
    labels = np.empty(size, dtype=np.int64)
    for i in range(size):
        goal = int(rng.randint(N_CLASSES))
        while True:
            x, y = (float(v) for v in rng.rand(2) * 2.0 * r_big)
            dx = x - r_big
            dy = y - r_big
            if math.sqrt(dx * dx + dy * dy) > r_big:
                continue
            if _which_class(x, y, r_small, r_big) == goal:
                break
        samples[i] = (x, y, 1.0 - x, 1.0 - y)
        labels[i] = goal
    return samples, labels


# --------------------------------------------------------------------------- #
# loader of the published arrays
# --------------------------------------------------------------------------- #
def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"Yin-Yang file {path} is missing (expected a .npy array file)")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"Yin-Yang file {path} is not a readable .npy array: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise DataError(f"Yin-Yang file {path} holds {type(array).__name__}, expected one .npy array")
    return array


def load_yin_yang_arrays(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one split stored in the published layout (``publication_data/``).

    The directory must hold ``<split>_samples.npy``, a floating array of shape
    (n, 4), and ``<split>_labels.npy``, an integer array of shape (n,) with
    values in {0, 1, 2}.  Sizes are not fixed to the canonical ones.

    Args:
        directory: the directory holding the .npy files.
        split: one of ``"train"``, ``"validation"``, ``"test"``.

    Returns:
        ``(samples, labels)`` as float64 (n, 4) and int64 (n,) arrays.

    Raises:
        ConfigError: ``split`` is not a known split name.
        DataError: the directory or a file is missing, unreadable, or an array
            has the wrong shape, dtype or values.  The message names the path
            and what was expected.
    """
    if not isinstance(split, str) or split not in CANONICAL:
        raise ConfigError(f"split = {split!r}: expected one of {sorted(CANONICAL)}")
    root = Path(directory)
    expected = f"{split}_samples.npy and {split}_labels.npy"
    if not root.exists():
        raise DataError(f"Yin-Yang data directory {root} does not exist (expected a directory holding {expected})")
    if not root.is_dir():
        raise DataError(f"Yin-Yang data directory {root} is not a directory (expected a directory holding {expected})")

    samples_path = root / f"{split}_samples.npy"
    labels_path = root / f"{split}_labels.npy"
    samples = _load_npy(samples_path)
    labels = _load_npy(labels_path)

    if samples.ndim != 2 or samples.shape[1] != N_FEATURES:
        raise DataError(f"{samples_path}: shape {samples.shape}, expected (n, {N_FEATURES})")
    if samples.dtype.kind != "f":
        raise DataError(f"{samples_path}: dtype {samples.dtype}, expected a floating dtype (float64)")
    if not np.all(np.isfinite(samples)):
        raise DataError(f"{samples_path}: holds NaN or infinite values, expected finite coordinates")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: shape {labels.shape}, expected (n,)")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{labels_path}: dtype {labels.dtype}, expected an integer dtype (int64)")
    if labels.shape[0] != samples.shape[0]:
        raise DataError(
            f"{labels_path}: {labels.shape[0]} labels, expected one per sample of "
            f"{samples_path} ({samples.shape[0]})"
        )
    bad = (labels < 0) | (labels >= N_CLASSES)
    if np.any(bad):
        index = int(np.flatnonzero(bad)[0])
        raise DataError(f"{labels_path}: label {int(labels[index])} at index {index}, expected 0, 1 or 2")
    return samples.astype(np.float64), labels.astype(np.int64)


# --------------------------------------------------------------------------- #
# spike-time encoders
# --------------------------------------------------------------------------- #
def _check_samples(samples) -> np.ndarray:
    """Return ``samples`` as a float64 (n, 4) array with values in [0, 1]."""
    try:
        array = np.asarray(samples)
    except (TypeError, ValueError) as exc:
        raise DataError(f"samples: cannot be read as an array ({exc}); expected a (n, 4) float array") from exc
    if array.dtype.kind not in "fiu":
        raise DataError(f"samples: dtype {array.dtype}, expected a real (float) array of shape (n, 4)")
    if array.ndim != 2 or array.shape[1] != N_FEATURES:
        raise DataError(f"samples: shape {array.shape}, expected (n, {N_FEATURES})")
    array = array.astype(np.float64)
    bad = ~((array >= 0.0) & (array <= 1.0))  # NaN counts as bad
    if np.any(bad):
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(
            f"samples[{row}, {col}]={float(array[row, col])!r}: expected every value in [0, 1]"
        )
    return array


def spike_steps_yin_yang(
    samples,
    *,
    scheme: str,
    steps: int,
    dt_ms: float = 1.0,
    t_max_ms: float = 30.0,
    t_min_step: int = 2,
    bias: bool = True,
) -> np.ndarray:
    """Step index of the single spike of every input of every sample.

    Formulas (x is one value in [0, 1]; ``rint`` rounds half to even, like
    Python's ``round``, ``numpy.rint`` and ``torch.round``):

    * ``scheme="wunderlich"``: ``t = x * t_max_ms`` (ms), step
      ``rint(t / dt_ms)``; larger x spikes later.  Uses ``dt_ms`` and
      ``t_max_ms``; ConfigError if a spike lands at or beyond ``steps`` (every
      sample fits when ``steps >= rint(t_max_ms / dt_ms) + 1``, 31 by default).
    * ``scheme="bena"``: with ``span = steps - 1 - t_min_step``, step
      ``rint(t_min_step + span * (1 - x))``; x = 1 -> ``t_min_step``,
      x = 0 -> ``steps - 1``, larger x spikes earlier.  This is snnTorch's
      ``spikegen.latency(x, num_steps=steps, first_spike_time=t_min_step,
      linear=True, normalize=True)`` in float64, except that snnTorch clamps
      values below its ``threshold=0.01`` to 0.01, which can change the rounded
      step only when ``span > 50``.  Uses ``t_min_step`` (needs
      ``steps >= t_min_step + 2``).

    With ``bias=True`` a fifth input, always spiking at step 0, is appended as
    the last column (both schemes).

    Args:
        samples: array of shape (n, 4) with values in [0, 1].
        scheme: ``"wunderlich"`` or ``"bena"``.
        steps: number of time steps of the simulation window, an integer >= 1.
        dt_ms: step length in ms (> 0).
        t_max_ms: spike time of x = 1 in ms for ``"wunderlich"`` (> 0).
        t_min_step: earliest data spike step for ``"bena"`` (integer >= 0).
        bias: append the bias input.

    Returns:
        int64 array of shape (n, 4 + bias), every value in [0, steps).

    Raises:
        DataError: ``samples`` is not a (n, 4) real array with values in [0, 1].
        ConfigError: an argument is invalid, or a spike falls outside the window.
    """
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ConfigError(f"scheme = {scheme!r}: expected one of {list(SCHEMES)}")
    steps = check_int("steps", steps, minimum=1)
    dt_ms = check_real("dt_ms", dt_ms, 0.0, strict=True)
    t_max_ms = check_real("t_max_ms", t_max_ms, 0.0, strict=True)
    t_min_step = check_int("t_min_step", t_min_step, minimum=0)
    if not isinstance(bias, (bool, np.bool_)):
        raise ConfigError(f"bias = {bias!r}: expected True or False")
    x = _check_samples(samples)

    if scheme == "wunderlich":
        step = np.rint((x * t_max_ms) / dt_ms)
        if step.size and step.max() >= steps:
            row, col = (int(v) for v in np.unravel_index(int(np.argmax(step)), step.shape))
            last = int(step[row, col])
            raise ConfigError(
                f"steps = {steps}: too few for scheme 'wunderlich'; samples[{row}, {col}]={float(x[row, col])!r} "
                f"spikes at step {last} (t_max_ms = {t_max_ms!r}, dt_ms = {dt_ms!r}); need steps >= {last + 1}"
            )
    else:  # "bena"
        if steps < t_min_step + 2:
            raise ConfigError(
                f"steps = {steps}: expected steps >= t_min_step + 2 = {t_min_step + 2} for scheme 'bena' "
                f"(t_min_step = {t_min_step})"
            )
        span = steps - 1 - t_min_step
        step = np.rint(t_min_step + span * (1.0 - x))

    out = step.astype(np.int64)
    if bias:
        out = np.concatenate([out, np.zeros((out.shape[0], 1), dtype=np.int64)], axis=1)
    return out


def encode_yin_yang(
    samples,
    *,
    scheme: str,
    steps: int,
    dt_ms: float = 1.0,
    t_max_ms: float = 30.0,
    t_min_step: int = 2,
    bias: bool = True,
) -> np.ndarray:
    """Boolean spike raster of shape (steps, n_samples, 4 + bias), one spike per input.

    ``raster[t, i, j]`` is True exactly when
    ``spike_steps_yin_yang(samples, ...)[i, j] == t``; see
    :func:`spike_steps_yin_yang` for the formulas, arguments and errors.
    """
    spike_steps = spike_steps_yin_yang(
        samples,
        scheme=scheme,
        steps=steps,
        dt_ms=dt_ms,
        t_max_ms=t_max_ms,
        t_min_step=t_min_step,
        bias=bias,
    )
    n_samples, n_inputs = spike_steps.shape
    raster = np.zeros((steps, n_samples, n_inputs), dtype=bool)
    raster[spike_steps, np.arange(n_samples)[:, None], np.arange(n_inputs)[None, :]] = True
    return raster


# --------------------------------------------------------------------------- #
# the data set of a run (data.name = yinyang)
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class YinYangConfig:
    """Yin-Yang samples (canonical split: train 5000 seed 42, test 1000 seed 40, validation 1000
    seed 41), encoded as one spike per input plus a bias spike."""

    name: str = opt("yinyang", "data set", choices=("yinyang",))
    root: str | None = opt(None, "directory with the published .npy arrays; null = generate them", path=True)
    train_size: int = opt(5000, "training samples (generated)", min=1, max=10_000_000)
    train_seed: int = opt(42, "generator seed of the training set (canonical 42)", min=0, max=2**32 - 1)
    test_size: int = opt(1000, "test samples (generated)", min=1, max=10_000_000)
    test_seed: int = opt(40, "generator seed of the test set (canonical 40)", min=0, max=2**32 - 1)
    val_size: int = opt(1000, "validation samples tested after every epoch (model selection only; never "
                              "trained on); 0 = none", min=0, max=10_000_000)
    val_seed: int = opt(41, "generator seed of the validation set (canonical 41)", min=0, max=2**32 - 1)
    limit: int | None = opt(None, "use only the first N training, test and validation samples", min=1, max=10_000_000)
    encoding: str = opt("wunderlich", "spike-time encoding: wunderlich (t = x * t_max) or bena (latency)",
                        choices=("wunderlich", "bena"))
    t_max_ms: float = opt(30.0, "latest input spike time (wunderlich encoding)", min=1e-6)
    stagger: float = opt(0.0, "wunderlich encoding: the mirrored inputs (1-x, 1-y) spike this fraction of a step "
                              "later before rounding, so their rounding grid falls between that of x and y "
                              "(0.5 doubles the input resolution at finite dt); 0 = plain", min=0.0, max=1.0)


def load_yinyang(cfg: YinYangConfig):
    """(train x, train y, test x, test y), canonical or from ``cfg.root``."""
    if cfg.root is not None:
        xtr, ytr = load_yin_yang_arrays(cfg.root, "train")
        xte, yte = load_yin_yang_arrays(cfg.root, "test")
    else:
        xtr, ytr = yin_yang(cfg.train_size, cfg.train_seed)
        xte, yte = yin_yang(cfg.test_size, cfg.test_seed)
    if cfg.limit is not None:
        xtr, ytr, xte, yte = xtr[:cfg.limit], ytr[:cfg.limit], xte[:cfg.limit], yte[:cfg.limit]
    return xtr, ytr, xte, yte


def load_yinyang_validation(cfg: YinYangConfig):
    """(x, y) of the validation split (``val_size`` samples of seed ``val_seed``, or the
    published ``validation`` arrays under ``cfg.root``, their first ``val_size``), or None."""
    if cfg.val_size == 0:
        return None
    if cfg.root is not None:
        x, y = load_yin_yang_arrays(cfg.root, "validation")
        x, y = x[:cfg.val_size], y[:cfg.val_size]
    else:
        x, y = yin_yang(cfg.val_size, cfg.val_seed)
    if cfg.limit is not None:
        x, y = x[:cfg.limit], y[:cfg.limit]
    return x, y


def encode_inputs(samples: np.ndarray, data: YinYangConfig, steps: int, dt_ms: float) -> np.ndarray:
    """Spike raster ``(steps, n, 5)`` of Yin-Yang samples ``(n, 4)`` (x, y, 1-x, 1-y).

    ``data.stagger = 0``: :func:`spinnray.data.yinyang.encode_yin_yang`.  Else
    (wunderlich encoding only) the same with the mirrored columns moved
    ``stagger`` of a step later before rounding::

        step = rint(x * t_max / dt)               for x and y
        step = rint(x * t_max / dt + stagger)     for 1 - x and 1 - y
        bias at step 0

    Rounding loses up to half a step of each input time; since 1 - x carries
    the same value as x, plain rounding puts both on the same grid and the
    input resolves x only to ``dt / t_max`` (1/60 at 0.5 ms and 30 ms, which
    caps the canonical Yin-Yang test set near 96.7 % for any classifier).
    With ``stagger = 0.5`` the two grids interleave and resolve ``dt / (2 t_max)``.
    Raises ConfigError for stagger with another encoding or a spike at or
    beyond ``steps``; DataError from the encoder for bad samples.
    """
    if data.stagger == 0:
        return encode_yin_yang(samples, scheme=data.encoding, steps=steps, dt_ms=dt_ms, t_max_ms=data.t_max_ms)
    if data.encoding != "wunderlich":
        raise ConfigError(f"data.stagger = {data.stagger!r} with data.encoding = {data.encoding!r}: "
                          "stagger applies to the wunderlich encoding only")
    plain = spike_steps_yin_yang(samples, scheme="wunderlich", steps=steps, dt_ms=dt_ms, t_max_ms=data.t_max_ms)
    x = np.asarray(samples, np.float64)
    spike = plain.copy()
    spike[:, 2:4] = np.rint((x[:, 2:4] * data.t_max_ms) / dt_ms + data.stagger).astype(np.int64)
    if spike.size and spike.max() >= steps:
        raise ConfigError(f"data.stagger = {data.stagger!r}: an input spikes at step {int(spike.max())}, beyond "
                          f"network.steps = {steps}; raise network.steps")
    raster = np.zeros((steps, len(spike), spike.shape[1]), bool)
    raster[spike, np.arange(len(spike))[:, None], np.arange(spike.shape[1])[None, :]] = True
    return raster



@register("yinyang", YinYangConfig)
def load(cfg: YinYangConfig, timing: Timing, progress: bool = True) -> Dataset:
    """The encoded Yin-Yang splits: spike rasters of ``timing.steps`` steps (the network's
    ``network.steps``: the encoding needs the run's length)."""
    if timing.steps is None:
        raise ConfigError("data.name = yinyang encodes samples as spike times within network.steps steps; "
                          "this network sets no network.steps")
    xtr, ytr, xte, yte = load_yinyang(cfg)
    val = load_yinyang_validation(cfg)

    def split(x, y):
        return RasterSplit(encode_inputs(x, cfg, timing.steps, timing.dt_ms), y)

    return Dataset("yinyang", "spikes", 5, timing.steps, ["yin", "yang", "dot"], split(xtr, ytr), split(xte, yte),
                   split(*val) if val is not None else None)
