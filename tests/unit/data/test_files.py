"""data.name=files: a user's data set in the documented .npz layout, read without pickle; every
defect refused naming the file, the array and what was expected."""

import numpy as np
import pytest

from spinnray.config import from_dict
from spinnray.data.base import NpzRows, Timing
from spinnray.data.files import FilesConfig, load, write_analog, write_events
from spinnray.errors import ConfigError, DataError


def _cfg(path, **kw):
    return from_dict(FilesConfig, {"path": str(path), **kw}, "data")


def test_spike_events_become_rasters_and_time_is_binned(tmp_path):
    write_events(tmp_path / "train.npz", [0, 1], [0, 0, 1], [2, 0, 1], [3, 5, 0], channels=3, steps=8,
                 class_names=["a", "b"])
    np.savez(tmp_path / "test.npz", labels=np.array([1]), event_sample=np.array([0]), event_channel=np.array([2]),
             event_time_ms=np.array([2.6]), channels=np.int64(3), steps=np.int64(8))
    d = load(_cfg(tmp_path), Timing(dt_ms=0.5))
    assert (d.input_kind, d.n_inputs, d.steps, d.class_names, d.val) == ("spikes", 3, 8, ["a", "b"], None)
    x = d.train.batch(np.array([0, 1]))
    assert x.shape == (8, 2, 3) and x.dtype == bool and x.sum() == 3
    assert x[3, 0, 2] and x[5, 0, 0] and x[0, 1, 1]
    assert d.test.batch(np.array([0]))[5, 0, 2]           # 2.6 ms at 0.5 ms per step: step 5
    with pytest.raises(DataError, match=r"event step 10 outside \[0, 8\) \(the file.s steps\)"):
        load(_cfg(tmp_path), Timing(dt_ms=0.25))           # 2.6 ms is step 10 of the file's 8


def test_analog_input_and_limit(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7, 4))
    write_analog(tmp_path / "train.npz", [0, 1, 2, 1, 0], x)
    write_analog(tmp_path / "test.npz", [2, 0], x[:2])
    write_analog(tmp_path / "val.npz", [1], x[:1])
    d = load(_cfg(tmp_path, limit=3), Timing(dt_ms=1.0))
    assert (d.input_kind, d.n_inputs, d.steps, d.n_classes, len(d.train), len(d.val)) == ("analog", 4, 7, 3, 3, 1)
    np.testing.assert_array_equal(d.train.batch(np.array([2, 0])), x[[2, 0]].transpose(1, 0, 2).astype(np.float32))
    with pytest.raises(DataError, match="network.steps = 9"):
        load(_cfg(tmp_path), Timing(dt_ms=1.0, steps=9))


def test_analog_input_is_read_per_batch_unless_compressed(tmp_path):
    """An uncompressed archive's x stays in the file (read per batch), a compressed one is held as
    float32; both give the same batches, and a non-finite value anywhere in the kept rows is refused."""
    x = np.random.default_rng(1).normal(size=(6, 5, 3))
    write_analog(tmp_path / "train.npz", [0, 1, 0, 1, 0, 1], x)
    np.savez_compressed(tmp_path / "test.npz", labels=np.array([0, 1, 0, 1, 0, 1]), x=x)
    d = load(_cfg(tmp_path), Timing(dt_ms=1.0))
    assert isinstance(d.train.x, NpzRows) and isinstance(d.test.x, np.ndarray) and d.test.x.dtype == np.float32
    idx = np.array([5, 2, 2])
    np.testing.assert_array_equal(d.train.batch(idx), d.test.batch(idx))
    np.testing.assert_array_equal(d.train.batch(idx), x[idx].astype(np.float32).transpose(1, 0, 2))
    x[5, 4, 2] = np.inf                                   # beyond data.limit: not looked at
    write_analog(tmp_path / "train.npz", [0, 1, 0, 1, 0, 1], x)
    assert len(load(_cfg(tmp_path, limit=5), Timing(dt_ms=1.0)).train) == 5
    with pytest.raises(DataError, match="train.npz: x holds non-finite values"):
        load(_cfg(tmp_path), Timing(dt_ms=1.0))


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((2, 3, 1))}, "no array 'labels'"),
    ({"labels": np.array([0.5, 1.0]), "x": np.zeros((2, 3, 1))}, "labels has shape"),
    ({"labels": np.array([0, -1]), "x": np.zeros((2, 3, 1))}, "labels hold -1"),
    ({"labels": np.array([0, 1]), "x": np.zeros((3, 3, 1))}, "x has shape"),
    ({"labels": np.array([0, 1]), "x": np.full((2, 3, 1), np.nan)}, "non-finite"),
    ({"labels": np.array([0, 1])}, "neither x"),
    ({"labels": np.array([0]), "event_sample": np.array([0]), "event_channel": np.array([5]),
      "event_step": np.array([0]), "channels": np.int64(3), "steps": np.int64(4)}, "event_channel 5 outside"),
    ({"labels": np.array([0]), "event_sample": np.array([0]), "event_channel": np.array([0]),
      "event_step": np.array([0]), "channels": np.int64(0), "steps": np.int64(4)}, "channels = 0; expected an integer scalar"),
])
def test_defects_are_refused_naming_the_array(tmp_path, arrays, message):
    np.savez(tmp_path / "train.npz", **arrays)
    write_analog(tmp_path / "test.npz", [0], np.zeros((1, 3, 1)))
    with pytest.raises(DataError, match=message):
        load(_cfg(tmp_path), Timing(dt_ms=1.0))


def test_pickled_or_corrupt_files_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "train.npz", labels=np.array([0], dtype=object), x=np.zeros((1, 2, 1)))
    write_analog(tmp_path / "test.npz", [0], np.zeros((1, 2, 1)))
    with pytest.raises(DataError, match="train.npz: not a readable .npz archive"):
        load(_cfg(tmp_path), Timing(dt_ms=1.0))
    (tmp_path / "train.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DataError, match="train.npz"):
        load(_cfg(tmp_path), Timing(dt_ms=1.0))
    with pytest.raises(DataError, match="not a directory"):
        load(_cfg(tmp_path / "missing"), Timing(dt_ms=1.0))
    with pytest.raises(ConfigError, match="data.path = null"):
        load(from_dict(FilesConfig, {}, "data"), Timing(dt_ms=1.0))
