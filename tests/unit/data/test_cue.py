"""Cue accumulation (Bellec et al. 2020): layout, labels from the spikes, rates, determinism, errors."""

import math

import numpy as np
import pytest

from spinnray.data.cue import LEFT, RIGHT, cue_accumulation, cue_decision_window, cue_layout
from spinnray.errors import ConfigError


def sample_major(split) -> np.ndarray:
    """All trials of a split, (N, T, C)."""
    return split.batch(np.arange(len(split))).transpose(1, 0, 2)


def test_shapes_dtypes_and_default_timing():
    x, labels = cue_accumulation(3, seed=0)
    assert x.shape == (3, 2250, 40) and x.dtype == np.float32
    assert labels.shape == (3,) and labels.dtype == np.int64
    assert set(np.unique(x)) <= {0.0, 1.0}
    lay = cue_layout()
    # hand-written time line: cue k at 50 + 150 k .. 150 + 150 k, recall 2100 .. 2250
    assert lay.cue_starts == tuple(50 + 150 * k for k in range(7))
    assert lay.cue_window(6) == slice(950, 1050)
    assert cue_decision_window() == slice(2100, 2250)
    mask = lay.decision_mask()
    assert mask.shape == (2250,) and mask.sum() == 150 and mask[2100:].all()
    # half a millisecond steps double every step count
    fine = cue_layout(dt_ms=0.5)
    assert fine.steps == 4500 and fine.cue_starts[1] == 400 and fine.decision_window == slice(4200, 4500)


def test_deterministic_under_seed_and_prefix_stable():
    a, la = cue_accumulation(4, seed=7)
    b, lb = cue_accumulation(4, seed=7)
    c, lc = cue_accumulation(2, seed=7)
    d, _ = cue_accumulation(4, seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(a[:2], c)
    np.testing.assert_array_equal(la[:2], lc)
    assert not np.array_equal(a, d)


def test_labels_are_the_majority_read_from_the_spikes():
    n_cues = 7
    x, labels, sides = cue_accumulation(60, seed=3, n_cues=n_cues, return_sides=True)
    for i in range(len(x)):
        n_left = n_right = 0
        for k in range(n_cues):
            window = x[i, 50 + 150 * k : 150 + 150 * k]
            spikes_left = window[:, 0:10].sum()
            spikes_right = window[:, 10:20].sum()
            # exactly one side is active during a cue (P(no spike in 1000 steps at 0.04) ~ 4e-18)
            assert (spikes_left > 0) != (spikes_right > 0)
            n_left += spikes_left > 0
            n_right += spikes_right > 0
            assert sides[i, k] == (RIGHT if spikes_right > 0 else LEFT)
        assert labels[i] == (RIGHT if n_right > n_left else LEFT)
    # both labels occur, and sides are fair: 420 cues, |right - 210| within 5 sigma
    assert 0 < labels.sum() < len(labels)
    assert abs(sides.sum() - 210) < 5 * math.sqrt(420 * 0.25)


def test_rates_within_binomial_bounds():
    size = 40
    x, _, sides = cue_accumulation(size, seed=11, return_sides=True)
    lay = cue_layout()

    def check(count, trials, p):
        assert abs(count - trials * p) < 5 * math.sqrt(trials * p * (1 - p)) + 1

    # background channels: 10 Hz everywhere
    check(x[:, :, 30:40].sum(), size * 2250 * 10, 0.010)
    # recall channels: 40 Hz in the recall period, silent before
    check(x[:, 2100:, 20:30].sum(), size * 150 * 10, 0.040)
    assert x[:, :2100, 20:30].sum() == 0
    # cue channels: 40 Hz during their own cues, silent elsewhere
    cue_mask = np.zeros((size, 2250, 2), dtype=bool)  # (trial, step, side)
    for i in range(size):
        for k in range(7):
            cue_mask[i, lay.cue_window(k), sides[i, k]] = True
    for side, chans in ((LEFT, slice(0, 10)), (RIGHT, slice(10, 20))):
        on = cue_mask[:, :, side]
        spikes = x[:, :, chans].sum(axis=2)  # (trial, step)
        check(spikes[on].sum(), on.sum() * 10, 0.040)
        assert spikes[~on].sum() == 0


def test_reference_bias_p_group_and_custom_rates():
    _, _, sides = cue_accumulation(200, seed=1, p_group=0.0, return_sides=True)
    # p_group=0: every cue of a trial on the favoured side
    assert np.all((sides.sum(axis=1) == 0) | (sides.sum(axis=1) == 7))
    x, labels = cue_accumulation(5, seed=2, n_cues=3, total_ms=1000.0, rate_hz=1000.0, background_hz=0.0)
    assert x.shape == (5, 1000, 40)
    assert x[:, :, 30:].sum() == 0
    assert np.all(x[:, 850:, 20:30] == 1.0)  # p = 1 during recall


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 0}, "size = 0"),
        ({"size": 2.0}, "size = 2.0"),
        ({"seed": -1}, "seed = -1"),
        ({"n_cues": 4}, "n_cues = 4"),
        ({"n_cues": 0}, "n_cues = 0"),
        ({"dt_ms": 0.0}, "dt_ms = 0.0"),
        ({"cue_ms": 100.5}, "cue_ms = 100.5"),
        ({"gap_ms": -1.0}, "gap_ms = -1.0"),
        ({"recall_ms": float("nan")}, "recall_ms = nan"),
        ({"total_ms": 1000.0}, "total_ms = 1000.0"),
        ({"n_cues": 15}, "total_ms = 2250.0"),
        ({"rate_hz": 2000.0}, "rate_hz = 2000.0"),
        ({"background_hz": -5.0}, "background_hz = -5.0"),
        ({"p_group": 1.5}, "p_group = 1.5"),
        ({"channels_per_group": True}, "channels_per_group = True"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    args = {"size": 2, "seed": 0}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match.replace(".", r"\.")):
        cue_accumulation(**args)


def test_resample_seeds_and_refusal():
    """data.resample: epoch 0 is the usual training set, later epochs fresh ones, never a test set;
    the keyword data cannot be resampled (ConfigError naming the option)."""
    from spinnray.config import from_dict
    from spinnray.data.base import Timing
    from spinnray.data.cue import RESAMPLE_STRIDE, CueConfig, epoch_seed, epoch_training_set, load
    from spinnray.data.speech import SpeechConfig

    kw = {"name": "cue", "train_size": 6, "test_size": 4, "n_cues": 3, "total_ms": 700.0, "data_seed": 5}
    on = from_dict(CueConfig, dict(kw, resample=True), "data")
    off = from_dict(CueConfig, kw, "data")
    assert [epoch_seed(on, e) for e in range(3)] == [5, 5 + RESAMPLE_STRIDE, 5 + 2 * RESAMPLE_STRIDE]
    assert [epoch_seed(off, e) for e in range(3)] == [5, 5, 5]
    data = load(on, Timing(1.0))
    xtr, ytr, xte = sample_major(data.train), data.train.labels.copy(), sample_major(data.test)
    x0, y0 = epoch_training_set(on, 0)
    x1, y1 = epoch_training_set(on, 1)
    np.testing.assert_array_equal(x0, xtr)
    np.testing.assert_array_equal(y0, ytr)
    assert not np.array_equal(x1, x0) and not np.array_equal(x1[:4], xte)
    np.testing.assert_array_equal(x1, cue_accumulation(6, 5 + RESAMPLE_STRIDE, n_cues=3, total_ms=700.0)[0])
    labels = data.train.labels
    data.begin_epoch(1)                                  # the training split switches seed, labels in place
    np.testing.assert_array_equal(sample_major(data.train), x1)
    np.testing.assert_array_equal(data.train.labels, y1)
    assert data.train.labels is labels
    with pytest.raises(ConfigError, match="data.resample: unknown key"):
        from_dict(SpeechConfig, {"name": "keywords", "resample": True}, "data")


def test_data_p_group_reaches_every_cue_set():
    """data.p_group is the generator's per-trial bias for the training, fresh and test trials;
    out of [0, 1] it is refused naming the option."""
    from spinnray.config import from_dict
    from spinnray.data.base import Timing
    from spinnray.data.cue import RESAMPLE_STRIDE, CueConfig, epoch_training_set, load

    kw = {"name": "cue", "train_size": 5, "test_size": 3, "n_cues": 3, "total_ms": 700.0, "data_seed": 2,
          "test_seed": 4, "resample": True, "p_group": 0.0}
    cfg = from_dict(CueConfig, kw, "data")
    data = load(cfg, Timing(1.0))
    xtr, xte = sample_major(data.train), sample_major(data.test)
    gen = dict(n_cues=3, total_ms=700.0, p_group=0.0)
    np.testing.assert_array_equal(xtr, cue_accumulation(5, 2, **gen)[0])
    np.testing.assert_array_equal(xte, cue_accumulation(3, 4 + 10_000, **gen)[0])
    np.testing.assert_array_equal(epoch_training_set(cfg, 1)[0], cue_accumulation(5, 2 + RESAMPLE_STRIDE, **gen)[0])
    # the bias changes the trials (p_group = 0: every cue of a trial on one side)
    assert not np.array_equal(xtr, cue_accumulation(5, 2, n_cues=3, total_ms=700.0)[0])
    with pytest.raises(ConfigError, match="data.p_group"):
        from_dict(CueConfig, dict(kw, p_group=1.5), "data")
