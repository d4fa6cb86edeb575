"""Speech Commands v1: features against hand-written references, and the loader on real-format WAV files."""

import math
import os
import wave

import numpy as np
import pytest

import spinnray.data.speech as speech
from spinnray.data.speech import (
    CLASS_NAMES,
    FeatureParams,
    deltas,
    feature_scale,
    load_speech_commands,
    mel_filterbank,
    power_spectrum,
    read_wav,
    speech_commands_index,
    speech_features,
)
from spinnray.data.base import NpzRows
from spinnray.errors import ConfigError, DataError

SR = 16000


def htk_edges(n_mels=40, fmin=20.0, fmax=4000.0):
    """Band edges in Hz written out from the HTK mel formula (independent of the module)."""
    lo, hi = 2595.0 * math.log10(1 + fmin / 700.0), 2595.0 * math.log10(1 + fmax / 700.0)
    return [700.0 * (10 ** ((lo + (hi - lo) * i / (n_mels + 1)) / 2595.0) - 1) for i in range(n_mels + 2)]


def test_mel_filterbank_shape_and_partition_of_unity():
    bank = mel_filterbank()
    assert bank.shape == (40, 257)
    assert (bank >= 0).all() and bank.max() <= 1.0 + 1e-12
    assert (bank.max(axis=1) > 0).all()  # every band sees at least one FFT bin
    freqs = np.arange(257) * SR / 512
    edges = htk_edges()
    assert bank[:, (freqs <= 20.0) | (freqs >= 4000.0)].sum() == 0
    # between the first and the last centre, adjacent triangles sum to 1
    inside = (freqs >= edges[1]) & (freqs <= edges[40])
    np.testing.assert_allclose(bank[:, inside].sum(axis=0), 1.0, atol=1e-12)
    # band j is nonzero only strictly between edges j and j+2
    for j in range(40):
        nz = freqs[bank[j] > 0]
        assert nz.min() > edges[j] and nz.max() < edges[j + 2]
    # centres grow
    assert np.all(np.diff(np.argmax(bank, axis=1)) >= 0)


@pytest.mark.parametrize("band", [4, 17, 30, 38])
def test_pure_tone_peaks_in_its_band(band):
    f = htk_edges()[band + 1]  # the centre of this band
    t = np.arange(SR) / SR
    tone = np.round(0.3 * 32767 * np.sin(2 * np.pi * f * t)).astype(np.int16)
    feats = speech_features(tone)
    assert feats.shape == (100, 80) and feats.dtype == np.float32
    mel = feats[5:95, :40]
    assert np.all(np.argmax(mel, axis=1) == band)
    # a steady tone: its band's delta is ~0 away from the edges
    assert np.abs(feats[10:90, 40 + band]).max() < 1e-3
    # a tone switched on at 0.5 s: the delta of its band peaks at the onset, positive
    onset = speech_features(np.where(t >= 0.5, tone, 0).astype(np.int16))
    assert np.argmax(onset[:, 40 + band]) in (49, 50, 51) and onset[50, 40 + band] > 1.0


def test_power_spectrum_equals_a_hand_written_dft():
    rng = np.random.default_rng(5)
    x = rng.integers(-20000, 20000, SR).astype(np.int16)
    P = power_spectrum(x)
    assert P.shape == (100, 257)
    xf = x.astype(np.float64) / 32768.0
    n = np.arange(480)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 480)
    k = np.arange(257)[:, None]
    for t in (0, 1, 37, 99):
        frame = np.zeros(480)
        for i in range(480):  # centred frame, zeros outside the clip
            s = 160 * t - 240 + i
            if 0 <= s < SR:
                frame[i] = xf[s]
        dft = (frame * window * np.exp(-2j * np.pi * k * n[None, :] / 512)).sum(axis=1)
        np.testing.assert_allclose(P[t], np.abs(dft) ** 2, rtol=1e-9, atol=1e-9)


def test_deltas_match_the_regression_formula():
    rng = np.random.default_rng(1)
    c = rng.normal(size=(2, 12, 3))
    d = deltas(c, width=2)
    for b in range(2):
        for t in range(12):
            num = sum(n * (c[b, min(t + n, 11)] - c[b, max(t - n, 0)]) for n in (1, 2))
            np.testing.assert_allclose(d[b, t], num / 10.0)
    ramp = np.arange(20.0)[:, None] * 0.5
    np.testing.assert_allclose(deltas(ramp)[2:-2], 0.5)


def test_log_and_delta_channels_and_padding():
    rng = np.random.default_rng(2)
    x = rng.integers(-5000, 5000, 8000).astype(np.int16)  # half a second
    padded = np.concatenate([x, np.zeros(8000, np.int16)])
    longer = np.concatenate([padded, rng.integers(-5000, 5000, 3000).astype(np.int16)])
    a, b, c = speech_features(x), speech_features(padded), speech_features(longer)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)  # cropped to 1 s
    ref = np.log(power_spectrum(x) @ mel_filterbank().T + 1e-6)
    np.testing.assert_allclose(a[:, :40], ref, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(a[:, 40:], deltas(ref), rtol=1e-5, atol=1e-5)
    # digital silence is log(eps)
    np.testing.assert_allclose(speech_features(np.zeros(SR, np.int16))[:, :40], np.log(1e-6), rtol=1e-6)


def test_feature_params_validation():
    with pytest.raises(ConfigError, match="fmax_hz = 9000"):
        FeatureParams(fmax_hz=9000.0)
    with pytest.raises(ConfigError, match="n_fft = 256"):
        FeatureParams(n_fft=256)
    with pytest.raises(ConfigError, match="cover no FFT bin"):
        mel_filterbank(FeatureParams(n_mels=200, fmin_hz=0.0))


def write(path, samples, rate=SR, channels=1, width=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples).astype("<i2" if width == 2 else "u1").tobytes())


FREQ = {"yes": 400.0, "no": 900.0, "up": 1500.0, "bed": 2200.0, "cat": 3000.0}


def make_dataset(root, n_speakers=10):
    """Words of tones; speaker s's clips go to validation if s % 5 == 1, testing if s % 5 == 2."""
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    val, test = [], []
    for word, f in FREQ.items():
        for s in range(n_speakers):
            n = SR if s % 3 else 12000  # some clips shorter than 1 s, as in the real set
            y = 8000 * np.sin(2 * np.pi * f * (1 + 0.01 * s) * t[:n]) + rng.normal(0, 300, n)
            rel = f"{word}/{s:08x}_nohash_0.wav"
            write(root / rel, np.round(y).astype(np.int16))
            (val if s % 5 == 1 else test if s % 5 == 2 else []).append(rel)
    noise = root / "_background_noise_"
    write(noise / "white.wav", rng.integers(-3000, 3000, 3 * SR).astype(np.int16))
    write(noise / "hum.wav", np.round(2000 * np.sin(2 * np.pi * 50 * np.arange(2 * SR) / SR)).astype(np.int16))
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return set(val), set(test)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "speech_commands_v0.01"
    val, test = make_dataset(root)
    return root, val, test


def test_split_membership_and_class_mapping(dataset):
    root, val, test = dataset
    seen = {}
    for split, listed in (("training", None), ("validation", val), ("testing", test)):
        clips = speech_commands_index(root, split)
        words = [c for c in clips if not c.relpath.startswith("_background_noise_/")]
        keyword = [c for c in words if c.label < 10]
        # keywords: every clip of yes/no/up in the split, none other
        if listed is None:
            expected = {f"{w}/{s:08x}_nohash_0.wav" for w in ("yes", "no", "up") for s in range(10)} - val - test
        else:
            expected = {p for p in listed if p.split("/")[0] in ("yes", "no", "up")}
        assert {c.relpath for c in keyword} == expected
        for c in keyword:
            assert CLASS_NAMES[c.label] == c.relpath.split("/")[0]
        unknown = [c for c in words if c.label == 11]
        assert all(c.relpath.split("/")[0] in ("bed", "cat") for c in unknown)
        others = {f"{w}/{s:08x}_nohash_0.wav" for w in ("bed", "cat") for s in range(10)}
        available = others - val - test if listed is None else others & listed
        assert {c.relpath for c in unknown} <= available
        assert len(unknown) == min(math.ceil(0.1 * len(keyword)), len(available))
        silence = [c for c in clips if c.label == 10]
        assert len(silence) == math.ceil(0.1 * len(keyword))
        for c in silence:
            assert c.relpath in ("_background_noise_/white.wav", "_background_noise_/hum.wav")
            length = 3 * SR if c.relpath.endswith("white.wav") else 2 * SR
            assert 0 <= c.offset <= length - SR
        if listed is not None:
            assert {c.relpath for c in words} <= listed
        seen[split] = {c.relpath for c in words}
    assert not (seen["training"] & seen["validation"]) and not (seen["training"] & seen["testing"])
    assert not (seen["validation"] & seen["testing"])


def test_loaded_features_equal_features_of_the_files(dataset, tmp_path):
    root, _, _ = dataset
    data = load_speech_commands(root, "training", cache_dir=tmp_path / "cache", rescale=None)
    x, labels, names = data
    assert names == CLASS_NAMES and x.dtype == np.float32 and labels.dtype == np.int64
    assert x.shape == (len(data.clips), 100, 80)
    for row, clip in enumerate(data.clips):
        audio = read_wav(root / clip.relpath)
        if clip.label == 10:
            audio = audio[clip.offset : clip.offset + SR]
        np.testing.assert_allclose(x[row], speech_features(audio), rtol=1e-5, atol=1e-5)
        assert labels[row] == clip.label


def test_rescale_uses_the_training_maximum(dataset, tmp_path):
    root, _, _ = dataset
    kw = {"cache_dir": tmp_path / "cache"}
    raw_train = load_speech_commands(root, "training", rescale=None, **kw).x
    raw_val = load_speech_commands(root, "validation", rescale=None, **kw).x
    train = load_speech_commands(root, "training", **kw)
    val = load_speech_commands(root, "validation", **kw)
    assert np.abs(train.x[..., :40]).max() == pytest.approx(1.0)
    assert np.abs(train.x[..., 40:]).max() == pytest.approx(1.0)
    np.testing.assert_allclose(train.scale[:40], np.abs(raw_train[..., :40]).max())
    np.testing.assert_allclose(train.scale[40:], np.abs(raw_train[..., 40:]).max())
    np.testing.assert_array_equal(val.scale, train.scale)
    np.testing.assert_allclose(val.x * train.scale, raw_val, rtol=1e-6)
    np.testing.assert_array_equal(feature_scale(raw_train), train.scale)
    clip = load_speech_commands(root, "validation", rescale="clip", **kw).x
    np.testing.assert_allclose(np.abs(clip[..., :40]).max(axis=(1, 2)), 1.0, rtol=1e-6)


def test_cache_is_used_and_rebuilt_when_stale_or_corrupt(dataset, tmp_path, monkeypatch):
    root, _, _ = dataset
    cache = tmp_path / "cache"
    calls = []
    original = speech._compute_features

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(speech, "_compute_features", counting)
    first = load_speech_commands(root, "validation", cache_dir=cache, rescale=None)
    assert len(calls) == 1
    files = list(cache.glob("*.npz"))
    assert len(files) == 1
    second = load_speech_commands(root, "validation", cache_dir=cache, rescale=None)
    assert len(calls) == 1  # read from the cache, not recomputed
    np.testing.assert_array_equal(first.x, second.x)

    # corrupt: garbage in the file -> recomputed, same result
    files[0].write_bytes(b"not a zip file")
    third = load_speech_commands(root, "validation", cache_dir=cache, rescale=None)
    assert len(calls) == 2
    np.testing.assert_array_equal(first.x, third.x)
    load_speech_commands(root, "validation", cache_dir=cache, rescale=None)
    assert len(calls) == 2

    # stale: a WAV of the split changes -> recomputed with the new audio
    target = next(c for c in first.clips if c.label < 10)
    path = root / target.relpath
    write(path, np.zeros(SR, np.int16))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fourth = load_speech_commands(root, "validation", cache_dir=cache, rescale=None)
    assert len(calls) == 3
    row = [c.relpath for c in fourth.clips].index(target.relpath)
    np.testing.assert_allclose(fourth.x[row, :, :40], np.log(1e-6), rtol=1e-6)
    assert len(list(cache.glob("*.npz"))) == 1  # overwritten in place

    # other feature parameters -> another cache file
    load_speech_commands(root, "validation", cache_dir=cache, rescale=None, params=FeatureParams(n_mels=20))
    assert len(calls) == 4 and len(list(cache.glob("*.npz"))) == 2

    # no cache at all
    load_speech_commands(root, "validation", cache=False, rescale=None)
    assert len(calls) == 5


def test_features_read_per_batch_equal_the_held_ones_and_are_not_held(dataset, tmp_path):
    """resident=False: a split reads its rows from the cache file per batch and divides them by the
    training scale, giving the held features bit for bit; the cache file it opened stays its source
    even if the cache is replaced; without a cache the features are held."""
    root, _, _ = dataset
    kw = {"cache_dir": tmp_path / "cache"}
    for split in ("training", "validation"):
        held = load_speech_commands(root, split, **kw)
        streamed = load_speech_commands(root, split, resident=False, **kw)
        assert isinstance(streamed.x, NpzRows) and not streamed.resident
        np.testing.assert_array_equal(streamed.scale, held.scale)
        idx = np.arange(len(held))[::-1]
        np.testing.assert_array_equal(streamed.split().batch(idx), held.split().batch(idx))
        np.testing.assert_array_equal(streamed.split().batch(idx), held.x[idx].transpose(1, 0, 2))
        part = streamed.split(limit=3)
        assert len(part) == 3 and part.x.row_shape == (100, 80)
        held_bytes = [v.nbytes for v in vars(part).values() if isinstance(v, np.ndarray)]
        assert held_bytes == [3 * 8, 80 * 4]                   # the labels and the divisor
    part = load_speech_commands(root, "validation", resident=False, **kw).split()
    before = part.batch(np.arange(len(part)))
    cache = part.x.path
    cache.with_suffix(".tmp").write_bytes(b"replaced")
    os.replace(cache.with_suffix(".tmp"), cache)
    np.testing.assert_array_equal(part.batch(np.arange(len(part))), before)
    uncached = load_speech_commands(root, "validation", cache=False, resident=False)
    assert isinstance(uncached.x, np.ndarray)
    np.testing.assert_array_equal(uncached.split().batch(np.arange(2)), before[:, :2])
    with pytest.raises(ConfigError, match="rescale = 'clip' with resident = False"):
        load_speech_commands(root, "validation", rescale="clip", resident=False, **kw)


def test_selection_is_seeded_and_capped(dataset):
    root, _, _ = dataset
    a = speech_commands_index(root, "training", seed=1)
    b = speech_commands_index(root, "training", seed=1)
    c = speech_commands_index(root, "training", seed=2)
    assert a == b and a != c
    # a seeded shuffle: the classes are mixed from the start, and the order is part of the seed's contract
    labels = [x.label for x in a]
    assert labels != sorted(labels) and len(set(labels[:8])) >= 3
    assert sorted(a) != a
    capped = speech_commands_index(root, "training", max_per_class=2)
    counts = np.bincount([x.label for x in capped], minlength=12)
    assert counts[:3].tolist() == [2, 2, 2] and counts[10] == 1 and counts[11] == 1  # ceil(0.1 * 6) = 1
    none = speech_commands_index(root, "training", silence_fraction=0.0, unknown_fraction=0.0)
    assert {x.label for x in none} == {0, 1, 2}


def test_errors_name_the_path(dataset, tmp_path):
    root, _, _ = dataset
    with pytest.raises(DataError, match="nowhere"):
        load_speech_commands(tmp_path / "nowhere", "training")
    with pytest.raises(ConfigError, match="split = 'train'"):
        load_speech_commands(root, "train")

    (root / "testing_list.txt").rename(root / "t.txt")
    with pytest.raises(DataError, match="testing_list.txt is missing"):
        speech_commands_index(root, "training")
    (root / "t.txt").rename(root / "testing_list.txt")

    bad = root / "yes" / "ffffffff_nohash_0.wav"
    write(bad, np.zeros(8000, np.int16), rate=8000)
    expected = r"ffffffff_nohash_0\.wav: 1 channel\(s\), 16-bit, 8000 Hz; expected .*16000 Hz"
    with pytest.raises(DataError, match=expected):
        load_speech_commands(root, "training", cache=False)
    write(bad, np.zeros(2 * SR, np.int16), channels=2)
    with pytest.raises(DataError, match="2 channel"):
        load_speech_commands(root, "training", cache=False)
    write(bad, np.full(SR, 128), width=1)
    with pytest.raises(DataError, match="8-bit"):
        load_speech_commands(root, "training", cache=False)
    bad.write_bytes(b"RIFF....junk")
    with pytest.raises(DataError, match="not a readable PCM WAV"):
        load_speech_commands(root, "training", cache=False)
    bad.unlink()

    with open(root / "validation_list.txt", "a") as f:
        f.write("yes/gone_nohash_0.wav\n")
    with pytest.raises(DataError, match="gone_nohash_0.wav"):
        speech_commands_index(root, "training")


def test_missing_noise_folder_is_an_error_only_when_silence_is_wanted(dataset):
    root, _, _ = dataset
    for f in (root / "_background_noise_").iterdir():
        f.unlink()
    (root / "_background_noise_").rmdir()
    with pytest.raises(DataError, match="_background_noise_ is missing"):
        speech_commands_index(root, "training")
    clips = speech_commands_index(root, "training", silence_fraction=0.0)
    assert 10 not in {c.label for c in clips}


@pytest.mark.parametrize("shown", [True, False])
def test_feature_extraction_shows_a_bar_unless_the_run_says_progress_false(tmp_path, capfd, shown):
    """load_dataset passes the run's ``progress`` to the loader: the feature extraction of each split
    shows a bar on stderr, and none with progress=false."""
    from spinnray.data.base import Timing, load_dataset
    from spinnray.data.speech import SpeechConfig

    root = tmp_path / "gsc"
    make_dataset(root, n_speakers=5)
    cfg = SpeechConfig(name="speech_commands", root=str(root), cache_dir=str(tmp_path / "cache"))
    load_dataset(cfg, Timing(1.0), progress=shown)
    err = capfd.readouterr().err
    assert ("training: " in err) == shown and ("testing: " in err) == shown, err[-300:]
