"""The espeak-ng keyword set: layout read back by the Speech Commands loader, speakers, format, determinism."""

import hashlib
import json
import wave

import numpy as np
import pytest

import spinnray.data.keywords as kw
from spinnray.data.keywords import (
    AUX_WORDS,
    ClipPlan,
    ensure_keyword_dataset,
    generate_keyword_dataset,
    noise,
    plan_keyword_dataset,
    render_clip,
    resample_fft,
    speakers,
)
from spinnray.data.speech import CLASS_NAMES, KEYWORDS, load_speech_commands, read_wav, speech_features
from spinnray.errors import ConfigError, DataError

needs_espeak = pytest.mark.skipif(not kw.espeak_available(), reason="espeak-ng is not installed (see .ci/run)")


# --------------------------------------------------------------------------- #
# numpy parts, no espeak-ng needed
# --------------------------------------------------------------------------- #
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


# --------------------------------------------------------------------------- #
# generated files
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    if not kw.espeak_available():
        pytest.skip("espeak-ng is not installed (see .ci/run)")
    return ensure_keyword_dataset(tmp_path_factory.mktemp("kw") / "set", per_word=3, seed=0, progress=False)


def all_files(root):
    return sorted(p for p in root.rglob("*") if p.is_file() and ".spinnray_cache" not in p.parts)


@needs_espeak
def test_wav_format_and_not_silent(tiny):
    clips = [p for p in all_files(tiny) if p.suffix == ".wav" and p.parent.name != "_background_noise_"]
    assert len(clips) == 10 * 3 + 10 * 3
    digests = set()
    for path in clips:
        with wave.open(str(path)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 16000)
        x = read_wav(path).astype(np.float64)
        frame_db = 10 * np.log10(np.mean(x[: 16000 // 160 * 160].reshape(-1, 160) ** 2, axis=1) + 1e-3)
        assert np.abs(x).max() > 0.02 * 32768  # speech peak at -30 dBFS or louder
        assert frame_db.max() - np.median(frame_db) > 6.0  # the word stands out of the noise
        digests.add(hashlib.sha256(x.tobytes()).hexdigest())
    assert len(digests) == len(clips)
    for path in (tiny / "_background_noise_").iterdir():
        with wave.open(str(path)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 60 * 16000)


@needs_espeak
def test_loader_reads_the_set_with_speaker_disjoint_splits(tiny, tmp_path):
    speakers_of = {}
    for split in ("training", "validation", "testing"):
        data = load_speech_commands(tiny, split, cache_dir=tmp_path / "cache")
        x, labels, names = data
        assert names == CLASS_NAMES and x.shape == (len(labels), 100, 80) and np.isfinite(x).all()
        words = [c for c in data.clips if not c.relpath.startswith("_background_noise_/")]
        for c in words:
            word = c.relpath.split("/")[0]
            assert names[c.label] == (word if word in KEYWORDS else "_unknown_")
            assert word in KEYWORDS + AUX_WORDS
        # every keyword class is present in every split (3 clips: 1 train, 1 validation, 1 test)
        assert set(range(10)) <= set(labels.tolist())
        assert 10 in labels  # silence from the noise files
        speakers_of[split] = {c.relpath.split("/")[1].split("_")[0] for c in words}
    # every file of each split, not just the sampled ones: from the lists and the manifest
    files = json.loads((tiny / kw.MANIFEST).read_text())["files"]
    listed = {s: set((tiny / f"{s}_list.txt").read_text().split()) for s in ("validation", "testing")}
    by_split = {"validation": listed["validation"], "testing": listed["testing"],
                "training": set(files) - listed["validation"] - listed["testing"]}
    ids = {s: {f.split("/")[1].split("_")[0] for f in v} for s, v in by_split.items()}
    assert not (ids["training"] & ids["validation"]) and not (ids["training"] & ids["testing"])
    assert not (ids["validation"] & ids["testing"])
    for split in speakers_of:
        assert speakers_of[split] <= ids[split]


@needs_espeak
def test_generation_is_deterministic_and_ensure_does_not_regenerate(tiny, tmp_path, monkeypatch):
    again = generate_keyword_dataset(tmp_path / "again", per_word=3, seed=0, progress=False, workers=1)
    a, b = all_files(tiny), all_files(again)
    assert [p.relative_to(tiny) for p in a] == [p.relative_to(again) for p in b]
    for p, q in zip(a, b, strict=True):
        assert p.read_bytes() == q.read_bytes(), p.relative_to(tiny)

    def boom(*args, **kwargs):
        raise AssertionError("regenerated a complete set")

    monkeypatch.setattr(kw, "generate_keyword_dataset", boom)
    assert ensure_keyword_dataset(tiny, per_word=3, seed=0) == tiny
    # a set of ours with other parameters is replaced
    monkeypatch.undo()
    assert ensure_keyword_dataset(again, per_word=3, seed=1, progress=False) == again
    manifest = json.loads((again / kw.MANIFEST).read_text())
    assert manifest["seed"] == 1 and (again / manifest["files"][0]).is_file()
    assert (again / "yes").is_dir() and read_wav(again / manifest["files"][0]).shape == (16000,)
    assert sorted(f.name for f in (again / "yes").iterdir()) != sorted(f.name for f in (tiny / "yes").iterdir())


@needs_espeak
def test_ensure_refuses_a_foreign_directory_and_cli(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a keyword set made by spinnray"):
        ensure_keyword_dataset(foreign, per_word=3, seed=0)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert kw.main([str(foreign), "--per-word", "3", "--no-progress"]) == 2
    assert "not a keyword set" in capsys.readouterr().err

    out = tmp_path / "cli"
    assert kw.main([str(out), "--per-word", "3", "--seed", "2", "--no-progress"]) == 0
    assert "60 clips" in capsys.readouterr().out
    assert kw.main([str(out), "--per-word", "3", "--seed", "2", "--no-progress"]) == 0
    assert "already complete" in capsys.readouterr().out


@needs_espeak
def test_same_word_is_closer_than_other_words():
    """One speaker says every keyword twice (speeds 160 and 170 wpm, other noise): each word's repeat is its
    nearest neighbour among the other words' repeats (log-mel, Euclidean)."""
    speaker = speakers()[0]

    def mel(word, speed, seed):
        plan = ClipPlan("x", word, "training", speaker, speed, -12.0, 0.5, "white", 40.0, seed)
        return speech_features(render_clip(plan))[:, :40]

    first = {w: mel(w, 160, 1) for w in KEYWORDS}
    second = {w: mel(w, 170, 2) for w in KEYWORDS}
    hits = 0
    for w in KEYWORDS:
        same = np.linalg.norm(first[w] - second[w])
        other = min(np.linalg.norm(first[w] - second[v]) for v in KEYWORDS if v != w)
        hits += same < other
    assert hits >= 9
