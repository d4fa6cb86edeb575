"""Speech Commands v1 (Warden 2018, ``speech_commands_v0.01``): loader and log-mel features.

Features (numpy only; WAVs read with the standard library ``wave``), the
input of the e-prop keyword-spotting network of Rostami et al. 2022 (80
channels, 100 steps):

1. **Clip.** 16 kHz mono int16 samples, divided by 32768, zero-padded at the
   end or cropped to ``clip_samples`` = 16000 (1 s).
2. **Frames.** ``steps`` = 100 frames of ``win_length`` = 480 samples (30 ms);
   frame ``t`` is *centred* on sample ``t * hop_length`` (hop 160 = 10 ms), so
   it covers samples ``[160 t - 240, 160 t + 240)``; samples outside the clip
   are zeros.  Centred framing gives 101 frames for 1 s; the last one (centred
   on sample 16000, past the end) is dropped, so exactly 100 steps remain.
3. **Power spectrum.** Each frame times a periodic Hann window
   ``w[n] = 0.5 - 0.5 cos(2 pi n / 480)``, zero-padded at the end to
   ``n_fft`` = 512, ``P[t, k] = |sum_n w[n] x_t[n] exp(-2 pi i k n / 512)|**2``
   for ``k = 0..256`` (no 1/N scaling).
4. **Mel filterbank.** 40 triangular filters, HTK mel scale
   ``mel(f) = 2595 log10(1 + f / 700)``, ``n_mels + 2`` edges equally spaced in
   mel from ``fmin_hz`` = 20 Hz to ``fmax_hz`` = 4000 Hz; filter ``j`` rises
   linearly in Hz from edge ``j`` to 1 at edge ``j+1`` and falls to 0 at edge
   ``j+2`` (peak 1, no area normalisation, so between the first and last centre
   the filters sum to 1).  ``M = P @ F.T``.
5. **Log.** ``L = log(M + log_eps)``, natural log, ``log_eps`` = 1e-6.
6. **Deltas** (HTK regression formula, ``N = delta_width`` = 2):
   ``D[t] = sum_{n=1..N} n (L[t+n] - L[t-n]) / (2 sum_{n=1..N} n**2)``, with
   frame indices clamped to ``[0, steps - 1]`` (edges repeated).
7. **Output** ``[L, D]``: float32 (100, 80), log-mel channels 0..39, deltas
   40..79.

Rescaling (Rostami et al. divide the features by their largest magnitude):
with ``rescale="train"`` (the default of :func:`load_speech_commands`) every
split is divided by the largest ``|value|`` over the *training* split, taken
separately for the 40 log-mel channels and for the 40 delta channels (one
scalar for both groups would shrink the deltas, whose largest magnitude was
2.7 times smaller on the espeak-ng keyword set; see :func:`feature_scale`), so
training features lie in [-1, 1] and validation/test features use the same
scale.  The log-mel maximum is usually the floor ``-log(log_eps)`` = 13.8 of
silent or very quiet bands (so the log-mel channels end in about [-1, 0.55]).  ``rescale="clip"`` divides each
clip by its own maxima (per group), ``None`` leaves the raw values.

Data set layout (as downloaded; ``root`` holds):

* one folder per word of 16 kHz mono 16-bit WAVs, ``WORD/SPEAKER_nohash_K.wav``;
* ``_background_noise_/``: long WAVs of noise, same format;
* ``validation_list.txt`` and ``testing_list.txt``: paths ``WORD/FILE.wav``
  relative to ``root``, one per line; *training* is every other word clip.

The 12 classes (:data:`CLASS_NAMES`, in label order): ``yes no up down left
right on off stop go`` (labels 0-9), ``_silence_`` (10), ``_unknown_`` (11).
Following the TensorFlow ``speech_commands`` example (``silence_percentage`` =
``unknown_percentage`` = 10), each split holds all its keyword clips (K of
them), plus ``ceil(0.1 K)`` unknown clips drawn without replacement from the
split's other words, plus ``ceil(0.1 K)`` silence clips, each a 1 s crop of
one background-noise file (file uniform, start sample uniform over the file).
The draws use ``numpy.random.default_rng([seed, split_index])`` with split
index 0 training, 1 validation, 2 testing; noise files are shared by all
splits (as in TensorFlow).  The unknown clips are taken from the first
``ceil(0.1 K)`` of a random permutation of the split's non-keyword clips.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import wave
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spinnray.checks import check_int, check_real
from spinnray.config import opt
from spinnray.data.base import ArraySplit, Dataset, NpzRows, Timing, register
from spinnray.errors import ConfigError, DataError

__all__ = [
    "SAMPLE_RATE",
    "KEYWORDS",
    "SILENCE",
    "UNKNOWN",
    "CLASS_NAMES",
    "BACKGROUND_DIR",
    "SPLITS",
    "FeatureParams",
    "Clip",
    "SpeechData",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "hann_window",
    "frame_signal",
    "power_spectrum",
    "deltas",
    "log_mel",
    "speech_features",
    "read_wav",
    "write_wav",
    "speech_commands_index",
    "clip_batches",
    "feature_scale",
    "load_speech_commands",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: The ten keywords of the 12-class task (labels 0..9 in this order).
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
#: Class names in label order.
CLASS_NAMES = KEYWORDS + (SILENCE, UNKNOWN)
BACKGROUND_DIR = "_background_noise_"
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
#: Split names as in the TensorFlow example; the index seeds the split's draws.
SPLITS = ("training", "validation", "testing")

_CACHE_VERSION = 1  # bump when the meaning of cached arrays changes


# --------------------------------------------------------------------------- #
# argument checks
# --------------------------------------------------------------------------- #
# --------------------------------------------------------------------------- #
# features
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class FeatureParams:
    """Parameters of :func:`speech_features` (see the module docstring).

    Raises ConfigError on construction if a value is out of range.
    """

    sample_rate: int = SAMPLE_RATE
    clip_samples: int = SAMPLE_RATE
    win_length: int = 480
    hop_length: int = 160
    n_fft: int = 512
    n_mels: int = 40
    fmin_hz: float = 20.0
    fmax_hz: float = 4000.0
    log_eps: float = 1e-6
    delta_width: int = 2
    steps: int = 100

    def __post_init__(self):
        for name in ("sample_rate", "clip_samples", "win_length", "hop_length", "n_fft", "n_mels", "delta_width",
                     "steps"):
            check_int(name, getattr(self, name), minimum=1)
        if self.n_fft < self.win_length:
            raise ConfigError(f"n_fft = {self.n_fft}: expected >= win_length = {self.win_length}")
        check_real("fmin_hz", self.fmin_hz, 0.0)
        check_real("log_eps", self.log_eps, 0.0, strict=True)
        fmax = check_real("fmax_hz", self.fmax_hz, self.fmin_hz, strict=True)
        if fmax > self.sample_rate / 2:
            raise ConfigError(f"fmax_hz = {fmax!r}: expected <= sample_rate / 2 = {self.sample_rate / 2:g}")

    @property
    def n_features(self) -> int:
        """Channels per step: ``2 * n_mels`` (log-mel, then deltas)."""
        return 2 * self.n_mels

    @property
    def n_bins(self) -> int:
        """Frequency bins of the one-sided spectrum, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1


def hz_to_mel(f_hz):
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(f_hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    """Inverse of :func:`hz_to_mel`: ``700 (10**(mel / 2595) - 1)``."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(params: FeatureParams | None = None) -> np.ndarray:
    """Triangular mel filters, float64 (n_mels, n_fft // 2 + 1).

    Bin ``k`` is at ``k * sample_rate / n_fft`` Hz.  Edges ``e_0 .. e_{n+1}`` in
    Hz are equally spaced in HTK mel between ``fmin_hz`` and ``fmax_hz``; row
    ``j`` is ``max(0, min((f - e_j) / (e_{j+1} - e_j), (e_{j+2} - f) / (e_{j+2} - e_{j+1})))``.

    Raises:
        ConfigError: a filter covers no FFT bin (too many mels for ``n_fft``).
    """
    p = params or FeatureParams()
    edges = mel_to_hz(np.linspace(hz_to_mel(p.fmin_hz), hz_to_mel(p.fmax_hz), p.n_mels + 2))
    freqs = np.arange(p.n_bins) * (p.sample_rate / p.n_fft)
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lo) / (centre - lo)
    falling = (hi - freqs[None, :]) / (hi - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    empty = np.flatnonzero(bank.max(axis=1) == 0.0)
    if empty.size:
        raise ConfigError(
            f"n_mels = {p.n_mels}, n_fft = {p.n_fft}: mel filter(s) {empty.tolist()} cover no FFT bin; "
            f"expected fewer mels or a larger n_fft"
        )
    return bank


def hann_window(length: int) -> np.ndarray:
    """Periodic Hann window, ``0.5 - 0.5 cos(2 pi n / length)`` for ``n = 0..length-1``."""
    n = np.arange(length)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def _fit_clip(samples: np.ndarray, length: int) -> np.ndarray:
    """float64 (..., length): int16 scaled by 1/32768, zero-padded at the end or cropped."""
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        x = samples.astype(np.float64) / 32768.0
    elif np.issubdtype(samples.dtype, np.floating):
        x = samples.astype(np.float64)
    else:
        raise DataError(f"audio samples of dtype {samples.dtype}: expected int16 or a float array in [-1, 1]")
    if x.ndim < 1:
        raise DataError(f"audio samples of shape {x.shape}: expected (..., n_samples)")
    n = x.shape[-1]
    if n >= length:
        return x[..., :length]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, length - n)]
    return np.pad(x, pad)


def frame_signal(samples: np.ndarray, params: FeatureParams | None = None) -> np.ndarray:
    """Centred frames, float64 (..., steps, win_length), not yet windowed.

    Frame ``t`` holds clip samples ``[t hop - win // 2, t hop - win // 2 + win)``,
    zeros outside ``[0, clip_samples)``.  ``samples``: int16 or float (..., n).
    """
    p = params or FeatureParams()
    x = _fit_clip(samples, p.clip_samples)
    left = p.win_length // 2
    right = max(0, (p.steps - 1) * p.hop_length + p.win_length - left - p.clip_samples)
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(left, right)])
    index = np.arange(p.steps)[:, None] * p.hop_length + np.arange(p.win_length)[None, :]
    return padded[..., index]


def power_spectrum(samples: np.ndarray, params: FeatureParams | None = None) -> np.ndarray:
    """``|rfft(hann * frame, n_fft)|**2``, float64 (..., steps, n_fft // 2 + 1)."""
    p = params or FeatureParams()
    frames = frame_signal(samples, p) * hann_window(p.win_length)
    spectrum = np.fft.rfft(frames, n=p.n_fft, axis=-1)
    return spectrum.real**2 + spectrum.imag**2


def deltas(features: np.ndarray, width: int = 2) -> np.ndarray:
    """HTK regression deltas along axis -2 (time), edges repeated; same shape.

    ``D[t] = sum_{n=1..width} n (c[min(t+n, T-1)] - c[max(t-n, 0)]) / (2 sum n**2)``.
    """
    width = check_int("width", width, minimum=1)
    c = np.asarray(features, dtype=np.float64)
    steps = c.shape[-2]
    t = np.arange(steps)
    out = np.zeros_like(c)
    for n in range(1, width + 1):
        out += n * (c[..., np.minimum(t + n, steps - 1), :] - c[..., np.maximum(t - n, 0), :])
    return out / (2.0 * sum(n * n for n in range(1, width + 1)))


def log_mel(samples: np.ndarray, params: FeatureParams | None = None, bank: np.ndarray | None = None) -> np.ndarray:
    """``log(P @ F.T + log_eps)``, float64 (..., steps, n_mels)."""
    p = params or FeatureParams()
    bank = mel_filterbank(p) if bank is None else bank
    return np.log(power_spectrum(samples, p) @ bank.T + p.log_eps)


def speech_features(samples: np.ndarray, params: FeatureParams | None = None) -> np.ndarray:
    """Unscaled features ``[log-mel, deltas]``, float32 (..., steps, 2 n_mels).

    ``samples``: int16 (scaled by 1/32768) or float in [-1, 1], shape (..., n);
    padded/cropped to ``clip_samples``.  See the module docstring for every step.
    """
    p = params or FeatureParams()
    mel = log_mel(samples, p)
    return np.concatenate([mel, deltas(mel, p.delta_width)], axis=-1).astype(np.float32)


# --------------------------------------------------------------------------- #
# WAV files
# --------------------------------------------------------------------------- #
def _wav_header(path: Path) -> tuple[wave.Wave_read, int]:
    try:
        handle = wave.open(str(path), "rb")
    except FileNotFoundError:
        raise DataError(f"WAV file {path} is missing") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable PCM WAV file ({exc}); expected 16-bit mono {SAMPLE_RATE} Hz") from exc
    channels, width, rate = handle.getnchannels(), handle.getsampwidth(), handle.getframerate()
    if (channels, width, rate) != (1, 2, SAMPLE_RATE):
        handle.close()
        raise DataError(
            f"{path}: {channels} channel(s), {8 * width}-bit, {rate} Hz; expected 1 channel, 16-bit, {SAMPLE_RATE} Hz"
        )
    return handle, handle.getnframes()


def read_wav(path: str | os.PathLike) -> np.ndarray:
    """Samples of a 16-bit mono 16 kHz PCM WAV file, int16 (n,).

    Raises:
        DataError: the file is missing, unreadable, or of another format
            (the message names the path, what it holds and what is expected).
    """
    path = Path(path)
    handle, n = _wav_header(path)
    with handle:
        raw = handle.readframes(n)
    if len(raw) != 2 * n:
        raise DataError(f"{path}: truncated, header says {n} samples but {len(raw) // 2} are present")
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


def _wav_length(path: Path) -> int:
    handle, n = _wav_header(path)
    handle.close()
    return n


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write int16 (n,) samples as a 16-bit mono PCM WAV file (the Speech Commands format)."""
    samples = np.asarray(samples)
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise DataError(f"samples of dtype {samples.dtype} and shape {samples.shape}: expected int16 (n,)")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(int(sample_rate))
        handle.writeframes(samples.astype("<i2").tobytes())


# --------------------------------------------------------------------------- #
# index of a split
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, order=True)
class Clip:
    """One sample: a WAV path relative to the root, its label, and for silence the start sample of the crop."""

    relpath: str
    label: int
    offset: int = 0


def _check_root(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"Speech Commands root {root} is missing or not a directory; expected the extracted "
            f"speech_commands_v0.01 (one folder per word, {BACKGROUND_DIR}/, {VALIDATION_LIST}, {TESTING_LIST})"
        )
    return root


def _read_list(root: Path, name: str) -> list[str]:
    path = root / name
    if not path.is_file():
        raise DataError(f"split list {path} is missing; expected a text file of WORD/FILE.wav paths relative to {root}")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip().replace("\\", "/") for line in lines if line.strip()]


def _scan_words(root: Path) -> dict[str, list[str]]:
    """word -> sorted relative paths of its WAVs (word folders: every non-hidden folder but the noise one)."""
    words = {}
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith(".") or entry.name == BACKGROUND_DIR:
            continue
        files = sorted(f.name for f in entry.iterdir() if f.suffix.lower() == ".wav" and f.is_file())
        if files:
            words[entry.name] = [f"{entry.name}/{f}" for f in files]
    return words


def _split_index(split: str) -> int:
    if split not in SPLITS:
        raise ConfigError(f"split = {split!r}: expected one of {', '.join(SPLITS)}")
    return SPLITS.index(split)


def speech_commands_index(
    root: str | os.PathLike,
    split: str,
    *,
    seed: int = 0,
    silence_fraction: float = 0.1,
    unknown_fraction: float = 0.1,
    max_per_class: int | None = None,
    clip_samples: int = SAMPLE_RATE,
) -> list[Clip]:
    """The clips of one split, in a seeded random order (so that any prefix mixes the classes).

    Random draws, in order, from ``numpy.random.default_rng([seed, split_index])``:

    1. if ``max_per_class``: for each keyword in label order, keep the clips at
       the first ``max_per_class`` positions of a permutation of its clips;
    2. with K the number of keyword clips kept: a permutation of the split's
       non-keyword clips, of which the first ``ceil(unknown_fraction K)`` become
       ``_unknown_`` (all of them if there are fewer);
    3. ``ceil(silence_fraction K)`` silence crops: for each, a noise file
       (``integers(n_files)``, files sorted by name) and a start sample
       (``integers(n_samples - clip_samples + 1)``);
    4. if ``max_per_class``, silence and unknown are then cut to their first
       ``max_per_class`` clips in draw order;
    5. the clips, sorted by (path, label, offset), are reordered by a permutation.

    Raises:
        DataError: the root, a list file, a listed WAV or the noise folder (when
            silence is asked for) is missing, the lists overlap, or a noise file
            is shorter than ``clip_samples``.
        ConfigError: a bad split name or argument.
    """
    index = _split_index(split)
    root = _check_root(root)
    seed = check_int("seed", seed, minimum=0)
    silence_fraction = check_real("silence_fraction", silence_fraction, 0.0)
    unknown_fraction = check_real("unknown_fraction", unknown_fraction, 0.0)
    clip_samples = check_int("clip_samples", clip_samples, minimum=1)
    if max_per_class is not None:
        max_per_class = check_int("max_per_class", max_per_class, minimum=1)

    listed = {name: _read_list(root, name) for name in (VALIDATION_LIST, TESTING_LIST)}
    words = _scan_words(root)
    present = {path for paths in words.values() for path in paths}
    for name, paths in listed.items():
        missing = [p for p in paths if p not in present]
        if missing:
            raise DataError(
                f"{root / name} lists {len(missing)} WAV file(s) not found under {root}, e.g. {missing[:3]}; "
                f"expected every listed path to exist"
            )
    validation, testing = set(listed[VALIDATION_LIST]), set(listed[TESTING_LIST])
    both = validation & testing
    if both:
        raise DataError(
            f"{len(both)} path(s) are in both {VALIDATION_LIST} and {TESTING_LIST}, e.g. {sorted(both)[:3]}"
        )

    def in_split(path: str) -> bool:
        if split == "validation":
            return path in validation
        if split == "testing":
            return path in testing
        return path not in validation and path not in testing

    rng = np.random.default_rng([seed, index])
    clips: list[Clip] = []
    for label, word in enumerate(KEYWORDS):
        paths = [p for p in words.get(word, []) if in_split(p)]
        if max_per_class is not None and len(paths) > max_per_class:
            keep = rng.permutation(len(paths))[:max_per_class]
            paths = [paths[i] for i in sorted(keep)]
        clips.extend(Clip(p, label) for p in paths)
    n_keyword = len(clips)

    others = [p for word, paths in words.items() if word not in KEYWORDS for p in paths if in_split(p)]
    n_unknown = min(len(others), math.ceil(unknown_fraction * n_keyword))
    order = rng.permutation(len(others))[:n_unknown]
    unknown = [Clip(others[i], CLASS_NAMES.index(UNKNOWN)) for i in order]

    n_silence = math.ceil(silence_fraction * n_keyword)
    silence: list[Clip] = []
    if n_silence:
        noise_dir = root / BACKGROUND_DIR
        noise = sorted(f for f in noise_dir.glob("*.wav")) if noise_dir.is_dir() else []
        if not noise:
            raise DataError(
                f"{noise_dir} is missing or holds no .wav files; expected the background-noise WAVs from which "
                f"{n_silence} silence clips are cropped (or silence_fraction=0)"
            )
        lengths = [_wav_length(f) for f in noise]
        for f, n in zip(noise, lengths, strict=True):
            if n < clip_samples:
                raise DataError(f"{f}: {n} samples; expected at least {clip_samples} to crop silence clips from")
        for _ in range(n_silence):
            i = int(rng.integers(len(noise)))
            offset = int(rng.integers(lengths[i] - clip_samples + 1))
            silence.append(Clip(f"{BACKGROUND_DIR}/{noise[i].name}", CLASS_NAMES.index(SILENCE), offset))
    if max_per_class is not None:
        unknown, silence = unknown[:max_per_class], silence[:max_per_class]
    ordered = sorted(clips + unknown + silence)
    return [ordered[i] for i in rng.permutation(len(ordered))]


# --------------------------------------------------------------------------- #
# loading with a feature cache
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, eq=False)
class SpeechData:
    """One loaded split.  Unpacks as ``x, labels, class_names = data``.

    Attributes:
        x: float32 (N, steps, 2 n_mels) features (rescaled as asked); with ``resident``
            False the raw features, read from the cache file per batch
            (:class:`~spinnray.data.base.NpzRows`; an array when there is no cache).
        labels: int64 (N,), indices into ``class_names``.
        class_names: :data:`CLASS_NAMES`.
        clips: the :class:`Clip` of each row.
        scale: float32 (2 n_mels,) divisor that was applied per channel (ones when
            not rescaled; per clip it is not a single vector: None); with ``resident``
            False, the divisor every batch gets.
        resident: False: ``x`` is raw and read per batch (:meth:`split`).
    """

    x: np.ndarray | NpzRows
    labels: np.ndarray
    class_names: tuple[str, ...]
    clips: tuple[Clip, ...] = field(repr=False)
    scale: np.ndarray | None
    resident: bool = True

    def __iter__(self):
        return iter((self.x, self.labels, self.class_names))

    def __len__(self) -> int:
        return len(self.labels)

    def split(self, limit: int | None = None) -> ArraySplit:
        """The first ``limit`` rows (all: None) as a data split of a run."""
        n = len(self.labels) if limit is None else min(limit, len(self.labels))
        return ArraySplit(self.x, self.labels[:n], divisor=None if self.resident else self.scale)


def _clip_samples_of(root: Path, clip: Clip, noise_cache: dict, clip_samples: int) -> np.ndarray:
    if clip.relpath.startswith(BACKGROUND_DIR + "/"):
        if clip.relpath not in noise_cache:
            noise_cache[clip.relpath] = read_wav(root / clip.relpath)
        return noise_cache[clip.relpath][clip.offset : clip.offset + clip_samples]
    return read_wav(root / clip.relpath)


def clip_batches(root: Path, clips: list[Clip], clip_samples: int = SAMPLE_RATE, batch: int = 256):
    """Yield ``(start, audio)`` for consecutive batches of ``clips``: float64 (b, clip_samples) samples
    (int16 / 32768, zero-padded or cropped; silence clips cropped from their noise file)."""
    noise_cache: dict[str, np.ndarray] = {}
    for start in range(0, len(clips), batch):
        yield start, np.stack([_fit_clip(_clip_samples_of(root, c, noise_cache, clip_samples), clip_samples)
                               for c in clips[start : start + batch]])


def _compute_features(root: Path, clips: list[Clip], params: FeatureParams, progress: bool, desc: str) -> np.ndarray:
    """Read every clip and compute its features, in batches; float32 (N, steps, 2 n_mels)."""

    bank = mel_filterbank(params)
    out = np.empty((len(clips), params.steps, params.n_features), dtype=np.float32)
    with tqdm(total=len(clips), desc=desc, unit="clip", disable=not progress, dynamic_ncols=True, leave=False) as bar:
        for start, audio in clip_batches(root, clips, params.clip_samples):
            mel = log_mel(audio, params, bank)
            out[start : start + len(audio)] = np.concatenate([mel, deltas(mel, params.delta_width)], axis=-1)
            bar.update(len(audio))
    return out


def _cache_key(root: Path, clips: list[Clip], params: FeatureParams, split: str) -> str:
    """sha256 of the feature parameters, the split and every clip with its file's size and mtime."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": _CACHE_VERSION, "params": asdict(params), "split": split},
                             sort_keys=True).encode())
    stats: dict[str, tuple[int, int]] = {}
    for clip in clips:
        if clip.relpath not in stats:
            st = (root / clip.relpath).stat()
            stats[clip.relpath] = (st.st_size, st.st_mtime_ns)
        size, mtime = stats[clip.relpath]
        digest.update(f"{clip.relpath}\0{clip.label}\0{clip.offset}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()


def _cache_path(cache_dir: Path, root: Path, split: str, options: dict) -> Path:
    """One cache file per (root, split, selection options); its content key says whether it is current."""
    slot = hashlib.sha256(json.dumps({"root": str(root.resolve()), "split": split, **options},
                                     sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_dir / f"speech_commands_{split}_{slot}.npz"


def _read_cache(path: Path, key: str, n: int, params: FeatureParams) -> NpzRows | None:
    """The cached features, read per batch, if the file is readable, current and well-formed (checked
    block by block); else None (it will be rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored_key = str(data["key"])
        if stored_key != key:
            log.info("feature cache %s is stale (data or parameters changed); rebuilding it", path)
            return None
        x = NpzRows(path, "x")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, DataError) as exc:
        log.warning("feature cache %s is unreadable (%s); rebuilding it", path, exc)
        return None
    if x.dtype != np.float32 or x.shape != (n, params.steps, params.n_features) or \
            not all(np.isfinite(b).all() for b in x.blocks()):
        log.warning("feature cache %s holds %s %s, expected float32 %s; rebuilding it", path, x.dtype, x.shape,
                    (n, params.steps, params.n_features))
        return None
    return x


def _write_cache(path: Path, key: str, x: np.ndarray) -> bool:
    """Write atomically (temporary file, then rename), so a crash never leaves a half-written cache;
    uncompressed, so that rows can be read in place.  False if it could not be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, key=np.array(key), x=x)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write feature cache %s (%s); features will be recomputed next time", path, exc)
        return False
    return True


def _raw_features(root: Path, split: str, params: FeatureParams, cache_dir: Path | None, progress: bool,
                  options: dict) -> tuple[np.ndarray | NpzRows, list[Clip]]:
    """The raw features of a split: read per batch from the cache (computed and written first if it
    is missing or stale), or an array without a (writable) cache."""
    clips = speech_commands_index(root, split, clip_samples=params.clip_samples, **options)
    if cache_dir is None:
        return _compute_features(root, clips, params, progress, split), clips
    key = _cache_key(root, clips, params, split)
    path = _cache_path(cache_dir, root, split, {**options, "params": asdict(params)})
    x = _read_cache(path, key, len(clips), params)
    if x is None:
        x = _compute_features(root, clips, params, progress, split)
        if _write_cache(path, key, x):
            x = NpzRows(path, "x")          # read per batch from now on, as a cached split is
    return x, clips


def _resident(x: np.ndarray | NpzRows) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    return np.concatenate([*x.blocks(), np.empty((0, *x.row_shape), x.dtype)])


def _group_max(x: np.ndarray, n_mels: int, axes: tuple[int, ...], zero: float = 1.0) -> np.ndarray:
    """Largest |value| over ``axes`` for the log-mel and the delta channels separately, broadcast per
    channel; a group whose largest is 0 gets ``zero``."""
    mel = np.abs(x[..., :n_mels]).max(axis=axes + (x.ndim - 1,), keepdims=True)
    dlt = np.abs(x[..., n_mels:]).max(axis=axes + (x.ndim - 1,), keepdims=True)
    scale = np.concatenate([np.broadcast_to(mel, mel.shape[:-1] + (n_mels,)),
                            np.broadcast_to(dlt, dlt.shape[:-1] + (x.shape[-1] - n_mels,))], axis=-1)
    return np.where(scale > 0, scale, zero).astype(np.float32)


def feature_scale(x_train: np.ndarray | NpzRows, n_mels: int = 40) -> np.ndarray:
    """Per-channel divisor, float32 (2 n_mels,): max |x| over the training features, per channel group.

    Channels ``0..n_mels-1`` (log-mel) share one value, channels ``n_mels..`` (deltas)
    another; a group that is all zeros gets 1.  Features read per batch are scanned block by block.
    """
    blocks = x_train.blocks() if isinstance(x_train, NpzRows) else [np.asarray(x_train)]
    shape = x_train.shape if isinstance(x_train, NpzRows) else blocks[0].shape
    if len(shape) != 3 or shape[-1] <= n_mels or shape[0] == 0:
        raise DataError(f"training features of shape {shape}: expected a non-empty (N, T, > {n_mels}) array")
    most = np.max([_group_max(b, n_mels, (0, 1), zero=0.0).reshape(-1) for b in blocks if len(b)], axis=0)
    return np.where(most > 0, most, 1.0).astype(np.float32)


def load_speech_commands(
    root: str | os.PathLike,
    split: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
    seed: int = 0,
    max_per_class: int | None = None,
    silence_fraction: float = 0.1,
    unknown_fraction: float = 0.1,
    rescale: str | np.ndarray | None = "train",
    params: FeatureParams | None = None,
    progress: bool = False,
    resident: bool = True,
) -> SpeechData:
    """Load one split of Speech Commands v1 as features (see the module docstring).

    Args:
        root: the extracted ``speech_commands_v0.01`` directory (or one in the same layout).
        split: ``"training"``, ``"validation"`` or ``"testing"``.
        cache_dir: where feature caches go (default ``root/.spinnray_cache``).
            One ``.npz`` per (root, split, options) holds the raw features and a
            sha256 key of the feature parameters, the clip list and each file's
            size and mtime; a cache whose key differs (stale) or that cannot be
            read (corrupt) is recomputed and overwritten, never trusted.
        cache: False to neither read nor write a cache.
        seed, max_per_class, silence_fraction, unknown_fraction: the selection of
            :func:`speech_commands_index`.
        rescale: ``"train"`` (divide by :func:`feature_scale` of the training
            split loaded with the same options; loads, and caches, the training
            features too), ``"clip"`` (each clip by its own per-group maxima),
            ``None`` (raw), or an explicit divisor broadcastable to (2 n_mels,).
        params: :class:`FeatureParams` (default: the paper's).
        progress: show a tqdm progress bar while computing features.
        resident: False: keep the features in the cache file and read them per
            batch (:meth:`SpeechData.split`), each batch divided by ``scale``; the
            whole split is held only when there is no (writable) cache.

    Returns:
        :class:`SpeechData`; ``x, labels, class_names = load_speech_commands(...)``.
        Rows are in the seeded, class-mixed order of :func:`speech_commands_index`,
        so ``x[:n]`` is a fair subset.  Memory: 32 KB per clip at the default parameters
        (resident; none with ``resident=False`` and a cache).

    Raises:
        DataError: missing root, list file, noise folder or WAV; a WAV that is
            not 16-bit mono 16 kHz (the message names the file).
        ConfigError: a bad argument.
    """
    params = params or FeatureParams()
    if not isinstance(params, FeatureParams):
        raise ConfigError(f"params = {params!r}: expected a FeatureParams")
    root = _check_root(root)
    _split_index(split)
    options = {"seed": seed, "max_per_class": max_per_class, "silence_fraction": silence_fraction,
               "unknown_fraction": unknown_fraction}
    directory = None
    if cache:
        directory = Path(cache_dir) if cache_dir is not None else root / ".spinnray_cache"
    if isinstance(rescale, str) and rescale not in ("train", "clip"):
        raise ConfigError(f"rescale = {rescale!r}: expected 'train', 'clip', None or an array of divisors")
    if isinstance(rescale, str) and rescale == "clip" and not resident:
        raise ConfigError("rescale = 'clip' with resident = False: a batch read from the cache is divided by one "
                          "per-channel vector; expected resident = True or rescale 'train', None or divisors")
    x, clips = _raw_features(root, split, params, directory, progress, options)

    if isinstance(rescale, str) and rescale == "train":
        x_train = x if split == "training" else _raw_features(root, "training", params, directory, progress,
                                                              options)[0]
        scale = feature_scale(x_train, params.n_mels)
    elif isinstance(rescale, str):                    # "clip": each clip by its own maxima, below
        scale = None
    elif rescale is None:
        scale = np.ones(params.n_features, dtype=np.float32)
    else:
        scale = np.broadcast_to(np.asarray(rescale, dtype=np.float32), (params.n_features,)).copy()
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ConfigError(f"rescale = {rescale!r}: expected finite divisors > 0")
    labels = np.array([c.label for c in clips], dtype=np.int64)
    if not resident:
        return SpeechData(x, labels, CLASS_NAMES, tuple(clips), scale, resident=False)
    x = _resident(x)
    if scale is None:
        x = x / _group_max(x, params.n_mels, (1,)) if len(x) else x
    elif rescale is not None:
        x = x / scale
    return SpeechData(x.astype(np.float32, copy=False), labels, CLASS_NAMES, tuple(clips), scale)


# --------------------------------------------------------------------------- #
# the data set of a run (data.name = speech_commands; keywords: spinnray.data.keywords)
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SpeechConfig:
    """Keyword spotting on Speech Commands v1 features (40 log-mel bands + deltas, 100 steps of 10 ms
    hop, one per network step): the real set at ``root`` (``speech_commands``) or the offline
    espeak-ng set (``keywords``, :mod:`spinnray.data.keywords`)."""

    name: str = opt("keywords", "keywords (offline espeak-ng set) | speech_commands (real GSC v1 at root)",
                    choices=("keywords", "speech_commands"))
    root: str | None = opt(None, "data directory: the GSC v1 root, or where the offline keyword set is "
                                 "written (null = ~/.cache/spinnray/keywords)", path=True)
    cache_dir: str | None = opt(None, "feature cache directory (null = inside root)", path=True)
    per_word: int = opt(500, "offline keyword set: clips per word", min=1, max=100_000)
    data_seed: int = opt(0, "offline keyword set: generator seed", min=0, max=2**32 - 1)
    limit: int | None = opt(None, "use only the first N training and N test samples", min=1, max=10_000_000)


def dataset_from_root(cfg: SpeechConfig, root: Path, progress: bool = True) -> Dataset:
    """Training and test features of the Speech Commands layout at ``root`` (GSC v1 lists), read per
    mini-batch from the feature cache."""
    train, test = (load_speech_commands(root, split, cache_dir=cfg.cache_dir, progress=progress, resident=False)
                   for split in ("training", "testing"))
    return Dataset(cfg.name, "analog", train.x.shape[2], train.x.shape[1], list(train.class_names),
                   train.split(cfg.limit), test.split(cfg.limit))


@register("speech_commands", SpeechConfig)
def load(cfg: SpeechConfig, timing: Timing, progress: bool = True) -> Dataset:
    if cfg.root is None:
        raise ConfigError("data.root = null: data.name=speech_commands needs the path of the "
                          "speech_commands_v0.01 directory")
    return dataset_from_root(cfg, Path(cfg.root).expanduser(), progress)
