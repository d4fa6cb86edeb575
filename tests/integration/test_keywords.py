"""The espeak-ng keyword set, generated (needs espeak-ng): format, loader, speakers, determinism, CLI."""

import hashlib
import json
import wave

import numpy as np
import pytest

import spinnray.data.keywords as kw
import spinnray.data.keywords.cli as keywords_cli
from spinnray.data.keywords import (
    AUX_WORDS,
    ClipPlan,
    ensure_keyword_dataset,
    generate_keyword_dataset,
    render_clip,
    speakers,
)
from spinnray.data.speech import CLASS_NAMES, KEYWORDS, load_speech_commands, read_wav, speech_features
from spinnray.errors import DataError

needs_espeak = pytest.mark.skipif(not kw.espeak_available(), reason="espeak-ng is not installed (see .ci/run)")


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
    assert keywords_cli.main([str(foreign), "--per-word", "3", "--no-progress"]) == 2
    assert "not a keyword set" in capsys.readouterr().err

    out = tmp_path / "cli"
    assert keywords_cli.main([str(out), "--per-word", "3", "--seed", "2", "--no-progress"]) == 0
    assert "60 clips" in capsys.readouterr().out
    assert keywords_cli.main([str(out), "--per-word", "3", "--seed", "2", "--no-progress"]) == 0
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
