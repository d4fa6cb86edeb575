"""spinnray.machine.synapses: accumulate_events equals a plain sequential loop bit for bit and does not
depend on which columns or samples are computed beside a column; analog input blocks equal steps."""

from __future__ import annotations

import numpy as np
import pytest

from spinnray.machine.synapses import accumulate_events


def ref_accumulate(n_batch, b, rows):
    out = np.zeros((n_batch, rows.shape[1]), rows.dtype)
    for e in range(len(b)):
        for j in range(rows.shape[1]):
            out[b[e], j] += rows[e, j]
    return out


def random_events(rng, n_batch, n_events, n, dtype):
    b = rng.integers(0, n_batch, n_events)
    # Mixed magnitudes, so that a different summation order gives different bits.
    rows = (rng.standard_normal((n_events, n)) * 10.0 ** rng.integers(-3, 6, (n_events, n))).astype(dtype)
    return b, rows


def test_accumulate_is_sequential_in_event_order():
    rows = np.array([[1.0], [1e8], [-1e8]], np.float32)
    b = np.zeros(3, np.int64)
    assert accumulate_events(1, b, rows).tolist() == [[0.0]]              # (1 + 1e8) - 1e8 in float32
    assert accumulate_events(1, b, rows[[1, 2, 0]]).tolist() == [[1.0]]   # (1e8 - 1e8) + 1
    # Interleaved with another sample's events, each sample keeps its own order.
    rows2 = np.array([[1.0], [5.0], [1e8], [-1e8], [7.0]], np.float32)
    b2 = np.array([0, 1, 0, 0, 1])
    assert accumulate_events(2, b2, rows2).tolist() == [[0.0], [12.0]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_batch", [1, 2, 5])
@pytest.mark.parametrize("seed", range(4))
def test_accumulate_equals_sequential_loop(seed, n_batch, dtype):
    rng = np.random.default_rng(seed)
    n_events = int(rng.integers(9 * n_batch, 40 * n_batch))      # more than 8 events per sample on average
    n = int(rng.integers(1, 12))
    b, rows = random_events(rng, n_batch, n_events, n, dtype)
    if n_batch > 1:
        assert np.bincount(b, minlength=n_batch).max() > 8
    got = accumulate_events(n_batch, b, rows)
    ref = ref_accumulate(n_batch, b, rows)
    assert got.shape == (n_batch, n) and got.dtype == rows.dtype
    assert np.array_equal(got, ref)


def test_accumulate_sample_without_events_is_zero():
    b = np.array([0, 2, 0, 2])
    rows = np.arange(8, dtype=np.float64).reshape(4, 2)
    assert accumulate_events(4, b, rows).tolist() == [[4.0, 6.0], [0.0, 0.0], [8.0, 10.0], [0.0, 0.0]]
    empty = accumulate_events(3, np.zeros(0, int), np.zeros((0, 5), np.float32))
    assert empty.shape == (3, 5) and empty.dtype == np.float32 and not empty.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_batch", [1, 3])
def test_accumulate_partition_invariance(n_batch, dtype):
    rng = np.random.default_rng(n_batch)
    n = 13
    b, rows = random_events(rng, n_batch, 30 * n_batch, n, dtype)
    full = accumulate_events(n_batch, b, rows)
    subsets = [[j] for j in range(n)]                               # single-column slices
    subsets += [list(range(lo, hi)) for lo, hi in ((0, 4), (4, 9), (9, 13), (0, 12), (3, 5))]
    subsets += [sorted(rng.choice(n, k, replace=False).tolist()) for k in (2, 5, 7)]
    for cols in subsets:
        part = accumulate_events(n_batch, b, np.ascontiguousarray(rows[:, cols]))
        assert np.array_equal(part, full[:, cols]), cols
    # Nor on which samples are computed beside it.
    if n_batch > 1:
        keep = b != 1
        sub = accumulate_events(n_batch, b[keep], rows[keep])
        assert np.array_equal(sub[[0, 2]], full[[0, 2]]) and not sub[1].any()
        only = accumulate_events(1, np.zeros(int((b == 2).sum()), int), rows[b == 2])
        assert np.array_equal(only[0], full[2])


@pytest.mark.parametrize("n_batch, n_events, n", [(1, 800, 100), (1, 1000, 256), (1, 50, 2), (32, 700, 120),
                                                  (32, 900, 2), (2, 300, 257), (7, 200, 1)])
def test_accumulate_sequential_on_core_sized_shapes(n_batch, n_events, n):
    """The fast reduce path stays strictly sequential on the shapes cores really use."""
    rng = np.random.default_rng(n_events + n)
    for dtype in (np.float32, np.float64):
        b, rows = random_events(rng, n_batch, n_events, n, dtype)
        assert np.array_equal(accumulate_events(n_batch, b, rows), ref_accumulate(n_batch, b, rows))


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1, 2, 7])
def test_analog_blocks_equal_step_by_step_and_any_column_split(dtype, n, sparse):
    """The analog input projected a block of steps at a time is bit-identical to step by step, and a
    column's value does not depend on the columns beside it (what makes any core split agree)."""
    from spinnray.machine.synapses import analog_input, analog_input_block

    rng = np.random.default_rng(n)
    x = rng.normal(size=(9, 3, 13)).astype(dtype)
    if sparse:                                          # 0/1 spikes at ~10 %: the nonzero-only path
        x = (rng.random(x.shape) < 0.1).astype(dtype) * rng.choice([1.0, 0.5], size=x.shape).astype(dtype)
        assert 0 < np.count_nonzero(x) * 4 <= x.size
    w = rng.normal(size=(13, n)).astype(dtype)
    block = analog_input_block(x, w)
    assert block.shape == (9, 3, n) and block.dtype == np.dtype(dtype)
    for t in range(9):
        np.testing.assert_array_equal(block[t], analog_input(x[t], w))
    for j in range(n):                                  # one column alone, as on a core of one neuron
        np.testing.assert_array_equal(block[:, :, j], analog_input_block(x, w[:, j:j + 1])[:, :, 0])
    np.testing.assert_allclose(block, x @ w, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5)
