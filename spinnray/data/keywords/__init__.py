"""An offline keyword data set in the Speech Commands v1 layout, spoken by espeak-ng.

So that the Speech Commands loader (:mod:`spinnray.data.speech`) runs on real
WAV files and the e-prop keyword-spotting scenario runs without a download,
:func:`generate_keyword_dataset` writes::

    ROOT/WORD/SPEAKER_nohash_K.wav      16 kHz mono 16-bit, exactly 1 s
    ROOT/_background_noise_/*.wav       60 s each: white, pink, brown noise and a mains hum
    ROOT/validation_list.txt            WORD/FILE.wav paths of the validation speakers
    ROOT/testing_list.txt               ... of the testing speakers
    ROOT/spinnray_keywords.json         manifest (parameters and file list), written last

Words: the ten keywords (:data:`~spinnray.data.speech.KEYWORDS`), ``per_word``
clips each, and the ten auxiliary words of v1 (:data:`AUX_WORDS`, the
``_unknown_`` class), ``max(3, ceil(per_word / 4))`` clips each, which is more
than the ``ceil(0.1 K)`` unknown clips the loader samples per split.

Speakers.  A *speaker* is (espeak-ng voice, voice variant, pitch):
:data:`VOICES` (7 English voices) x :data:`VARIANTS` (24 variants) x
:data:`PITCHES` (4 values of ``-p``) = 672 speakers, named by the first 8 hex
digits of ``sha1("VOICE+VARIANT:pPITCH")`` (the real set names files by a
speaker hash too).  A seeded permutation puts ``round(0.1 S)`` speakers in
validation, ``round(0.1 S)`` in testing and the rest in training, so no speaker
is in two splits.  Of each word's n clips, ``k = round(0.1 n)`` (at least 1
when n >= 3) are spoken by validation speakers and k by testing speakers, the
rest by training speakers, each speaker drawn uniformly from its split's pool.

Per clip, with ``rng = numpy.random.default_rng(seed)`` drawing (after the
speaker permutation), word by word and clip by clip: the speaker, the speed
``-s`` (integer words per minute in [120, 220]), the peak level of the speech
(uniform in [-30, -6] dBFS), the start of the speech in the clip (uniform over
the room left), the noise kind (uniform over white, pink, brown, hum), the SNR
(uniform in [10, 30] dB, speech power over the speech's own samples against the
noise power) and a 63-bit seed for that clip's noise.  Processing:

1. ``espeak-ng -v VOICE+VARIANT -s SPEED -p PITCH -a 100 --stdout WORD``
   (22,050 Hz, 16-bit mono);
2. trim the leading and trailing silence (samples below 0.5 % of the peak, a
   10 ms margin kept);
3. resample 22,050 -> 16,000 Hz by FFT (ideal low-pass at 8 kHz): the
   utterance is zero-padded to a multiple of 441 samples, its spectrum is cut
   to the bins below 8 kHz and inverted with 320/441 as many samples
   (:func:`resample_fft`); words fit in 1 s at 120 words per minute (the
   longest, "marvin", lasts about 0.7 s), longer utterances are cropped;
4. scale to the peak level, place at the offset in 1 s of zeros, add noise,
   round to int16 (clipped to the int16 range).

The background-noise files are seeded from ``seed`` too (:func:`noise`), with
an RMS of -30 dBFS modulated by a slow random gain (-12 to +6 dB, linear in dB
between knots every 2 s), so that 1 s crops of them (the loader's
``_silence_``) vary in level.

Everything is a function of ``(per_word, seed)`` and the espeak-ng version
(recorded in the manifest): two generations are identical byte for byte.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spinnray.checks import check_int
from spinnray.data.base import Dataset, Timing, make_dir, register
from spinnray.data.speech import (
    BACKGROUND_DIR,
    KEYWORDS,
    SAMPLE_RATE,
    TESTING_LIST,
    VALIDATION_LIST,
    SpeechConfig,
    dataset_from_root,
    write_wav,
)
from spinnray.errors import ConfigError, DataError

__all__ = [
    "AUX_WORDS",
    "VOICES",
    "VARIANTS",
    "PITCHES",
    "NOISE_KINDS",
    "NOISE_FILES",
    "DEFAULT_PER_WORD",
    "MANIFEST",
    "Speaker",
    "ClipPlan",
    "speakers",
    "plan_keyword_dataset",
    "resample_fft",
    "noise",
    "espeak_available",
    "synthesize",
    "render_clip",
    "generate_keyword_dataset",
    "build_replacing",
    "ensure_keyword_dataset",
    "main",
]

log = logging.getLogger(__name__)

#: The auxiliary words of Speech Commands v1 (the ``_unknown_`` class).
AUX_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow")
#: espeak-ng English voices (``espeak-ng --voices=en``, the non-MBROLA ones; en-us-nyc is left out because
#: it says most of these words exactly as en-us does).
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
#: espeak-ng voice variants (``espeak-ng --voices=variant``), whisper, croak and robot variants left out.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "linda", "steph", "annie", "belinda", "adam", "john", "robert", "grandma")
#: Pitch adjustments (``-p``, 0-99, 50 = the voice's own).
PITCHES = (30, 45, 60, 75)
#: Kinds of noise, in the order the generator draws them.
NOISE_KINDS = ("white", "pink", "brown", "hum")
#: File name of each kind of noise in ``_background_noise_/``.
NOISE_FILES = {"white": "white_noise.wav", "pink": "pink_noise.wav", "brown": "brown_noise.wav", "hum": "hum.wav"}
#: Clips per keyword by default: 400 / 50 / 50 per keyword in training / validation / testing; 6,250 clips,
#: about 200 MB, generated in about 100 s on 2 cores.
DEFAULT_PER_WORD = 500
MANIFEST = "spinnray_keywords.json"
_VERSION = 1

ESPEAK_RATE = 22050
SPEED_WPM = (120, 220)
LEVEL_DBFS = (-30.0, -6.0)
SNR_DB = (10.0, 30.0)
VALIDATION_FRACTION = 0.1
TESTING_FRACTION = 0.1
NOISE_FILE_SECONDS = 60
NOISE_RMS_DBFS = -30.0
_INSTALL_HINT = ("install it with `apt-get install -y espeak-ng` (Debian/Ubuntu), `dnf install espeak-ng` "
                 "(Fedora) or `brew install espeak-ng` (macOS)")


# --------------------------------------------------------------------------- #
# speakers and the plan of every clip
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Speaker:
    """An espeak-ng voice, variant and pitch; ``id`` is 8 hex digits of its sha1."""

    voice: str
    variant: str
    pitch: int

    @property
    def name(self) -> str:
        return f"{self.voice}+{self.variant}:p{self.pitch}"

    @property
    def id(self) -> str:
        return hashlib.sha1(self.name.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class ClipPlan:
    """Everything that decides one clip (see the module docstring)."""

    relpath: str
    word: str
    split: str
    speaker: Speaker
    speed_wpm: int
    level_dbfs: float
    offset_fraction: float
    noise_kind: str
    snr_db: float
    noise_seed: int


def speakers() -> list[Speaker]:
    """All speakers, voice-major: VOICES x VARIANTS x PITCHES."""
    out = [Speaker(v, var, p) for v, var, p in itertools.product(VOICES, VARIANTS, PITCHES)]
    if len({s.id for s in out}) != len(out):  # would merge two speakers' files
        raise DataError("two espeak-ng speakers share an 8-digit id; change VOICES/VARIANTS/PITCHES")
    return out


def _aux_count(per_word: int) -> int:
    return max(3, math.ceil(per_word / 4))


def _held_out(n: int, fraction: float) -> int:
    k = int(round(fraction * n))
    return max(k, 1) if n >= 3 else k


def plan_keyword_dataset(per_word: int, seed: int) -> tuple[list[ClipPlan], dict[str, list[Speaker]]]:
    """The plan of every clip (in generation order) and the speakers of each split.

    Raises:
        ConfigError: ``per_word`` < 1 or ``seed`` < 0.
    """
    per_word = check_int("per_word", per_word, 1)
    seed = check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    pool = speakers()
    order = rng.permutation(len(pool))
    n_val = int(round(VALIDATION_FRACTION * len(pool)))
    n_test = int(round(TESTING_FRACTION * len(pool)))
    by_split = {
        "validation": [pool[i] for i in order[:n_val]],
        "testing": [pool[i] for i in order[n_val : n_val + n_test]],
        "training": [pool[i] for i in order[n_val + n_test :]],
    }
    plans: list[ClipPlan] = []
    for word in KEYWORDS + AUX_WORDS:
        n = per_word if word in KEYWORDS else _aux_count(per_word)
        k_val, k_test = _held_out(n, VALIDATION_FRACTION), _held_out(n, TESTING_FRACTION)
        splits = ["training"] * (n - k_val - k_test) + ["validation"] * k_val + ["testing"] * k_test
        uses: dict[str, int] = {}
        for split in splits:
            candidates = by_split[split]
            speaker = candidates[int(rng.integers(len(candidates)))]
            speed = int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1))
            level = float(rng.uniform(*LEVEL_DBFS))
            offset = float(rng.random())
            kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
            snr = float(rng.uniform(*SNR_DB))
            noise_seed = int(rng.integers(2**63))
            k = uses.get(speaker.id, 0)
            uses[speaker.id] = k + 1
            plans.append(ClipPlan(f"{word}/{speaker.id}_nohash_{k}.wav", word, split, speaker, speed, level, offset,
                                  kind, snr, noise_seed))
    return plans, by_split


# --------------------------------------------------------------------------- #
# signal processing (numpy)
# --------------------------------------------------------------------------- #
def resample_fft(x: np.ndarray, up: int = 320, down: int = 441) -> np.ndarray:
    """Band-limited resampling by ``up / down`` (22,050 -> 16,000 Hz by default), float64.

    ``x`` is zero-padded to ``n2``, a multiple of ``down``; its one-sided spectrum
    is kept below the new Nyquist frequency (the bin exactly at it is zeroed) and
    inverted to ``m = n2 up / down`` samples, times ``m / n2`` (amplitude kept);
    the first ``round(len(x) up / down)`` samples are returned.  An ideal
    low-pass, so content above ``up / down`` of the old Nyquist frequency is removed.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise DataError(f"signal of shape {x.shape}: expected one channel (n,)")
    n = len(x)
    if n == 0:
        return x.copy()
    n2 = -(-n // down) * down
    m = n2 * up // down
    spectrum = np.fft.rfft(x, n2)
    kept = np.zeros(m // 2 + 1, dtype=complex)
    count = min(len(spectrum), len(kept))
    kept[:count] = spectrum[:count]
    if m % 2 == 0 and up < down:
        kept[m // 2] = 0.0  # the new Nyquist bin: its phase cannot be kept
    y = np.fft.irfft(kept, m) * (m / n2)
    return y[: int(round(n * up / down))]


def noise(kind: str, n: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``n`` samples of unit-RMS noise, float64.

    ``white``: Gaussian.  ``pink``: white shaped by ``1 / sqrt(f)`` in the FFT
    (power ~ 1/f), DC removed.  ``brown``: shaped by ``1 / f`` (power ~ 1/f**2),
    below 20 Hz cut.  ``hum``: 50 Hz mains with harmonics 2-6 (amplitudes
    ``1 / h``, random phases) plus white noise 26 dB down.
    """
    if kind not in NOISE_KINDS:
        raise ConfigError(f"noise kind = {kind!r}: expected one of {', '.join(NOISE_KINDS)}")
    if kind == "hum":
        t = np.arange(n) / sample_rate
        phases = rng.uniform(0, 2 * np.pi, 6)
        y = sum(np.sin(2 * np.pi * 50.0 * h * t + phases[h - 1]) / h for h in range(1, 7))
        y = y + 0.05 * rng.standard_normal(n)
    else:
        white = rng.standard_normal(n)
        if kind == "white":
            y = white
        else:
            spectrum = np.fft.rfft(white)
            f = np.fft.rfftfreq(n, 1.0 / sample_rate)
            shape = np.zeros_like(f)
            if kind == "pink":
                shape[1:] = 1.0 / np.sqrt(f[1:])
            else:
                shape[f >= 20.0] = 1.0 / f[f >= 20.0]
            y = np.fft.irfft(spectrum * shape, n)
    rms = math.sqrt(float(np.mean(y * y)))
    return y / rms if rms > 0 else y


def _background_file(kind: str, rng: np.random.Generator) -> np.ndarray:
    n = NOISE_FILE_SECONDS * SAMPLE_RATE
    y = noise(kind, n, rng)
    knots = rng.uniform(-12.0, 6.0, NOISE_FILE_SECONDS // 2 + 1)
    gain_db = np.interp(np.arange(n) / SAMPLE_RATE, 2.0 * np.arange(len(knots)), knots)
    return _to_int16(y * 10 ** ((NOISE_RMS_DBFS + gain_db) / 20.0))


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- #
# espeak-ng
# --------------------------------------------------------------------------- #
def espeak_available() -> bool:
    """True if ``espeak-ng`` is on the PATH."""
    return shutil.which("espeak-ng") is not None


def _require_espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise DataError(f"espeak-ng is not on the PATH; the offline keyword set needs it: {_INSTALL_HINT}")
    return path


def _espeak_version() -> str:
    out = subprocess.run([_require_espeak(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().split("  Data at")[0]


def _parse_wav_bytes(data: bytes, what: str) -> np.ndarray:
    """Samples of espeak-ng's ``--stdout`` WAV (its size fields are placeholders; the data runs to the end)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataError(f"{what}: espeak-ng did not write a WAV stream (got {data[:16]!r})")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if tag == b"fmt ":
            fmt = data[pos + 8 : pos + 24]
        if tag == b"data":
            if fmt is None:
                raise DataError(f"{what}: WAV stream without a fmt chunk")
            audio_format, channels, rate = (int.from_bytes(fmt[0:2], "little"), int.from_bytes(fmt[2:4], "little"),
                                            int.from_bytes(fmt[4:8], "little"))
            bits = int.from_bytes(fmt[14:16], "little")
            if (audio_format, channels, rate, bits) != (1, 1, ESPEAK_RATE, 16):
                raise DataError(f"{what}: espeak-ng wrote format {audio_format}, {channels} channel(s), {rate} Hz, "
                                f"{bits}-bit; expected PCM mono {ESPEAK_RATE} Hz 16-bit")
            body = data[pos + 8 :]
            return np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0
        pos += 8 + size + (size & 1)
    raise DataError(f"{what}: WAV stream without a data chunk")


def synthesize(word: str, speaker: Speaker, speed_wpm: int) -> np.ndarray:
    """espeak-ng's 22,050 Hz rendering of ``word``, float64 in [-1, 1).

    Raises:
        DataError: espeak-ng is missing (with how to install it) or fails.
    """
    cmd = [_require_espeak(), "-v", f"{speaker.voice}+{speaker.variant}", "-s", str(speed_wpm), "-p",
           str(speaker.pitch), "-a", "100", "--stdout", word]
    out = subprocess.run(cmd, capture_output=True, check=False)
    what = f"`{' '.join(cmd[1:])}`"
    if out.returncode != 0:
        raise DataError(f"{what} failed with exit code {out.returncode}: {out.stderr.decode(errors='replace')[:300]}")
    return _parse_wav_bytes(out.stdout, what)


def _trim(x: np.ndarray, rate: int) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > 0.005 * np.abs(x).max()) if x.size and np.abs(x).max() > 0 else []
    if len(loud) == 0:
        raise DataError("espeak-ng produced silence")
    margin = int(0.010 * rate)
    return x[max(0, loud[0] - margin) : loud[-1] + margin + 1]


def render_clip(plan: ClipPlan, speech_22k: np.ndarray | None = None) -> np.ndarray:
    """The int16 (16000,) clip of ``plan`` (synthesizes unless ``speech_22k`` is given)."""
    raw = synthesize(plan.word, plan.speaker, plan.speed_wpm) if speech_22k is None else speech_22k
    speech = resample_fft(_trim(raw, ESPEAK_RATE))[:SAMPLE_RATE]
    speech *= 10 ** (plan.level_dbfs / 20.0) / np.abs(speech).max()
    offset = int(plan.offset_fraction * (SAMPLE_RATE - len(speech) + 1))
    clip = np.zeros(SAMPLE_RATE)
    clip[offset : offset + len(speech)] = speech
    speech_power = float(np.mean(speech * speech))
    rng = np.random.default_rng(plan.noise_seed)
    clip += noise(plan.noise_kind, SAMPLE_RATE, rng) * math.sqrt(speech_power / 10 ** (plan.snr_db / 10.0))
    return _to_int16(clip)


# --------------------------------------------------------------------------- #
# the data set
# --------------------------------------------------------------------------- #
def _manifest(per_word: int, seed: int, plans: list[ClipPlan]) -> dict:
    return {
        "generator": "spinnray.data.keywords",
        "version": _VERSION,
        "per_word": per_word,
        "seed": seed,
        "espeak_ng": _espeak_version(),
        "keywords": list(KEYWORDS),
        "aux_words": list(AUX_WORDS),
        "noise_files": [f"{BACKGROUND_DIR}/{NOISE_FILES[k]}" for k in NOISE_KINDS],
        "clips": {split: sum(p.split == split for p in plans) for split in ("training", "validation", "testing")},
        "files": [p.relpath for p in plans],
    }


def generate_keyword_dataset(root: str | os.PathLike, per_word: int = DEFAULT_PER_WORD, seed: int = 0, *,
                             progress: bool = True, workers: int | None = None) -> Path:
    """Write the whole data set into ``root`` (which must not exist or be empty); return ``root``.

    ``workers`` threads (default: 2, or 1 on a single CPU) run espeak-ng and the
    numpy processing; each clip depends on its plan only, so the files do not
    depend on ``workers``.  The manifest is written last.

    Raises:
        DataError: espeak-ng is missing or fails; ``root`` is not empty.
        ConfigError: a bad ``per_word``, ``seed`` or ``workers``.
    """

    root = Path(root)
    _require_espeak()
    plans, _ = plan_keyword_dataset(per_word, seed)
    workers = check_int("workers", workers, 1) if workers is not None else max(1, min(2, os.cpu_count() or 1))
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root} is not empty; expected a new or empty directory for the keyword data set")
    make_dir(root, "data.root (the keyword set)")

    rng = np.random.default_rng([seed, 1])  # the noise files, apart from the clips' stream
    (root / BACKGROUND_DIR).mkdir()
    manifest = _manifest(per_word, seed, plans)
    for kind, name in zip(NOISE_KINDS, manifest["noise_files"], strict=True):
        write_wav(root / name, _background_file(kind, rng))
    for word in KEYWORDS + AUX_WORDS:
        (root / word).mkdir()

    def make(plan: ClipPlan) -> None:
        write_wav(root / plan.relpath, render_clip(plan))

    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(plans), desc="espeak-ng clips", unit="clip", disable=not progress,
                 dynamic_ncols=True) as bar:
        for _ in pool.map(make, plans):
            bar.update(1)
    for name, split in ((VALIDATION_LIST, "validation"), (TESTING_LIST, "testing")):
        (root / name).write_text("".join(f"{p.relpath}\n" for p in plans if p.split == split))
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return root


def is_complete(root: Path, per_word: int, seed: int) -> bool:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("generator") != "spinnray.data.keywords":
        return False
    if (manifest.get("version"), manifest.get("per_word"), manifest.get("seed")) != (_VERSION, per_word, seed):
        return False
    files = list(manifest.get("files", [])) + list(manifest.get("noise_files", [])) + [VALIDATION_LIST, TESTING_LIST]
    return all((root / f).is_file() for f in files)


def _ours(root: Path) -> bool:
    try:
        return json.loads((root / MANIFEST).read_text()).get("generator") == "spinnray.data.keywords"
    except (OSError, ValueError, AttributeError):
        return False


def build_replacing(root: Path, make):
    """``make(tmp)`` into a new temporary sibling of ``root``, then move it to ``root``, replacing what was
    there: a failure never leaves a half-written set at ``root``.  Returns what ``make`` returns."""
    make_dir(root.parent, "data.root (the keyword set)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        made = make(tmp)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return made


def ensure_keyword_dataset(root: str | os.PathLike, per_word: int = DEFAULT_PER_WORD, seed: int = 0, *,
                           progress: bool = True, workers: int | None = None) -> Path:
    """Return ``root`` holding a complete keyword set for ``(per_word, seed)``, generating it only if needed.

    Complete means: ``root/spinnray_keywords.json`` names this generator, its
    version, ``per_word`` and ``seed``, and every file it lists exists.  If not,
    the set is generated into a temporary sibling directory and then moved to
    ``root``, replacing a set of ours with other parameters; a non-empty ``root``
    that is not ours is never touched.

    Raises:
        DataError: espeak-ng is missing (with how to install it) or fails;
            ``root`` holds something else.
    """
    root = Path(root)
    per_word = check_int("per_word", per_word, 1)
    seed = check_int("seed", seed, 0)
    if is_complete(root, per_word, seed):
        return root
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not _ours(root))):
        raise DataError(f"{root} exists and is not a keyword set made by spinnray (no {MANIFEST}); "
                        f"expected a new, empty or previously generated directory")
    _require_espeak()
    start = time.perf_counter()
    build_replacing(root, lambda tmp: generate_keyword_dataset(tmp, per_word, seed, progress=progress,
                                                               workers=workers))
    log.info("keyword set with %d clips per keyword written to %s in %.1f s", per_word, root,
             time.perf_counter() - start)
    return root


@register("keywords", SpeechConfig)
def load_keywords(cfg: SpeechConfig, timing: Timing, progress: bool = True) -> Dataset:
    """The offline keyword set at ``data.root`` (default ``~/.cache/spinnray/keywords``), generated there on
    first use; the same features and layout as ``speech_commands``."""
    root = Path(cfg.root or "~/.cache/spinnray/keywords").expanduser()
    return dataset_from_root(cfg, ensure_keyword_dataset(root, per_word=cfg.per_word, seed=cfg.data_seed,
                                                         progress=progress), progress)
