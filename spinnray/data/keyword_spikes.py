"""The offline spoken keyword set (:mod:`spinnray.data.keywords`, espeak-ng) as spike trains, written in
the SHD HDF5 layout (:mod:`spinnray.data.shd`) and read by the same reader: ``data.name=keyword_spikes``.

**Auditory front end: level crossings of log-mel band energies** (a multi-threshold code in the manner
of Gütig & Sompolinsky 2009 and Pan et al. 2020).  For each 1 s clip (16 kHz):

1. **Band energies.**  Frames of ``win_length`` = 400 samples (25 ms, periodic Hann window) every
   ``hop_length`` = 80 samples (5 ms), frame f centred on sample ``80 f`` (200 frames, as
   :func:`~spinnray.data.speech.frame_signal`); power spectrum of 512 points; ``bands`` triangular
   HTK-mel filters from ``fmin_hz`` to ``fmax_hz`` (:func:`~spinnray.data.speech.mel_filterbank`);
   ``E = 10 log10(P F^T + 1e-6)`` dB.
2. **Gain.**  ``E`` minus its largest value over the clip (all frames and bands), so 0 dB is the clip's
   loudest band-frame: the code does not depend on the recording level (a whole-clip gain, not a causal
   AGC; the clips' peak levels span 24 dB).
3. **Smoothing.**  A first-order low-pass along time, ``S[f] = a S[f-1] + (1 - a) E[f]``,
   ``a = exp(-hop / smooth_ms)``, ``S[0] = E[0]`` (the envelope smoothing of a hair cell; it also
   keeps the periodogram's frame-to-frame scatter from firing the detectors).
4. **Level crossings with hysteresis.**  For each band b and level ``L_k`` of ``levels_db`` a detector is
   *below* at the start; it switches *above* when ``S`` reaches ``L_k + hysteresis_db / 2`` (an **on**
   spike) and back *below* when ``S`` falls to ``L_k - hysteresis_db / 2`` (an **off** spike).  The
   spike time is interpolated linearly between the two frames around the crossing (frame f at
   ``f * hop / 16000`` s; a detector that starts above fires at 0).
5. **Channels.**  ``channels = 2 * bands * len(levels_db)``: on spikes of band b, level k on channel
   ``b * len(levels_db) + k``, off spikes ``bands * len(levels_db)`` higher.  Default 32 bands x 6
   levels x 2 = 384 channels.

**Samples and splits.**  The 12-class task of :mod:`spinnray.data.speech` (ten keywords, ``_silence_``,
``_unknown_``; the same clips as ``data.name=keywords``): the keyword set's training, validation and
testing lists (speaker-disjoint: a speaker is an espeak-ng voice, variant and pitch) become
``keyword_spikes_train.h5``, ``keyword_spikes_valid.h5`` (the set's validation split) and
``keyword_spikes_test.h5``.  ``extra/speaker`` is the 8-hex-digit speaker id as an integer, -1 for a
silence clip (a crop of background noise); ``extra/keys`` the 12 class names; times float32 seconds,
units uint16.

The files are generated on first use into ``data.root`` (``python -m spinnray.data.keywords spikes``
does it by hand) from the keyword set at ``data.audio_root`` (itself generated on first use), with a
manifest ``spinnray_keyword_spikes.json`` (parameters and statistics) written last; they are
regenerated when the parameters or the keyword set differ.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spinnray.data.base import Dataset, Timing, make_dir, register
from spinnray.data.keywords import build_replacing, ensure_keyword_dataset
from spinnray.data.keywords import MANIFEST as AUDIO_MANIFEST
from spinnray.data.shd import SHDConfig, SpikeSet, spike_dataset, write_spike_file
from spinnray.data.speech import (CLASS_NAMES, SAMPLE_RATE, FeatureParams, clip_batches, log_mel, mel_filterbank,
                                  speech_commands_index)
from spinnray.errors import ConfigError, DataError

__all__ = ["EncoderParams", "SPIKE_SET", "MANIFEST", "band_energies", "crossings", "encode", "generate_keyword_spikes",
           "ensure_keyword_spikes", "encoder_params", "audio_path", "spikes_path", "load"]

log = logging.getLogger(__name__)

SPIKE_SET = SpikeSet("keyword_spikes", "spiking keyword set", "keyword_spikes_train.h5", "keyword_spikes_test.h5",
                     "keyword_spikes_valid.h5")
MANIFEST = "spinnray_keyword_spikes.json"
_VERSION = 1
_SPLITS = {"train": "training", "val": "validation", "test": "testing"}
_DB = 10.0 / math.log(10.0)          # natural log of power -> dB


_CONFIG = SHDConfig(name="keyword_spikes")      # the defaults of the front end's options


@dataclass(frozen=True)
class EncoderParams:
    """The front end's parameters (module docstring); the defaults are ``data.*``'s."""

    bands: int = _CONFIG.bands
    fmin_hz: float = 100.0
    fmax_hz: float = 8000.0
    levels_db: tuple[float, ...] = _CONFIG.levels_db
    hysteresis_db: float = _CONFIG.hysteresis_db
    smooth_ms: float = _CONFIG.smooth_ms
    win_length: int = 400
    hop_length: int = 80

    def __post_init__(self):
        if not self.levels_db or any(not math.isfinite(v) for v in self.levels_db):
            raise ConfigError(f"levels_db = {list(self.levels_db)}: expected one or more finite levels")
        if len(set(self.levels_db)) != len(self.levels_db):
            raise ConfigError(f"levels_db = {list(self.levels_db)}: expected distinct levels")
        if not (self.hysteresis_db >= 0 and self.smooth_ms >= 0):
            raise ConfigError(f"hysteresis_db = {self.hysteresis_db}, smooth_ms = {self.smooth_ms}: expected >= 0")
        mel_filterbank(self.features())  # refuses bad bands and frequencies, naming them

    @property
    def channels(self) -> int:
        return 2 * self.bands * len(self.levels_db)

    @property
    def frames(self) -> int:
        return SAMPLE_RATE // self.hop_length

    def features(self) -> FeatureParams:
        return FeatureParams(win_length=self.win_length, hop_length=self.hop_length, n_fft=512, n_mels=self.bands,
                             fmin_hz=self.fmin_hz, fmax_hz=self.fmax_hz, steps=self.frames)


def band_energies(audio: np.ndarray, params: EncoderParams | None = None) -> np.ndarray:
    """Steps 1-3: smoothed band energies in dB below each clip's loudest band-frame, (n, frames, bands)."""
    p = params or EncoderParams()
    e = log_mel(audio, p.features()) * _DB
    e -= e.max(axis=(1, 2), keepdims=True)
    if p.smooth_ms > 0:
        a = math.exp(-p.hop_length / SAMPLE_RATE * 1000.0 / p.smooth_ms)
        for f in range(1, e.shape[1]):
            e[:, f] = a * e[:, f - 1] + (1 - a) * e[:, f]
    return e


def crossings(e: np.ndarray, params: EncoderParams | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Step 4: the level-crossing spikes of energies ``e`` (n, frames, bands): per clip, times (float32
    seconds, sorted, ties by channel) and channels (uint16)."""
    p = params or EncoderParams()
    n, frames, bands = e.shape
    if bands != p.bands:
        raise DataError(f"energies of {bands} bands; the encoder has bands = {p.bands}")
    levels = np.asarray(p.levels_db, np.float64)
    n_lv = len(levels)
    up, down = levels + p.hysteresis_db / 2, levels - p.hysteresis_db / 2
    hop_s = p.hop_length / SAMPLE_RATE
    above = np.zeros((n, bands, n_lv), bool)
    found: list[tuple[np.ndarray, ...]] = []                     # (clip, channel, time) per frame and direction
    for f in range(frames):
        cur = e[:, f, :, None]                                   # (n, bands, 1)
        on = ~above & (cur >= up)
        off = above & (cur <= down)
        above ^= on | off
        for fired, level, shift in ((on, up, 0), (off, down, bands * n_lv)):
            c, b, k = np.nonzero(fired)
            if not len(c):
                continue
            t = np.full(len(c), f * hop_s)
            if f:                                                # linear interpolation within the frame
                e0, e1 = e[c, f - 1, b], e[c, f, b]
                t -= hop_s * (1.0 - (level[k] - e0) / (e1 - e0))
            found.append((c, shift + b * n_lv + k, t))
    clip, chan, tim = (np.concatenate([x[i] for x in found]) if found else np.zeros(0) for i in range(3))
    order = np.lexsort((chan, tim, clip))
    clip, chan, tim = clip[order].astype(np.int64), chan[order], tim[order]
    bounds = np.searchsorted(clip, np.arange(n + 1))
    return [(tim[bounds[i]:bounds[i + 1]].astype(np.float32), chan[bounds[i]:bounds[i + 1]].astype(np.uint16))
            for i in range(n)]


def encode(audio: np.ndarray, params: EncoderParams | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Spike times (float32 seconds, sorted) and channels (uint16) of each clip of ``audio`` (n, samples)."""
    return crossings(band_energies(audio, params), params)


def _speaker(relpath: str) -> int:
    """The 8-hex-digit speaker id of ``WORD/SPEAKER_nohash_K.wav`` as an integer; -1 for a noise crop."""
    name = relpath.rsplit("/", 1)[-1]
    head = name.split("_nohash_")[0]
    try:
        return int(head, 16) if "_nohash_" in name and len(head) == 8 else -1
    except ValueError:
        return -1


def generate_keyword_spikes(out: Path, audio_root: Path, params: EncoderParams, progress: bool = True) -> dict:
    """Encode the keyword set at ``audio_root`` into ``out`` (new or empty); returns the manifest."""
    start = time.perf_counter()
    make_dir(out, "data.root (the keyword spike files)")
    stats = {}
    for split, list_name in _SPLITS.items():
        clips = speech_commands_index(audio_root, list_name)
        spikes = [None] * len(clips)
        with tqdm(total=len(clips), desc=f"spikes {split}", unit="clip", disable=not progress, leave=False) as bar:
            for first, audio in clip_batches(audio_root, clips):
                spikes[first:first + len(audio)] = encode(audio, params)
                bar.update(len(audio))
        counts = np.array([len(t) for t, _ in spikes])
        per_channel = np.zeros(params.channels, np.int64)
        active = []
        for _, u in spikes:
            np.add.at(per_channel, u.astype(np.int64), 1)
            active.append(len(np.unique(u)))
        write_spike_file(out / getattr(SPIKE_SET, split), [t for t, _ in spikes], [u for _, u in spikes],
                         [c.label for c in clips], speakers=[_speaker(c.relpath) for c in clips],
                         keys=list(CLASS_NAMES))
        stats[split] = {"samples": len(clips), "spikes_per_sample": float(counts.mean()) if len(clips) else 0.0,
                        "spikes_per_sample_max": int(counts.max()) if len(clips) else 0,
                        "silent_channels": float(np.mean(per_channel == 0)),
                        "silent_channels_per_sample": float(1.0 - np.mean(active) / params.channels) if active else 1.0}
    manifest = {"generator": "spinnray.data.keyword_spikes", "version": _VERSION, "encoder": asdict(params),
                "channels": params.channels, "source": _source(audio_root), "stats": stats,
                "generation_s": round(time.perf_counter() - start, 2)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _source(audio_root: Path) -> dict:
    """What identifies the keyword set at ``audio_root`` (from its manifest)."""
    try:
        m = json.loads((audio_root / AUDIO_MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{audio_root}: no readable {AUDIO_MANIFEST} ({e}); expected a keyword set made by "
                        "python -m spinnray.data.keywords") from None
    if not isinstance(m, dict):
        raise DataError(f"{audio_root / AUDIO_MANIFEST}: expected a JSON object")
    return {k: m.get(k) for k in ("generator", "version", "per_word", "seed", "espeak_ng")}


def _manifest(out: Path) -> dict | None:
    """The manifest at ``out`` if it is one of ours."""
    try:
        m = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("generator") == "spinnray.data.keyword_spikes" else None


def _current(out: Path, source: dict, params: EncoderParams) -> dict | None:
    """The manifest at ``out`` if it matches these parameters and source and every file is there."""
    m = _manifest(out)
    if m is None:
        return None
    want = json.loads(json.dumps(asdict(params)))                 # tuples as the JSON lists stored
    if (m.get("version"), m.get("encoder"), m.get("source")) != (_VERSION, want, source):
        return None
    return m if all((out / f).is_file() for f in SPIKE_SET.files().values()) else None


def ensure_keyword_spikes(out, audio_root, params: EncoderParams | None = None, *, progress: bool = True) -> dict:
    """The manifest of a complete spike set at ``out`` for ``params`` and the keyword set at ``audio_root``,
    generated (into a temporary sibling, then moved) only if needed; a non-empty ``out`` that is not
    ours is never touched."""
    out, audio_root, params = Path(out), Path(audio_root), params or EncoderParams()
    m = _current(out, _source(audio_root), params)
    if m is not None:
        return m
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and _manifest(out) is None)):
        raise DataError(f"{out} exists and is not a spike set made by spinnray (no {MANIFEST}); expected a new, "
                        "empty or previously generated directory")
    m = build_replacing(out, lambda tmp: generate_keyword_spikes(tmp, audio_root, params, progress))
    log.info("spiking keyword set (%d channels, %.0f spikes per training sample) written to %s in %.1f s",
             m["channels"], m["stats"]["train"]["spikes_per_sample"], out, m["generation_s"])
    return m


def encoder_params(cfg: SHDConfig) -> EncoderParams:
    """The front end ``data.*`` asks for."""
    return EncoderParams(bands=cfg.bands, levels_db=tuple(cfg.levels_db), hysteresis_db=cfg.hysteresis_db,
                         smooth_ms=cfg.smooth_ms)


def audio_path(cfg: SHDConfig) -> Path:
    return Path(cfg.audio_root or "~/.cache/spinnray/keywords").expanduser()


def spikes_path(cfg: SHDConfig) -> Path:
    return Path(cfg.root or "~/.cache/spinnray/keyword_spikes").expanduser()


@register("keyword_spikes", SHDConfig)
def load(cfg: SHDConfig, timing: Timing, progress: bool = True) -> Dataset:
    params = encoder_params(cfg)                 # refuses bad front-end options before any work
    audio = ensure_keyword_dataset(audio_path(cfg), per_word=cfg.per_word, seed=cfg.data_seed, progress=progress)
    out = spikes_path(cfg)
    m = ensure_keyword_spikes(out, audio, params, progress=progress)
    paths = {s: out / f for s, f in SPIKE_SET.files().items()}
    return spike_dataset(cfg.name, paths, m["channels"], timing, cfg.duration_ms, limit=cfg.limit)
