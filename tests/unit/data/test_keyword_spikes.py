"""data.name=keyword_spikes: the level-crossing front end against a detector-by-detector reference, on tones
whose answer is known, and end to end on a tiny keyword set in the Speech Commands layout (no espeak-ng):
written in the SHD layout, read back by the SHD loader, regenerated only when its inputs change."""

import json

import h5py
import numpy as np
import pytest

from spinnray.config import from_dict
from spinnray.data.base import Timing, load_dataset
from spinnray.data.keyword_spikes import (MANIFEST, SPIKE_SET, EncoderParams, band_energies, crossings, encode,
                                          encoder_params, ensure_keyword_spikes)
from spinnray.data.keywords import MANIFEST as AUDIO_MANIFEST
from spinnray.data.keywords.cli import main as keywords_main
from spinnray.data.shd import SHDConfig
from spinnray.data.speech import CLASS_NAMES, hz_to_mel, mel_to_hz, read_wav, speech_commands_index, write_wav
from spinnray.errors import ConfigError, DataError

from helpers import composed

HOP_S = 80 / 16000


def _reference(e, levels, hysteresis):
    """Detector by detector, frame by frame: (time, channel) pairs of one clip's energies (frames, bands)."""
    frames, bands = e.shape
    out = []
    for b in range(bands):
        for k, level in enumerate(levels):
            above = False
            for f in range(frames):
                hi, lo = level + hysteresis / 2, level - hysteresis / 2
                if not above and e[f, b] >= hi:
                    above, cross, ch = True, hi, b * len(levels) + k
                elif above and e[f, b] <= lo:
                    above, cross, ch = False, lo, bands * len(levels) + b * len(levels) + k
                else:
                    continue
                t = f * HOP_S if f == 0 else (f - 1) * HOP_S + HOP_S * (cross - e[f - 1, b]) / (e[f, b] - e[f - 1, b])
                out.append((t, ch))
    return sorted(out)


@pytest.mark.parametrize("hysteresis", [0.0, 3.0])
def test_crossings_match_a_detector_by_detector_reference(hysteresis):
    rng = np.random.default_rng(0)
    p = EncoderParams(bands=5, levels_db=(-4.0, -9.0, -15.0), hysteresis_db=hysteresis)
    e = np.cumsum(rng.normal(0, 3, (3, 60, 5)), axis=1) - 10          # random walks through the levels
    e[1, :] = -50.0                                                   # a silent clip: no spikes
    e[2, 0, 2] = 0.0                                                  # a detector above at the first frame
    got = crossings(e, p)
    for i in range(3):
        want = _reference(e[i], p.levels_db, hysteresis)
        t, ch = got[i]
        assert t.dtype == np.float32 and ch.dtype == np.uint16 and np.all(np.diff(t) >= 0)
        assert len(t) == len(want)
        order = np.lexsort((ch, t))                                   # both sorted by (time, channel)
        np.testing.assert_allclose(t[order], [w[0] for w in want], atol=1e-6)
        np.testing.assert_array_equal(ch[order], [w[1] for w in want])
    assert len(got[1][0]) == 0 and (0.0, 2 * 3 + 0) in [(float(a), int(b)) for a, b in zip(*got[2])][:3]


def _tone(freq, start_s, stop_s, amp=0.3, noise=1e-4, seed=0):
    t = np.arange(16000) / 16000
    x = np.where((t >= start_s) & (t < stop_s), amp * np.sin(2 * np.pi * freq * t), 0.0)
    return x + noise * np.random.default_rng(seed).standard_normal(16000)


def test_a_tone_fires_its_band_at_onset_and_offset_at_any_level():
    p = EncoderParams()
    edges = mel_to_hz(np.linspace(hz_to_mel(p.fmin_hz), hz_to_mel(p.fmax_hz), p.bands + 2))
    band = 12
    audio = np.stack([_tone(edges[band + 1], 0.3, 0.6, noise=1e-3), 0.25 * _tone(edges[band + 1], 0.3, 0.6, noise=1e-3)])
    (t, ch), (t2, ch2) = encode(audio, p)
    n_lv = len(p.levels_db)
    on = ch < p.bands * n_lv
    bands_on = ch[on] // n_lv
    assert np.all(np.abs(bands_on.astype(int) - band) <= 3)           # only the tone's neighbourhood
    top = (ch == band * n_lv + 0)                                     # the tone's band, the highest level
    assert np.all(np.abs(t[top] - 0.3) < 0.03)                        # onset: within the window and smoothing
    top_off = (ch == p.bands * n_lv + band * n_lv + 0)
    assert top_off.sum() == 1 and abs(t[top_off][0] - 0.6) < 0.04     # offset
    np.testing.assert_array_equal(ch2, ch)                            # 12 dB quieter: the same code (the gain)
    np.testing.assert_allclose(t2, t, atol=1e-4)
    e = band_energies(audio, p)
    assert e.shape == (2, 200, 32) and e.max() <= 0.0


def _cfg(**kw):
    return from_dict(SHDConfig, {"name": "keyword_spikes", **kw}, "data")


def test_encoder_options_are_checked():
    with pytest.raises(ConfigError, match="levels_db = \\[\\]"):
        EncoderParams(levels_db=())
    with pytest.raises(ConfigError, match="distinct"):
        load_dataset(_cfg(levels_db=[-6, -6]), Timing(1.0))
    with pytest.raises(ConfigError, match="cover no FFT bin"):
        encoder_params(_cfg(bands=250))
    with pytest.raises(ConfigError, match=r"val_speakers = \[1\]: the spiking keyword set defines its validation"):
        _cfg(val_speakers=[1])


# ------------------------------------------------------------------ a tiny keyword set, end to end
WORDS = {"yes": 700.0, "no": 1500.0, "up": 3000.0, "bed": 400.0}


def _keyword_set(root, per_word=4, seed=0):
    """The Speech Commands layout with a manifest the keyword generator accepts as complete (per_word, seed)."""
    rng = np.random.default_rng(7)
    files, val, test = [], [], []
    for w, freq in WORDS.items():
        (root / w).mkdir(parents=True)
        for k in range(per_word):
            speaker = f"{0xa0 + k:08x}"
            rel = f"{w}/{speaker}_nohash_0.wav"
            x = _tone(freq * (1 + 0.02 * k), rng.uniform(0.1, 0.4), rng.uniform(0.5, 0.9), seed=k)
            write_wav(root / rel, np.round(x * 32767).astype(np.int16))
            files.append(rel)
            (val if k == 1 else test if k == 2 else []).append(rel)
    (root / "_background_noise_").mkdir()
    write_wav(root / "_background_noise_/white_noise.wav",
              np.round(0.01 * rng.standard_normal(32000) * 32767).astype(np.int16))
    (root / "validation_list.txt").write_text("".join(f"{p}\n" for p in val))
    (root / "testing_list.txt").write_text("".join(f"{p}\n" for p in test))
    (root / AUDIO_MANIFEST).write_text(json.dumps({
        "generator": "spinnray.data.keywords", "version": 1, "per_word": per_word, "seed": seed,
        "espeak_ng": "test", "files": files, "noise_files": ["_background_noise_/white_noise.wav"]}))
    return root


def test_written_in_the_shd_layout_and_read_back_by_the_shd_loader(tmp_path):
    audio = _keyword_set(tmp_path / "kw")
    cfg = _cfg(root=str(tmp_path / "spk"), audio_root=str(audio), per_word=4, bands=16, levels_db=[-6, -18, -30])
    d = load_dataset(cfg, Timing(1.0))
    assert (d.name, d.input_kind, d.n_inputs, d.steps, d.class_names) == ("keyword_spikes", "spikes", 96, 1000,
                                                                          list(CLASS_NAMES))
    manifest = json.loads((tmp_path / "spk" / MANIFEST).read_text())
    assert manifest["channels"] == 96 and manifest["encoder"]["levels_db"] == [-6, -18, -30]
    for split, list_name in (("train", "training"), ("val", "validation"), ("test", "testing")):
        clips = speech_commands_index(audio, list_name)
        sp = getattr(d, split)
        np.testing.assert_array_equal(sp.labels, [c.label for c in clips])
        with h5py.File(tmp_path / "spk" / getattr(SPIKE_SET, split), "r") as f:
            assert h5py.check_vlen_dtype(f["spikes/times"].dtype) == np.float32
            assert h5py.check_vlen_dtype(f["spikes/units"].dtype) == np.uint16
            assert [k.decode() for k in f["extra/keys"][()]] == list(CLASS_NAMES)
            speakers = f["extra/speaker"][()]
            times, units = f["spikes/times"][0], f["spikes/units"][0]
        assert speakers.tolist() == [int(c.relpath.split("/")[1][:8], 16) if "nohash" in c.relpath else -1
                                     for c in clips]
        x = sp.batch([0])                                             # the file's events, binned at 1 ms
        assert x.sum() == len(set(zip(np.floor(times.astype(np.float64) * 1000).astype(int), units)))
        assert manifest["stats"][split]["samples"] == len(clips)
    # a word clip's events are those of encoding its WAV directly
    i, clip = next((i, c) for i, c in enumerate(speech_commands_index(audio, "training")) if "nohash" in c.relpath)
    t, u = encode(read_wav(audio / clip.relpath)[None], encoder_params(cfg))[0]
    with h5py.File(tmp_path / "spk" / SPIKE_SET.train, "r") as f:
        np.testing.assert_array_equal(f["spikes/times"][i], t)
        np.testing.assert_array_equal(f["spikes/units"][i], u)


def test_regenerated_only_when_its_inputs_change(tmp_path):
    audio = _keyword_set(tmp_path / "kw")
    out = tmp_path / "spk"
    small = EncoderParams(bands=8, levels_db=(-10.0,))
    ensure_keyword_spikes(out, audio, small, progress=False)
    stamp = (out / SPIKE_SET.train).stat().st_mtime_ns
    assert ensure_keyword_spikes(out, audio, small, progress=False)["channels"] == 16
    assert (out / SPIKE_SET.train).stat().st_mtime_ns == stamp                    # current: not rewritten
    assert ensure_keyword_spikes(out, audio, EncoderParams(bands=8, levels_db=(-10.0, -20.0)),
                                 progress=False)["channels"] == 32                 # other parameters: rewritten
    (out / SPIKE_SET.test).unlink()
    assert ensure_keyword_spikes(out, audio, small, progress=False)["channels"] == 16     # incomplete: rewritten
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("x")
    with pytest.raises(DataError, match="is not a spike set made by spinnray"):
        ensure_keyword_spikes(other, audio, small, progress=False)
    with pytest.raises(DataError, match="no readable spinnray_keywords.json"):
        ensure_keyword_spikes(tmp_path / "new", tmp_path, small, progress=False)


def test_command_line(tmp_path, capsys):
    audio = _keyword_set(tmp_path / "kw", per_word=4)
    assert keywords_main(["spikes", "--root", str(tmp_path / "spk"), "--audio-root", str(audio), "--per-word", "4",
                          "--bands", "8", "--levels-db", "-10", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "16 channels" in out and "spikes per sample" in out and "silent" in out
    assert keywords_main(["spikes", "--root", str(tmp_path / "spk2"), "--audio-root", str(audio), "--per-word", "4",
                          "--hysteresis-db", "-1", "--no-progress"]) == 2
    assert "data.hysteresis_db = -1.0: expected >= 0.0" in capsys.readouterr().err


def test_hydra_config_selects_the_set_and_data_name_switches_to_shd(tmp_path):
    cfg = composed("data=keyword_spikes", "data.bands=16", "data.levels_db=[-6,-20]")
    typed = from_dict(SHDConfig, cfg.data, "data")
    assert typed.name == "keyword_spikes" and encoder_params(typed).channels == 64
    assert encoder_params(from_dict(SHDConfig, composed("data=keyword_spikes").data, "data")) == EncoderParams()
    shd = from_dict(SHDConfig, composed("data=keyword_spikes", "data.name=shd", f"data.root={tmp_path}").data, "data")
    assert (shd.name, shd.root) == ("shd", str(tmp_path))
    with pytest.raises(ConfigError, match=r"data.bands = 16: an option of data.name=keyword_spikes; data.name=shd "
                                          r"reads the published files \(expected 32\)"):
        from_dict(SHDConfig, composed("data=keyword_spikes", "data.name=shd", "data.bands=16").data, "data")
