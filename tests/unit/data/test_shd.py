"""data.name=shd / ssc: the published HDF5 layout (written here with h5py exactly as the sets store it),
binned to dt as 0/1 per step and channel, checked against a dense raster built event by event; the
split by speaker; every malformed file refused naming the file and the field."""

import h5py
import numpy as np
import pytest

from spinnray.config import from_dict
from spinnray.data.base import Timing, load_dataset
from spinnray.data.shd import CHANNELS, SHDConfig, read_spike_file, write_spike_file
from spinnray.errors import ConfigError, DataError

from helpers import composed


def _events(rng, n, hi_s=1.2, max_spikes=60):
    """Ragged spike times (s) and channels of ``n`` samples, some past 1 s, some in one 1 ms step twice."""
    times, units = [], []
    for i in range(n):
        k = int(rng.integers(0, max_spikes))
        t = rng.uniform(0, hi_s, k)
        u = rng.integers(0, CHANNELS, k)
        if k:                                         # a second spike of a channel within the same step
            t, u = np.append(t, t[0] + 1e-5), np.append(u, u[0])
        times.append(t)
        units.append(u)
    return times, units


def _write_h5(path, times, units, labels, speakers=None, keys=None, time_dtype=np.float16):
    """Write one file the way the published files are laid out (independently of write_spike_file)."""
    with h5py.File(path, "w") as f:
        t = f.create_dataset("spikes/times", (len(labels),), dtype=h5py.vlen_dtype(np.dtype(time_dtype)))
        u = f.create_dataset("spikes/units", (len(labels),), dtype=h5py.vlen_dtype(np.dtype(np.uint16)))
        for i in range(len(labels)):
            t[i], u[i] = np.asarray(times[i], time_dtype), np.asarray(units[i], np.uint16)
        f["labels"] = np.asarray(labels, np.uint16)
        if speakers is not None:
            f["extra/speaker"] = np.asarray(speakers, np.uint16)
        if keys is not None:
            f["extra/keys"] = np.asarray([k.encode() for k in keys])
        f["extra/meta_info/gender"] = np.zeros(len(labels), np.uint8)   # present in the published files; ignored


def _oracle(times, units, dt_ms, steps, time_dtype=np.float16):
    """(steps, N, 700) bool raster, one event at a time, from the times as stored (float16 in SHD)."""
    out = np.zeros((steps, len(times), CHANNELS), bool)
    for i, (ts, us) in enumerate(zip(times, units)):
        for t, u in zip(np.asarray(ts, time_dtype), us):
            step = int(np.floor(float(t) * 1000.0 / dt_ms))
            if step < steps:
                out[step, i, u] = True
    return out


def _cfg(root, **kw):
    return from_dict(SHDConfig, {"root": str(root), **kw}, "data")


@pytest.fixture
def shd_root(tmp_path):
    rng = np.random.default_rng(0)
    train = _events(rng, 9)
    test = _events(rng, 4)
    keys = [f"digit-{i}" for i in range(20)]
    _write_h5(tmp_path / "shd_train.h5", *train, labels=[0, 3, 19, 5, 5, 1, 2, 2, 7],
              speakers=[0, 1, 2, 0, 1, 2, 0, 1, 3], keys=keys)
    _write_h5(tmp_path / "shd_test.h5", *test, labels=[4, 0, 19, 8], speakers=[4, 5, 0, 1], keys=keys)
    return tmp_path, train, test, keys


@pytest.mark.parametrize("dt_ms", [1.0, 2.5, 10.0])
def test_binning_matches_an_event_by_event_raster(shd_root, dt_ms):
    root, train, test, keys = shd_root
    d = load_dataset(_cfg(root), Timing(dt_ms))
    steps = int(np.ceil(1000.0 / dt_ms))
    assert (d.name, d.input_kind, d.n_inputs, d.steps, d.class_names, d.val) == ("shd", "spikes", 700, steps, keys,
                                                                                    None)
    np.testing.assert_array_equal(d.train.labels, [0, 3, 19, 5, 5, 1, 2, 2, 7])
    expect = _oracle(*train, dt_ms, steps)
    idx = np.array([4, 0, 8, 2])
    x = d.train.batch(idx)
    assert x.dtype == bool and x.shape == (steps, 4, 700)
    np.testing.assert_array_equal(x, expect[:, idx])
    np.testing.assert_array_equal(d.test.batch(np.arange(4)), _oracle(*test, dt_ms, steps))
    # memory: 4 bytes per distinct (step, channel) of a sample, never a dense raster of the split
    assert d.train.keys.dtype == np.int32 and len(d.train.keys) == expect.sum()


def test_same_step_spikes_are_one_event_and_late_spikes_are_dropped_and_counted(tmp_path):
    _write_h5(tmp_path / "f.h5", [[0.0001, 0.0004, 0.0031, 0.999, 1.0, 1.7]], [[5, 5, 5, 6, 6, 7]], [2],
              time_dtype=np.float32)
    r = read_spike_file(tmp_path / "f.h5", CHANNELS, dt_ms=1.0, steps=1000)
    assert (r.spikes, r.dropped, r.merged) == (6, 2, 1)
    x = r.split.batch([0])
    assert x.sum() == 3 and x[0, 0, 5] and x[3, 0, 5] and x[999, 0, 6]
    assert r.keys is None                                    # no extra/keys: names default below
    write_spike_file(tmp_path / "shd_train.h5", [[0.0]], [[1]], [2])
    write_spike_file(tmp_path / "shd_test.h5", [[0.0]], [[1]], [0])
    assert load_dataset(_cfg(tmp_path), Timing(1.0)).class_names == ["0", "1", "2"]


def test_network_steps_and_duration_set_the_length(shd_root):
    root, train, _, _ = shd_root
    d = load_dataset(_cfg(root, duration_ms=250.0), Timing(2.0))
    assert d.steps == 125
    np.testing.assert_array_equal(d.train.batch(np.arange(9)), _oracle(*train, 2.0, 125))
    d = load_dataset(_cfg(root), Timing(1.0, steps=1300))           # network.steps: spikes up to 1.3 s kept
    np.testing.assert_array_equal(d.train.batch(np.arange(9)), _oracle(*train, 1.0, 1300))
    assert load_dataset(_cfg(root, limit=2), Timing(1.0)).train.labels.tolist() == [0, 3]


def test_validation_by_speaker_holds_the_speakers_out_of_training(shd_root):
    root, train, _, _ = shd_root
    d = load_dataset(_cfg(root, val_speakers=[1, 3]), Timing(5.0))
    held = np.array([1, 4, 7, 8])                             # the samples of speakers 1 and 3
    kept = np.array([0, 2, 3, 5, 6])
    np.testing.assert_array_equal(d.val.labels, [3, 5, 2, 7])
    full = _oracle(*train, 5.0, 200)
    np.testing.assert_array_equal(d.val.batch(np.arange(4)), full[:, held])
    np.testing.assert_array_equal(d.train.batch(np.arange(5)), full[:, kept])
    assert len(load_dataset(_cfg(root, val_speakers=[1], limit=2), Timing(5.0)).val) == 2
    with pytest.raises(ConfigError, match=r"speaker\(s\) \[9\] are not in shd_train.h5, whose speakers are "
                                          r"\[0, 1, 2, 3\]"):
        load_dataset(_cfg(root, val_speakers=[9]), Timing(1.0))
    with pytest.raises(ConfigError, match="every training sample"):
        load_dataset(_cfg(root, val_speakers=[0, 1, 2, 3]), Timing(1.0))


def test_ssc_uses_its_own_validation_file(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 5), ("valid", 3), ("test", 2)):
        times, units = _events(rng, n)
        _write_h5(tmp_path / f"ssc_{split}.h5", times, units, labels=rng.integers(0, 35, n),
                  speakers=rng.integers(0, 9, n))
    d = load_dataset(_cfg(tmp_path, name="ssc"), Timing(1.0))
    assert (len(d.train), len(d.val), len(d.test), d.n_inputs) == (5, 3, 2, 700)
    with pytest.raises(ConfigError, match=r"defines its validation split \(ssc_valid.h5\)"):
        load_dataset(_cfg(tmp_path, name="ssc", val_speakers=[1]), Timing(1.0))


def test_missing_set_says_where_to_get_it_and_that_it_is_not_downloaded(tmp_path):
    with pytest.raises(DataError, match=r"no shd_train.h5, shd_test.h5\. The Spiking Heidelberg Digits cannot be "
                                        r"downloaded from here: .*https://zenkelab.org/resources/spiking-heidelberg"):
        load_dataset(_cfg(tmp_path), Timing(1.0))
    with pytest.raises(DataError, match="no ssc_valid.h5"):
        for split in ("train", "test"):
            write_spike_file(tmp_path / f"ssc_{split}.h5", [[0.0]], [[1]], [0])
        load_dataset(_cfg(tmp_path, name="ssc"), Timing(1.0))
    with pytest.raises(ConfigError, match="data.root = null: data.name=shd needs"):
        load_dataset(from_dict(SHDConfig, {}, "data"), Timing(1.0))


def test_hydra_config_selects_the_loader(tmp_path):
    cfg = composed("data=shd", f"data.root={tmp_path}", "data.val_speakers=[2]")
    assert cfg.data["name"] == "shd" and list(cfg.data["val_speakers"]) == [2]
    assert composed("data=ssc").data["name"] == "ssc"


def _good(f, n=2):
    f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float32))[...] = \
        np.array([np.array([0.1], np.float32)] * n, dtype=object)
    f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))[...] = \
        np.array([np.array([3], np.uint16)] * n, dtype=object)
    f["labels"] = np.zeros(n, np.uint16)


def _replace(f, name, data=None, dtype=None, shape=None):
    del f[name]
    if dtype is not None:
        f.create_dataset(name, shape, dtype=dtype)
    else:
        f[name] = data


def _ragged_set(name, values, dtype):
    def change(f):
        ds = f[name]
        ds[0] = np.asarray(values, dtype)
    return change


@pytest.mark.parametrize("change, message", [
    (lambda f: f.__delitem__("labels"), "no labels"),
    (lambda f: f.__delitem__("spikes/times"), "no spikes/times"),
    (lambda f: _replace(f, "labels", np.array([0.5, 1.0])),
     r"labels has shape \(2,\) and dtype float64; expected 1-D integers"),
    (lambda f: _replace(f, "labels", np.zeros((2, 1), np.int64)), "labels has shape"),
    (lambda f: _replace(f, "labels", np.array([0, -3])), "labels hold -3"),
    (lambda f: _replace(f, "labels", np.zeros(3, np.int64)), r"spikes/times has shape \(2,\) .* expected \(3,\)"),
    (lambda f: _replace(f, "spikes/times", np.zeros((2, 4), np.float32)), "spikes/times has shape .* variable-length"),
    (lambda f: _replace(f, "spikes/times", dtype=h5py.vlen_dtype(np.int32), shape=(2,)),
     "spikes/times has shape .* dtype int32; expected .* variable-length floats"),
    (lambda f: _replace(f, "spikes/units", dtype=h5py.vlen_dtype(np.float32), shape=(2,)),
     "spikes/units .* variable-length integers"),
    (lambda f: (f.__delitem__("spikes/units"), f.create_group("spikes/units")), "spikes/units is a Group"),
    (_ragged_set("spikes/times", [0.1, 0.2], np.float32), "sample 0 has 2 spikes/times but 1 spikes/units"),
    (_ragged_set("spikes/times", [np.nan], np.float32), "spikes/times of sample 0 holds nan"),
    (_ragged_set("spikes/times", [-0.5], np.float32), r"spikes/times of sample 0 holds -0\.5"),
    (_ragged_set("spikes/units", [700], np.uint16),
     r"spikes/units of sample 0 holds 700; expected channels in \[0, 700\)"),
    (lambda f: f.__setitem__("extra/speaker", np.zeros(5, np.int64)), "extra/speaker has shape .* of length 2"),
    (lambda f: f.__setitem__("extra/speaker", np.zeros(2, np.float32)), "extra/speaker .* expected 1-D integers"),
    (lambda f: f.__setitem__("extra/keys", np.zeros(3)), "extra/keys has shape .* expected at most 100000 strings"),
    (lambda f: f.__setitem__("extra/keys", np.array([b"\xff\xfe"])), "extra/keys is not UTF-8"),
])
def test_malformed_files_are_refused_naming_file_and_field(tmp_path, change, message):
    with h5py.File(tmp_path / "shd_train.h5", "w") as f:
        _good(f)
        change(f)
    write_spike_file(tmp_path / "shd_test.h5", [[0.0]], [[1]], [0])
    with pytest.raises(DataError, match=message) as e:
        load_dataset(_cfg(tmp_path), Timing(1.0))
    assert "shd_train.h5" in str(e.value)


def test_files_that_are_not_hdf5_or_are_truncated_are_refused(tmp_path):
    write_spike_file(tmp_path / "shd_test.h5", [[0.0]], [[1]], [0])
    (tmp_path / "shd_train.h5").write_bytes(b"\x89HDF\r\n\x1a\n but not really")
    with pytest.raises(DataError, match="shd_train.h5: not a readable HDF5 file"):
        load_dataset(_cfg(tmp_path), Timing(1.0))
    np.save(tmp_path / "shd_train.h5", np.array([{"a": 1}], dtype=object), allow_pickle=True)  # a pickle: refused
    with pytest.raises(DataError, match="shd_train.h5: not a readable HDF5 file"):
        load_dataset(_cfg(tmp_path), Timing(1.0))
    rng = np.random.default_rng(2)
    write_spike_file(tmp_path / "whole.h5", *_events(rng, 40, max_spikes=400), labels=np.zeros(40, int))
    data = (tmp_path / "whole.h5").read_bytes()
    (tmp_path / "shd_train.h5").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match="shd_train.h5"):
        load_dataset(_cfg(tmp_path), Timing(1.0))


def test_sizes_are_checked_before_allocating(tmp_path):
    write_spike_file(tmp_path / "shd_train.h5", [[0.0]], [[1]], [0])
    write_spike_file(tmp_path / "shd_test.h5", [[0.0]], [[1]], [0])
    with pytest.raises(ConfigError, match=r"data.duration_ms = 1e\+07 at network.dt_ms = 0.001: .* steps; expected "
                                          r"1 to 1000000"):
        load_dataset(_cfg(tmp_path, duration_ms=1e7), Timing(0.001))
    d = load_dataset(_cfg(tmp_path), Timing(1.0))
    with pytest.raises(DataError, match="exceeds .* bytes as a raster"):
        d.train.batch(np.zeros(7_000_000, np.int64))
    with pytest.raises(DataError, match=r"samples .*3.*: expected a 1-D array of indices in \[0, 1\)"):
        d.train.batch([3])
