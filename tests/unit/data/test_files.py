"""spinnray.data.files: a user's data set as .npz files, read back exactly, and refused naming the file and
the array when it does not fit the documented layout."""

import numpy as np
import pytest

from spinnray.data.base import Timing
from spinnray.data.files import FilesConfig, load, write_analog, write_events
from spinnray.errors import ConfigError, DataError


def _events(path, labels, sample, channel, step, channels=3, steps=5, **kw):
    write_events(path, labels, sample, channel, step, channels, steps, **kw)


def test_spike_events_load_as_the_raster_they_describe(tmp_path):
    _events(tmp_path / "train.npz", [1, 0], [0, 0, 1], [2, 0, 1], [0, 4, 3], class_names=["no", "yes"])
    _events(tmp_path / "test.npz", [0], [0], [1], [2])
    ds = load(FilesConfig(path=str(tmp_path)), Timing(1.0))
    assert (ds.input_kind, ds.n_inputs, ds.steps, ds.class_names) == ("spikes", 3, 5, ["no", "yes"])
    assert ds.val is None and ds.train.labels.tolist() == [1, 0]
    want = np.zeros((5, 2, 3), bool)
    want[[0, 4, 3], [0, 0, 1], [2, 0, 1]] = True
    assert np.array_equal(ds.train.batch(np.arange(2)), want)
    one = np.zeros((5, 3), bool)
    one[2, 1] = True
    assert np.array_equal(ds.test.batch(np.arange(1))[:, 0], one)


def test_analog_input_loads_as_float32_and_the_limit_takes_the_first_samples(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 6, 2))
    write_analog(tmp_path / "train.npz", [0, 1, 2, 1], x)
    write_analog(tmp_path / "test.npz", [2], x[:1])
    ds = load(FilesConfig(path=str(tmp_path), limit=3), Timing(1.0))
    assert (ds.input_kind, ds.n_inputs, ds.steps, ds.class_names) == ("analog", 2, 6, ["0", "1", "2"])
    assert len(ds.train) == 3 and ds.train.labels.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(ds.train.batch(np.arange(3)), x[:3].astype(np.float32).transpose(1, 0, 2))


def test_what_does_not_fit_the_layout_is_refused_naming_file_and_array(tmp_path):
    with pytest.raises(ConfigError, match="data.path = null"):
        load(FilesConfig(), Timing(1.0))
    with pytest.raises(DataError, match="not a directory"):
        load(FilesConfig(path=str(tmp_path / "nowhere")), Timing(1.0))
    _events(tmp_path / "test.npz", [0], [0], [1], [2])
    with pytest.raises(DataError, match=r"train.npz: no such file"):
        load(FilesConfig(path=str(tmp_path)), Timing(1.0))
    _events(tmp_path / "train.npz", [0, 1], [0, 1], [0, 3], [0, 0])               # channel 3 of 3
    with pytest.raises(DataError, match=r"train.npz: event_channel 3 outside \[0, 3\)"):
        load(FilesConfig(path=str(tmp_path)), Timing(1.0))
    _events(tmp_path / "train.npz", [0, 1], [0, 1], [0, 1], [0, 0], steps=5)
    _events(tmp_path / "test.npz", [0], [0], [1], [4])
    with pytest.raises(DataError, match=r"test.npz: event step 4 outside \[0, 3\) \(the network's network.steps\)"):
        load(FilesConfig(path=str(tmp_path)), Timing(1.0, steps=3))
    write_analog(tmp_path / "test.npz", [0], np.zeros((1, 5, 3)))
    with pytest.raises(DataError, match=r"the files disagree on \(input kind, channels, steps\)"):
        load(FilesConfig(path=str(tmp_path)), Timing(1.0))
