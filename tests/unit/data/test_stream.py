"""Cue trials made per mini-batch (spinnray.data.cue.CueSplit): the same trials as the documented
sequential stream whatever the batch composition or order, exact resumes through the epoch loop,
and resident memory that does not grow with the number of trials beyond the labels."""

import tracemalloc

import numpy as np
import pytest

from spinnray.config import from_dict
from spinnray.data.base import Timing
from spinnray.data.cue import CueConfig, cue_accumulation, load
from spinnray.errors import DataError

SMALL = {"n_cues": 3, "total_ms": 600.0}


def reference_trials(size: int, seed: int, n_cues: int, total_ms: float, p_group=None):
    """The stream of the cue module's docstring, written out trial after trial (dt 1 ms, 40 Hz cues
    and recall, 10 Hz background, 10 channels per group, cues of 100 ms after gaps of 50 ms)."""
    rng = np.random.default_rng(seed)
    steps = int(total_ms)
    x = np.zeros((size, steps, 40), np.float32)
    labels = np.zeros(size, np.int64)
    for i in range(size):
        if p_group is None:
            side = rng.random(n_cues) < 0.5
        else:
            favoured = rng.random() < 0.5
            side = (rng.random(n_cues) < 1.0 - p_group) == favoured
        p = np.zeros((steps, 40))
        for k in range(n_cues):
            start = 50 + 150 * k
            p[start:start + 100, slice(10, 20) if side[k] else slice(0, 10)] = 0.04
        p[steps - 150:, 20:30] = 0.04
        p[:, 30:40] = 0.01
        x[i] = rng.random((steps, 40)) < p
        labels[i] = 2 * side.sum() > n_cues
    return x, labels


@pytest.mark.parametrize("p_group", [None, 0.3])
def test_any_batch_of_any_order_is_the_same_trials_as_the_sequential_stream(p_group):
    x, y = reference_trials(9, 4, p_group=p_group, **SMALL)
    np.testing.assert_array_equal(cue_accumulation(9, 4, p_group=p_group, **SMALL)[0], x)
    cfg = from_dict(CueConfig, {"name": "cue", "train_size": 9, "data_seed": 4, "p_group": p_group, **SMALL}, "data")
    split = load(cfg, Timing(1.0)).train
    np.testing.assert_array_equal(split.labels, y)
    for idx in ([8, 0, 5], [3], [7, 7, 2, 1, 6, 4], np.arange(9)[::-1], np.array([], np.int64)):
        got = split.batch(np.asarray(idx, np.int64))                  # time-major (T, B, C)
        assert got.dtype == np.float32 and got.shape == (600, len(idx), 40)
        np.testing.assert_array_equal(got, x[np.asarray(idx, np.int64)].transpose(1, 0, 2))


def test_indices_outside_the_split_are_refused():
    split = load(from_dict(CueConfig, {"name": "cue", "train_size": 4, "limit": 3, **SMALL}, "data"),
                 Timing(1.0)).train
    assert len(split) == 3
    for bad in ([3], [-1], [0.5], [[0, 1]]):
        with pytest.raises(DataError, match=r"in \[0, 3\)"):
            split.batch(np.asarray(bad))


def resident_bytes(obj, seen=None) -> int:
    """Bytes of the arrays an object holds, following its attributes (and dataclass fields)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (list, tuple)):
        return sum(resident_bytes(v, seen) for v in obj)
    if isinstance(obj, dict):
        return sum(resident_bytes(v, seen) for v in obj.values())
    if hasattr(obj, "__dict__"):
        return resident_bytes(vars(obj), seen)
    return 0


def _load_peak(size: int):
    """(data set, peak bytes traced while loading it and making one mini-batch of 4)."""
    cfg = from_dict(CueConfig, {"name": "cue", "train_size": size, "test_size": size, "n_cues": 1,
                                "total_ms": 300.0, "resample": True}, "data")
    tracemalloc.start()
    try:
        data = load(cfg, Timing(1.0))
        data.train.batch(np.arange(4))
        data.begin_epoch(1)
        return data, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_resident_memory_grows_with_the_trials_only_by_their_labels():
    small, peak_small = _load_peak(20)
    large, peak_large = _load_peak(2000)
    trial_bytes = 300 * 40 * 4                      # one trial of float32 input: 48 KB
    for s, l in ((small.train, large.train), (small.test, large.test)):
        assert resident_bytes(l) - resident_bytes(s) == (len(l) - len(s)) * 8     # int64 labels, nothing else
    # loading (and a fresh epoch) draws only the cue sides: far below one trial per 100 trials
    assert peak_large - peak_small < 1980 * 64 < 20 * trial_bytes
