"""Digital grids that widen (``machine.weight_range_growth``): each post neuron's step doubles when an
update would move one of its weights past the limit.

References: a hand-written loop over Python integers of the rule as the module docstring states it
(exact arithmetic), a float weight that sums the updates, and the same store split over columns.
"""

import numpy as np
import pytest

from spinnray.config import MachineConfig
from spinnray.errors import ConfigError, DataError
from spinnray.machine.core import CoreShape, SynapseShape
from spinnray.machine.quant import MixedPrecisionWeights, Quantizer, make_weight_store
from spinnray.rules.learning import learning_memory, WeightStoreSpec


def _reference(k0, units, max_shift, transfer):
    """The rule over integers in units of 2^-12, one level = 256 units at shift 0 (step 1/16, 4 bits):
    per column, while some weight would pass +-7 and the column may still widen, halve its codes
    (nearest, ties to even), move the remainder into the accumulator and double its level."""
    n_pre, n_col = k0.shape
    k = [[int(k0[i, j]) for j in range(n_col)] for i in range(n_pre)]
    a = [[0] * n_col for _ in range(n_pre)]
    shift, dropped = [0] * n_col, 0
    for u in units:
        for j in range(n_col):
            for i in range(n_pre):
                a[i][j] += int(u[i, j])
            while True:
                lvl = 256 << shift[j]
                n = [int(a[i][j] / lvl) if transfer == "threshold" else round(a[i][j] / lvl) for i in range(n_pre)]
                if shift[j] < max_shift and any(abs(k[i][j] + n[i]) > 7 for i in range(n_pre)):
                    for i in range(n_pre):
                        h = round(k[i][j] / 2)                     # Python rounds ties to even
                        a[i][j] += (k[i][j] - 2 * h) * lvl
                        k[i][j] = h
                    shift[j] += 1
                    continue
                for i in range(n_pre):
                    new = max(-7, min(7, k[i][j] + n[i]))
                    dropped += (k[i][j] + n[i] - new) * lvl
                    k[i][j] = new
                    a[i][j] -= n[i] * lvl
                break
    return np.array(k), np.array(a), np.array(shift), dropped


@pytest.mark.parametrize("transfer", ["round", "threshold"])
@pytest.mark.parametrize("growth", [1, 4, 16])
def test_widening_matches_an_integer_loop(rng, transfer, growth):
    q = Quantizer(4, 7 / 16)                                      # step 1/16
    shape, T = (5, 4), 120
    k0 = rng.integers(-6, 7, shape)
    units = rng.integers(-96, 160, (T,) + shape)                  # drifts upwards: columns must widen
    store = MixedPrecisionWeights(k0 / 16, q, transfer=transfer, growth=growth)
    for u in units:
        store.apply(u * 2.0 ** -12)
    k, a, shift, dropped = _reference(k0, units, int(np.log2(growth)), transfer)
    np.testing.assert_array_equal(store.codes, k)
    np.testing.assert_array_equal(store.accumulator.astype(np.float64), a * 2.0 ** -12)
    assert store.counters["dropped"] == dropped * 2.0 ** -12
    if growth == 1:
        assert store.shifts is None and store.counters["dropped_abs"] > 0 and "widened" not in store.counters
    else:
        np.testing.assert_array_equal(store.shifts, shift)
        assert store.counters["widened"] == shift.sum() > 0
        assert store.growth_reached() == 2.0 ** shift.max()
    # what was applied = the change of the high-precision weight k D_j + chi + what saturation refused
    hp = store.read().astype(np.float64) + store.accumulator
    assert np.isclose((hp - k0 / 16).sum() + store.counters["dropped"], (units * 2.0 ** -12).sum(), atol=1e-12)


def test_a_widening_grid_follows_the_float_weight_where_a_fixed_one_saturates(rng):
    w0 = rng.normal(0, 0.1, (30, 8))
    deltas = rng.normal(0.004, 0.01, (300, 30, 8))                # weights grow about 10x their initial spread
    fixed = MixedPrecisionWeights(w0, Quantizer(4, float(np.abs(w0).max())))
    grows = MixedPrecisionWeights(w0, Quantizer(4, float(np.abs(w0).max())), growth=32)
    target = grows.read() + deltas.sum(0)                         # from the initial weights on the grid
    for d in deltas:
        fixed.apply(d)
        grows.apply(d)
    step = fixed.q.step * 2.0 ** grows.shifts                     # per column
    assert grows.counters["dropped_abs"] == 0 and grows.at_limit() == 0
    assert np.all(np.abs(grows.read() - target) <= step / 2 + 1e-6)
    assert fixed.counters["dropped_abs"] > 1.0 and fixed.at_limit() > 0
    assert np.abs(fixed.read() - target).max() > 1.0
    # a column widens only as far as its own weights need
    need = np.ceil(np.log2(np.abs(target).max(axis=0) / (fixed.q.w_max * (1 + 0.5 / 7))))
    np.testing.assert_array_equal(grows.shifts, np.maximum(need, 0))


def test_past_the_largest_growth_the_grid_saturates_and_counts():
    store = MixedPrecisionWeights(np.array([[7 / 16, 0.0]]), Quantizer(4, 7 / 16), growth=2)
    store.apply(np.array([[7 / 16, 0.0]]))                        # 14/16: widened once, exactly at the new limit
    np.testing.assert_array_equal(store.shifts, [1, 0])
    np.testing.assert_array_equal(store.codes, [[7, 0]])
    np.testing.assert_array_equal(store.accumulator, 0.0)
    assert store.counters["dropped_abs"] == 0 and store.at_limit() == 1
    store.apply(np.array([[4 / 16, 0.0]]))                        # 18/16: the limit is 14/16
    np.testing.assert_array_equal(store.codes, [[7, 0]])
    assert store.counters["dropped"] == 4 / 16
    assert store.counters["widened"] == 1


def test_program_picks_each_columns_shift():
    store = MixedPrecisionWeights(np.zeros((2, 3)), Quantizer(4, 7 / 16), growth=8)
    store.program(np.array([[0.1, 0.9, 9.0], [-0.2, -0.5, 0.0]]))     # 0.9: within half a level of 2 x 7/16
    np.testing.assert_array_equal(store.shifts, [0, 1, 3])        # 9 > 8 x 7/16: saturates at the largest
    np.testing.assert_array_equal(store.read(), np.float32([[2 / 16, 14 / 16, 7 / 2], [-3 / 16, -8 / 16, 0]]))


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_split_widening_store_equals_the_whole(rng, rounding):
    w = rng.normal(0, 0.3, (9, 6))
    deltas = rng.normal(0.05, 0.1, (12, 9, 6))

    def store(cols):
        q = Quantizer(4, 0.5, rounding, seed=np.random.SeedSequence(5), columns=cols)
        s = MixedPrecisionWeights(w[:, cols], q, growth=8)
        for d in deltas:
            s.apply(d[:, cols])
        return s

    whole, left, right = store(np.arange(6)), store(np.arange(2)), store(np.arange(2, 6))
    np.testing.assert_array_equal(whole.read(), np.concatenate([left.read(), right.read()], axis=1))
    np.testing.assert_array_equal(whole.shifts, np.concatenate([left.shifts, right.shifts]))
    assert whole.counters["widened"] == left.counters["widened"] + right.counters["widened"] > 0


def test_state_keeps_the_shifts_and_refuses_what_does_not_fit(rng):
    make = (lambda: MixedPrecisionWeights(np.full((3, 4), 0.2), Quantizer(4, 0.25, "stochastic", 3, np.arange(4)),
                                          growth=4))
    a = make()
    for _ in range(6):
        a.apply(rng.normal(0.05, 0.05, (3, 4)))
    st = a.state()
    assert st["growth"] == 4.0 and st["shift"].dtype == np.int8 and st["shift"].max() > 0
    b = make()
    b.load_state(st)
    d = rng.normal(0.05, 0.05, (3, 4))
    a.apply(d)
    b.apply(d)
    assert a.state()["codes"].tolist() == b.state()["codes"].tolist() and a.counters == b.counters
    np.testing.assert_array_equal(a.shifts, b.shifts)
    bad = dict(st, shift=np.full(4, 3, np.int8))
    with pytest.raises(DataError, match=r"shift: shifts outside \[0, 2\]"):
        make().load_state(bad)
    with pytest.raises(DataError, match="growth"):
        make().load_state(dict(st, growth=8.0))
    fixed = MixedPrecisionWeights(np.full((3, 4), 0.2), Quantizer(4, 0.25, "stochastic", 3, np.arange(4)))
    with pytest.raises(DataError, match="unexpected growth, shift"):
        fixed.load_state(st)


def test_growth_options_are_checked():
    for bad in (3, 0.5, 256, True, float("nan"), "2"):
        with pytest.raises(ConfigError, match="machine.weight_range_growth = .*: expected a power of 2 from 1 to 128"):
            MachineConfig(weight_bits=4, weight_range_growth=bad)
    with pytest.raises(ConfigError, match="machine.accumulate = false: expected 1 or null"):
        MachineConfig(weight_bits=4, weight_range_growth=4, accumulate=False)
    with pytest.raises(ConfigError, match="machine.synapse = pcm: expected 1 or null"):
        MachineConfig(synapse="pcm", weight_range_growth=4)
    with pytest.raises(ConfigError, match="needs machine.accumulate = true"):
        make_weight_store(np.zeros((2, 2)), weight_bits=4, accumulate=False, growth=4)
    assert MachineConfig(weight_range_growth=16).range_growth == 1.0          # float weights: no grid
    assert MachineConfig(weight_bits=4, weight_range_growth=16).range_growth == 16.0
    assert "weight_range_growth" not in MachineConfig(weight_bits=4, weight_range_growth=1).identity()
    assert MachineConfig(weight_bits=4, weight_range_growth=16).identity()["weight_range_growth"] == 16.0


def test_a_core_counts_one_shift_byte_per_post_neuron():
    shape = CoreShape(model=None, n=10, batch=1, dtype="float32", history=(), n_sources=1,
                      incoming=(SynapseShape(pre_size=40), SynapseShape(pre_size=10)))
    spec = WeightStoreSpec(4, "nearest", True, "round", "ideal", None, 0, {}, growth=16.0)
    mem = learning_memory(shape, spec)
    fixed = learning_memory(shape, WeightStoreSpec(4, "nearest", True, "round", "ideal", None, 0, {}))
    assert mem["weight_shifts"] == 20 and "weight_shifts" not in fixed
    assert {k: v for k, v in mem.items() if k != "weight_shifts"} == fixed
