"""The espeak-ng keyword set (spinnray.data.keywords): its numpy parts, and a clear error without espeak-ng.
The generated files themselves are checked in tests/integration/test_keywords.py."""

import numpy as np
import pytest

import spinnray.data.keywords as kw
from spinnray.data.keywords import (
    ensure_keyword_dataset,
    noise,
    plan_keyword_dataset,
    resample_fft,
    speakers,
)
from spinnray.data.speech import KEYWORDS
from spinnray.errors import ConfigError, DataError


def test_resample_fft_matches_the_tone_sampled_at_16k():
    def tone(rate, f, seconds=0.5):
        t = np.arange(int(seconds * rate)) / rate
        envelope = np.sin(np.pi * t / seconds) ** 2  # smooth ends, so the FFT's periodic wrap is harmless
        return envelope * np.sin(2 * np.pi * f * t)

    for f in (440.0, 1000.0, 3700.0):
        y = resample_fft(tone(22050, f))
        ref = tone(16000, f)
        assert y.shape == ref.shape == (8000,)
        np.testing.assert_allclose(y, ref, atol=2e-3)
    # content above the new Nyquist frequency (8 kHz) is removed
    assert np.abs(resample_fft(tone(22050, 9500.0))).max() < 1e-2
    assert resample_fft(np.ones(441 * 3 + 7)).shape == (round((441 * 3 + 7) * 320 / 441),)


@pytest.mark.parametrize("kind, slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_noise_spectral_slopes(kind, slope):
    y = noise(kind, 2**16, np.random.default_rng(0))
    assert np.mean(y * y) == pytest.approx(1.0)
    power = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / 16000)
    band = (f > 100) & (f < 6000)
    fitted = np.polyfit(np.log(f[band]), np.log(power[band]), 1)[0]
    assert abs(fitted - slope) < 0.15


def test_hum_is_at_50_hz_and_noise_is_seeded():
    y = noise("hum", 16000, np.random.default_rng(1))
    f = np.fft.rfftfreq(16000, 1 / 16000)
    assert f[np.argmax(np.abs(np.fft.rfft(y)))] == 50.0
    np.testing.assert_array_equal(noise("pink", 1000, np.random.default_rng(3)),
                                  noise("pink", 1000, np.random.default_rng(3)))
    with pytest.raises(ConfigError, match="kind = 'blue'"):
        noise("blue", 10, np.random.default_rng(0))


def test_plan_splits_speakers_and_counts():
    plans, by_split = plan_keyword_dataset(20, seed=4)
    pools = {s: {p.id for p in v} for s, v in by_split.items()}
    assert sum(len(v) for v in pools.values()) == len(speakers()) == 7 * 24 * 4
    assert len(pools["validation"]) == len(pools["testing"]) == round(0.1 * len(speakers()))
    assert not (pools["training"] & pools["validation"]) and not (pools["training"] & pools["testing"])
    assert not (pools["validation"] & pools["testing"])
    for p in plans:
        assert p.speaker.id in pools[p.split]
        assert p.relpath.startswith(f"{p.word}/{p.speaker.id}_nohash_")
    assert len({p.relpath for p in plans}) == len(plans)
    for word in KEYWORDS:
        splits = [p.split for p in plans if p.word == word]
        assert (splits.count("training"), splits.count("validation"), splits.count("testing")) == (16, 2, 2)
    assert sum(p.word == "marvin" for p in plans) == 5  # ceil(20 / 4)
    assert plan_keyword_dataset(20, seed=4)[0] == plans and plan_keyword_dataset(20, seed=5)[0] != plans
    with pytest.raises(ConfigError, match="per_word = 0"):
        plan_keyword_dataset(0, 0)


def test_missing_espeak_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(kw.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install -y espeak-ng"):
        ensure_keyword_dataset(tmp_path / "set", per_word=3, seed=0)
    assert not (tmp_path / "set").exists()
