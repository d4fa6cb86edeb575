"""Tests of the Yin-Yang generator, loader and spike encoders (spinnray.data.yinyang).

The golden arrays are the project-local copies in tests/data/yinyang/ of Kriener
et al.'s publication data (MIT, see the LICENSE there).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from spinnray.data import encode_yin_yang, load_yin_yang_arrays, yin_yang
from spinnray.data.yinyang import CANONICAL, _which_class, spike_steps_yin_yang
from spinnray.errors import ConfigError, DataError

from helpers import TESTS

DATA_DIR = TESTS / "data" / "yinyang"


@pytest.fixture(scope="module")
def generated():
    """The three canonical splits, generated once for the whole module."""
    return {split: yin_yang(size, seed) for split, (size, seed) in CANONICAL.items()}


@pytest.fixture(scope="module")
def train_samples(generated):
    return generated["train"][0]


def test_canonical_constants():
    assert CANONICAL == {"train": (5000, 42), "validation": (1000, 41), "test": (1000, 40)}


@pytest.mark.parametrize("split", sorted(CANONICAL))
def test_generator_reproduces_published_split(generated, split):
    size, _ = CANONICAL[split]
    ref_samples = np.load(DATA_DIR / f"{split}_samples.npy", allow_pickle=False)
    ref_labels = np.load(DATA_DIR / f"{split}_labels.npy", allow_pickle=False)
    assert ref_samples.dtype == np.float64 and ref_labels.dtype == np.int64

    samples, labels = generated[split]
    assert samples.dtype == np.float64 and samples.shape == (size, 4)
    assert labels.dtype == np.int64 and labels.shape == (size,)
    assert np.array_equal(samples, ref_samples)
    assert np.array_equal(labels, ref_labels)
    # bit for bit, not just numerically equal
    assert samples.tobytes() == ref_samples.tobytes()
    assert labels.tobytes() == ref_labels.tobytes()


@pytest.mark.parametrize("split", sorted(CANONICAL))
def test_loader_reads_published_split(generated, split):
    samples, labels = load_yin_yang_arrays(DATA_DIR, split)
    assert samples.dtype == np.float64 and labels.dtype == np.int64
    assert np.array_equal(samples, generated[split][0])
    assert np.array_equal(labels, generated[split][1])
    # str paths work too
    samples2, _ = load_yin_yang_arrays(str(DATA_DIR), split)
    assert np.array_equal(samples, samples2)


def test_generator_is_a_prefix_stream_and_seed_dependent(generated):
    samples, labels = yin_yang(25, 42)
    assert np.array_equal(samples, generated["train"][0][:25])
    assert np.array_equal(labels, generated["train"][1][:25])
    other, _ = yin_yang(25, 7)
    assert not np.array_equal(samples, other)


def test_generator_empty():
    samples, labels = yin_yang(0, 3)
    assert samples.shape == (0, 4) and samples.dtype == np.float64
    assert labels.shape == (0,) and labels.dtype == np.int64


def test_generator_accepts_numpy_integers():
    a = yin_yang(np.int64(5), np.uint32(42))
    b = yin_yang(5, 42)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("split", sorted(CANONICAL))
def test_samples_geometry_and_balance(generated, split):
    samples, labels = generated[split]
    n = len(labels)
    assert np.all((samples >= 0.0) & (samples <= 1.0))
    assert np.array_equal(samples[:, 2], 1.0 - samples[:, 0])
    assert np.array_equal(samples[:, 3], 1.0 - samples[:, 1])
    # inside the big circle of radius 0.5 centred at (0.5, 0.5)
    assert np.all(np.hypot(samples[:, 0] - 0.5, samples[:, 1] - 0.5) <= 0.5 + 1e-12)
    counts = np.bincount(labels, minlength=3)
    assert counts.sum() == n and len(counts) == 3
    assert np.all(np.abs(counts / n - 1.0 / 3.0) < 0.04), counts
    # every label is the class of its point
    for (x, y, _, _), c in zip(samples[:200], labels[:200]):
        assert _which_class(float(x), float(y), 0.1, 0.5) == c


def test_train_class_counts_match_published(generated):
    assert np.bincount(generated["train"][1]).tolist() == [1681, 1702, 1617]


def test_class_rule_landmarks():
    # centres of the dots are class 2; ring around the left dot is class 1;
    # ring around the right dot is class 0; top is 1, bottom is 0
    assert _which_class(0.25, 0.5, 0.1, 0.5) == 2
    assert _which_class(0.75, 0.5, 0.1, 0.5) == 2
    assert _which_class(0.25, 0.68, 0.1, 0.5) == 1
    assert _which_class(0.75, 0.68, 0.1, 0.5) == 0
    assert _which_class(0.5, 0.95, 0.1, 0.5) == 1
    assert _which_class(0.5, 0.05, 0.1, 0.5) == 0


def test_generator_other_radii():
    samples, labels = yin_yang(300, 1, r_small=0.2, r_big=1.0)
    assert np.all((samples[:, :2] >= 0.0) & (samples[:, :2] < 2.0))
    assert np.all(np.hypot(samples[:, 0] - 1.0, samples[:, 1] - 1.0) <= 1.0)
    assert set(np.unique(labels).tolist()) == {0, 1, 2}


@pytest.mark.parametrize(
    "kwargs, name, value",
    [
        (dict(size=-1, seed=0), "size", "-1"),
        (dict(size=2.5, seed=0), "size", "2.5"),
        (dict(size=True, seed=0), "size", "True"),
        (dict(size="10", seed=0), "size", "'10'"),
        (dict(size=3, seed=-1), "seed", "-1"),
        (dict(size=3, seed=2**32), "seed", str(2**32)),
        (dict(size=3, seed=1.0), "seed", "1.0"),
        (dict(size=3, seed=0, r_small=0.0), "r_small", "0.0"),
        (dict(size=3, seed=0, r_small=0.25), "r_small", "0.25"),
        (dict(size=3, seed=0, r_small=0.6), "r_small", "0.6"),
        (dict(size=3, seed=0, r_big=-0.5), "r_big", "-0.5"),
        (dict(size=3, seed=0, r_big=math.nan), "r_big", "nan"),
        (dict(size=3, seed=0, r_big=math.inf), "r_big", "inf"),
    ],
)
def test_generator_argument_errors(kwargs, name, value):
    with pytest.raises(ConfigError) as info:
        yin_yang(**kwargs)
    message = str(info.value)
    assert f"{name} = " in message and value in message
    assert isinstance(info.value, ValueError)


def _write_split(directory: Path, split: str, samples, labels) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if samples is not None:
        np.save(directory / f"{split}_samples.npy", samples)
    if labels is not None:
        np.save(directory / f"{split}_labels.npy", labels)


def _valid_small():
    samples, labels = yin_yang(6, 5)
    return samples, labels


def test_loader_small_valid_files(tmp_path):
    samples, labels = _valid_small()
    _write_split(tmp_path, "validation", samples, labels)
    got_samples, got_labels = load_yin_yang_arrays(tmp_path, "validation")
    assert np.array_equal(got_samples, samples) and got_samples.dtype == np.float64
    assert np.array_equal(got_labels, labels) and got_labels.dtype == np.int64


def test_loader_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as info:
        load_yin_yang_arrays(missing, "train")
    assert str(missing) in str(info.value)
    assert "train_samples.npy" in str(info.value)


def test_loader_directory_is_a_file(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("not a directory")
    with pytest.raises(DataError, match="not a directory") as info:
        load_yin_yang_arrays(path, "train")
    assert str(path) in str(info.value)


@pytest.mark.parametrize("which", ["samples", "labels"])
def test_loader_missing_file(tmp_path, which):
    samples, labels = _valid_small()
    _write_split(
        tmp_path, "test", None if which == "samples" else samples, None if which == "labels" else labels
    )
    with pytest.raises(DataError, match="missing") as info:
        load_yin_yang_arrays(tmp_path, "test")
    assert str(tmp_path / f"test_{which}.npy") in str(info.value)


def test_loader_corrupt_file(tmp_path):
    samples, labels = _valid_small()
    _write_split(tmp_path, "train", samples, labels)
    (tmp_path / "train_samples.npy").write_bytes(b"garbage, not numpy")
    with pytest.raises(DataError, match="not a readable .npy") as info:
        load_yin_yang_arrays(tmp_path, "train")
    assert "train_samples.npy" in str(info.value)


@pytest.mark.parametrize(
    "samples, labels, culprit, expected",
    [
        (np.zeros((6, 3)), np.zeros(6, dtype=np.int64), "samples", r"expected \(n, 4\)"),
        (np.zeros(24), np.zeros(6, dtype=np.int64), "samples", r"expected \(n, 4\)"),
        (np.zeros((6, 4), dtype=np.int64), np.zeros(6, dtype=np.int64), "samples", "floating"),
        (np.full((6, 4), np.nan), np.zeros(6, dtype=np.int64), "samples", "finite"),
        (np.zeros((6, 4)), np.zeros((6, 1), dtype=np.int64), "labels", r"expected \(n,\)"),
        (np.zeros((6, 4)), np.zeros(6, dtype=np.float64), "labels", "integer"),
        (np.zeros((6, 4)), np.zeros(5, dtype=np.int64), "labels", "one per sample"),
        (np.zeros((6, 4)), np.array([0, 1, 2, 3, 0, 1]), "labels", "label 3 at index 3"),
    ],
)
def test_loader_wrong_shape_dtype_values(tmp_path, samples, labels, culprit, expected):
    _write_split(tmp_path, "train", samples, labels)
    with pytest.raises(DataError, match=expected) as info:
        load_yin_yang_arrays(tmp_path, "train")
    assert str(tmp_path / f"train_{culprit}.npy") in str(info.value)


@pytest.mark.parametrize("split", ["training", "", None, "TRAIN"])
def test_loader_unknown_split(tmp_path, split):
    with pytest.raises(ConfigError, match="split = ") as info:
        load_yin_yang_arrays(tmp_path, split)
    assert repr(split) in str(info.value)


@pytest.mark.parametrize("scheme, steps", [("wunderlich", 31), ("bena", 27), ("bena", 30)])
@pytest.mark.parametrize("bias", [True, False])
def test_each_input_spikes_exactly_once(train_samples, scheme, steps, bias):
    raster = encode_yin_yang(train_samples, scheme=scheme, steps=steps, bias=bias)
    n_inputs = 5 if bias else 4
    assert raster.dtype == np.bool_
    assert raster.shape == (steps, len(train_samples), n_inputs)
    assert np.all(raster.sum(axis=0) == 1)
    spike_steps = spike_steps_yin_yang(train_samples, scheme=scheme, steps=steps, bias=bias)
    assert spike_steps.dtype == np.int64 and spike_steps.shape == (len(train_samples), n_inputs)
    assert np.array_equal(raster.argmax(axis=0), spike_steps)
    if bias:
        assert np.all(raster[0, :, -1]) and raster[:, :, -1].sum() == len(train_samples)


def test_wunderlich_formula_and_monotonic(train_samples):
    steps = spike_steps_yin_yang(train_samples, scheme="wunderlich", steps=31)
    assert np.array_equal(steps[:, :4], np.rint(train_samples * 30.0).astype(np.int64))
    assert np.all(steps[:, 4] == 0)
    x = np.linspace(0.0, 1.0, 101)
    grid = np.stack([x, x, 1 - x, 1 - x], axis=1)
    s = spike_steps_yin_yang(grid, scheme="wunderlich", steps=31, bias=False)
    assert np.all(np.diff(s[:, 0]) >= 0) and np.all(np.diff(s[:, 2]) <= 0)  # larger x -> later
    assert s[0, 0] == 0 and s[-1, 0] == 30


def test_wunderlich_dt_and_rounding():
    x = np.array([[0.0, 0.5, 1.0, 0.25]])
    # dt 0.5 ms: t = x * 30 -> steps 0, 30, 60, 15
    s = spike_steps_yin_yang(x, scheme="wunderlich", steps=61, dt_ms=0.5, bias=False)
    assert s.tolist() == [[0, 30, 60, 15]]
    # round half to even: t = 0.5 -> 0, 1.5 -> 2, 2.5 -> 2 (t_max_ms 1, 3, 5 with x = 0.5)
    half = np.full((1, 4), 0.5)
    for t_max, expected in [(1.0, 0), (3.0, 2), (5.0, 2)]:
        got = spike_steps_yin_yang(half, scheme="wunderlich", steps=10, t_max_ms=t_max, bias=False)
        assert got[0, 0] == expected


def test_wunderlich_out_of_window():
    x = np.array([[0.1, 0.2, 0.9, 1.0]])
    with pytest.raises(ConfigError) as info:
        encode_yin_yang(x, scheme="wunderlich", steps=30)
    message = str(info.value)
    assert "steps = 30" in message and "step 30" in message and "need steps >= 31" in message
    # fits exactly with one more step; and a smaller window fits smaller values
    assert encode_yin_yang(x, scheme="wunderlich", steps=31).shape == (31, 1, 5)
    small = np.array([[0.1, 0.2, 0.3, 0.0]])
    assert encode_yin_yang(small, scheme="wunderlich", steps=10).shape == (10, 1, 5)


def test_bena_formula_monotonic_and_extremes(train_samples):
    steps, t_min = 27, 2
    s = spike_steps_yin_yang(train_samples, scheme="bena", steps=steps, t_min_step=t_min)
    expected = np.rint(t_min + (steps - 1 - t_min) * (1.0 - train_samples)).astype(np.int64)
    assert np.array_equal(s[:, :4], expected)
    assert s[:, :4].min() >= t_min and s[:, :4].max() <= steps - 1
    assert np.all(s[:, 4] == 0)
    x = np.linspace(0.0, 1.0, 101)
    grid = np.stack([x, x, 1 - x, 1 - x], axis=1)
    g = spike_steps_yin_yang(grid, scheme="bena", steps=steps, bias=False)
    assert np.all(np.diff(g[:, 0]) <= 0) and np.all(np.diff(g[:, 2]) >= 0)  # larger x -> earlier
    assert g[0, 0] == steps - 1 and g[-1, 0] == t_min


def test_bena_matches_snntorch_documented_example():
    # snntorch docs: latency([0.02, 0.5, 1], num_steps=5, normalize=True, linear=True)
    # -> spike times (3.92, 2.0, 0.0) -> steps 4, 2, 0
    x = np.array([[0.02, 0.5, 1.0, 0.0]])
    s = spike_steps_yin_yang(x, scheme="bena", steps=5, t_min_step=0, bias=False)
    assert s.tolist() == [[4, 2, 0, 4]]


def test_bena_minimal_window():
    x = np.array([[0.0, 0.4, 0.6, 1.0]])
    s = spike_steps_yin_yang(x, scheme="bena", steps=4, t_min_step=2)
    assert s.tolist() == [[3, 3, 2, 2, 0]]
    with pytest.raises(ConfigError, match=r"steps = 3: expected steps >= t_min_step \+ 2 = 4"):
        spike_steps_yin_yang(x, scheme="bena", steps=3, t_min_step=2)


def test_encoders_accept_lists_and_empty():
    raster = encode_yin_yang([[0.0, 1.0, 1.0, 0.0]], scheme="bena", steps=10)
    assert raster.shape == (10, 1, 5)
    empty = encode_yin_yang(np.zeros((0, 4)), scheme="wunderlich", steps=31)
    assert empty.shape == (31, 0, 5)


@pytest.mark.parametrize(
    "samples, expected",
    [
        (np.array([[0.1, 0.2, 0.3, 1.5]]), r"samples\[0, 3\]=1.5"),
        (np.array([[0.1, -0.2, 0.3, 0.5]]), r"samples\[0, 1\]=-0.2"),
        (np.array([[0.1, 0.2, np.nan, 0.5]]), r"samples\[0, 2\]=nan"),
        (np.zeros((2, 3)), r"shape \(2, 3\), expected \(n, 4\)"),
        (np.zeros(4), r"shape \(4,\), expected \(n, 4\)"),
        (np.array([["a", "b", "c", "d"]]), "dtype"),
    ],
)
@pytest.mark.parametrize("scheme", ["wunderlich", "bena"])
def test_encoder_sample_errors(samples, expected, scheme):
    with pytest.raises(DataError, match=expected):
        encode_yin_yang(samples, scheme=scheme, steps=31)


@pytest.mark.parametrize(
    "kwargs, name, value",
    [
        (dict(scheme="latency", steps=31), "scheme", "'latency'"),
        (dict(scheme=None, steps=31), "scheme", "None"),
        (dict(scheme="bena", steps=0), "steps", "0"),
        (dict(scheme="bena", steps=30.0), "steps", "30.0"),
        (dict(scheme="wunderlich", steps=31, dt_ms=0.0), "dt_ms", "0.0"),
        (dict(scheme="wunderlich", steps=31, dt_ms=math.nan), "dt_ms", "nan"),
        (dict(scheme="wunderlich", steps=31, t_max_ms=-30.0), "t_max_ms", "-30.0"),
        (dict(scheme="bena", steps=31, t_min_step=-1), "t_min_step", "-1"),
        (dict(scheme="bena", steps=31, t_min_step=2.0), "t_min_step", "2.0"),
        (dict(scheme="bena", steps=31, bias="yes"), "bias", "'yes'"),
    ],
)
def test_encoder_argument_errors(kwargs, name, value):
    samples = np.array([[0.1, 0.2, 0.9, 0.8]])
    for fn in (encode_yin_yang, spike_steps_yin_yang):
        with pytest.raises(ConfigError) as info:
            fn(samples, **kwargs)
        message = str(info.value)
        assert f"{name} = " in message and value in message


def test_encoder_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        encode_yin_yang(np.zeros((1, 4)), "bena", 10)  # type: ignore[misc]


def test_stagger_interleaves_the_rounding_grids():
    """With stagger 0.5 the mirrored inputs round on a grid half a step off that of x, so the
    joint spike steps pin x down to half a step of input time; plain rounding to a whole step."""
    from spinnray.data.yinyang import YinYangConfig as YinYangDataConfig, encode_inputs, spike_steps_yin_yang
    from spinnray.errors import ConfigError

    xs = np.linspace(0.0, 1.0, 6001)
    samples = np.stack([xs, xs, 1 - xs, 1 - xs], axis=1)
    dt, t_max, steps = 0.5, 30.0, 100

    def widest_cell(raster):
        """Largest spread of x among samples that get identical spike steps."""
        codes = [tuple(c) for c in raster.argmax(axis=0)]
        cells = {}
        for code, x in zip(codes, xs):
            lo, hi = cells.get(code, (x, x))
            cells[code] = (min(lo, x), max(hi, x))
        return max(hi - lo for lo, hi in cells.values())

    plain = encode_inputs(samples, YinYangDataConfig(), steps, dt)
    assert np.array_equal(plain, encode_yin_yang(samples, scheme="wunderlich", steps=steps, dt_ms=dt))
    staggered = encode_inputs(samples, YinYangDataConfig(stagger=0.5), steps, dt)
    assert staggered.sum() == plain.sum() == 5 * len(xs)                 # still one spike per input
    assert np.array_equal(staggered[:, :, [0, 1, 4]], plain[:, :, [0, 1, 4]])
    # Mirrored columns by hand: rint((1 - x) * t_max / dt + 0.5).
    hand = np.rint((1 - xs) * t_max / dt + 0.5).astype(int)
    assert np.array_equal(staggered[:, :, 2].argmax(axis=0), hand)
    cell = dt / t_max                                                    # 1/60 of the input range
    assert widest_cell(plain) == pytest.approx(cell, abs=2e-4)
    assert widest_cell(staggered) == pytest.approx(cell / 2, abs=2e-4)
    assert np.array_equal(spike_steps_yin_yang(samples, scheme="wunderlich", steps=steps, dt_ms=dt)[:, 0],
                          staggered[:, :, 0].argmax(axis=0))
    with pytest.raises(ConfigError, match="stagger"):
        encode_inputs(samples, YinYangDataConfig(stagger=0.5, encoding="bena"), steps, dt)
    assert encode_inputs(samples, YinYangDataConfig(stagger=0.5), 61, dt).shape[0] == 61  # rint(60.5) = 60
    with pytest.raises(ConfigError, match="network.steps"):
        encode_inputs(samples, YinYangDataConfig(stagger=0.6), 61, dt)                # x = 0: step 61
