"""Low-precision and PCM weights inside the e-prop cores (machine.weight_bits, synapse, ...).

References: the grid and byte rules of spinnray.machine.quant written out by hand; the same training on
other core splits; the drift law of the PCM model at the documented read time.  (On Ray, and learning a
task at low precision: tests/integration/test_lowprec.py.)
"""

import numpy as np
import pytest

from spinnray import MachineConfig
from spinnray.machine.quant import PCMParams
from spinnray.rules.learning import store_summary, weight_store_options

from helpers import EPropConfig, RecurrentALIFConfig, eprop_net, eprop_trainer

T, N_IN = 30, 5


def _net(hidden=12):
    return eprop_net(RecurrentALIFConfig(hidden=hidden, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0),
                               N_IN, 3, seed=2)


def _trainer(machine, cores=3, backend="local", batch=4, lr=0.05, net=None):
    learn = EPropConfig(batch_size=batch, lr=lr, surrogate="triangle", gamma=0.3)
    return eprop_trainer(net or _net(), learn, machine=machine, hidden_cores=cores, backend=backend)


def _train(machine, cores=3, backend="local", steps=3, batch=4, lr=0.05, net=None):
    rng = np.random.default_rng(7)
    tr = _trainer(machine, cores, backend, batch, lr, net)
    try:
        for i in range(steps):
            x = rng.normal(0, 1, (T, batch, N_IN))
            tr.train_batch(x, rng.integers(0, 3, batch))
        cores_, _ = tr.sim.reports()
        return tr.weights(), cores_
    finally:
        tr.close()


@pytest.mark.parametrize("bits, rounding, lr, w_max", [(8, "nearest", 0.05, None), (4, "stochastic", 0.5, None),
                                                       (2, "nearest", 1.0, 1.0)])
def test_stored_weights_lie_on_the_grid(bits, rounding, lr, w_max):
    # (at 2 bits the default range 2 max|w0| rounds every initial weight to 0: the range is set)
    m = MachineConfig(dtype="float64", weight_bits=bits, rounding=rounding, weight_max=w_max, weight_range_growth=1)
    net = _net()
    ranges = weight_store_options(m, net).ranges
    w0 = {p.name: p.weights for p in net.projections}
    start, _ = _train(m, steps=0)
    w, _ = _train(m, lr=lr)                       # Adam steps of about lr: a level in 3 steps
    L = 2 ** (bits - 1) - 1
    moved = 0
    for name, arr in w.items():
        pre, post = name.split("->")          # null = 2 x its own max |w0|, 7 x for the recurrent projection
        assert ranges[name] == pytest.approx(w_max or (7 if pre == post else 2) * np.abs(w0[name]).max())
        k = arr / (ranges[name] / L)
        np.testing.assert_allclose(k, np.rint(k), atol=1e-5, err_msg=name)    # on the grid (float32 decode)
        assert np.abs(k).max() <= L + 1e-6                                     # saturated at +-w_max
        k0 = start[name] / (ranges[name] / L)
        np.testing.assert_allclose(k0, np.rint(k0), atol=1e-5, err_msg=name)  # quantized from the start
        moved += int((np.rint(k) != np.rint(k0)).sum())
    assert np.all(np.diag(w["hidden->hidden"]) == 0)                            # no self-connections
    assert moved > 0                                                            # training moved levels


def test_memory_counts_the_stored_bits():
    net = _net(hidden=20)
    n_w = {"hidden": 5 * 20 + 20 * 20, "output": 20 * 3}      # weights per population
    got = {}
    for bits in (32, 8, 4):
        _, cores = _train(MachineConfig(weight_bits=bits), cores=2, steps=1, net=net)
        got[bits] = cores
        tr = _trainer(MachineConfig(weight_bits=bits), cores=2, net=net)
        try:                                                   # the mapper's estimate = what the core holds
            assert [c["memory"] for c in cores] == tr.sim.mapping.memory, bits
        finally:
            tr.close()
    tot = {b: sum(c["memory"]["weights"] for c in got[b]) for b in got}
    assert tot[32] == 4 * sum(n_w.values())
    # packed per projection and core, ceil(n bits / 8); 2 hidden cores of 10 neurons
    assert tot[8] == 2 * (5 * 10 + 20 * 10) + 20 * 3
    assert tot[4] * 2 == tot[8]
    acc = {b: sum(c["memory"].get("weight_accumulator", 0) for c in got[b]) for b in got}
    assert acc[32] == 0 and acc[8] == acc[4] == 4 * sum(n_w.values())
    _, no_acc = _train(MachineConfig(weight_bits=4, accumulate=False), cores=2, steps=1, net=net)
    assert all("weight_accumulator" not in c["memory"] for c in no_acc)
    _, pcm = _train(MachineConfig(synapse="pcm"), cores=2, steps=1, net=net)
    assert sum(c["memory"]["weights"] for c in pcm) == 24 * sum(n_w.values())   # two devices x 12 B


def test_stochastic_4bit_is_identical_for_any_split():
    """Per-neuron random streams: 1 and 3 cores draw the same numbers (rounding every update)."""
    m = MachineConfig(dtype="float64", weight_bits=4, rounding="stochastic", accumulate=False)
    a, _ = _train(m, cores=1)
    b, _ = _train(m, cores=3)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    c, _ = _train(MachineConfig(dtype="float64", weight_bits=4, rounding="stochastic", accumulate=False,
                                weight_seed=1), cores=3)
    assert any(not np.array_equal(a[k], c[k]) for k in a)                 # the seed matters


def test_widening_grids_are_identical_for_any_split():
    """Each post neuron's grid widens on its own (machine.weight_range_growth): 1 and 3 cores widen the
    same columns at the same steps; a grid that starts too narrow widens instead of refusing updates."""
    m = MachineConfig(dtype="float64", weight_bits=4, rounding="stochastic", weight_range=0.25,
                      weight_range_recurrent=0.25, weight_range_growth=16)
    a, ca = _train(m, cores=1, lr=0.5)
    b, cb = _train(m, cores=3, lr=0.5)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    grown, fixed = store_summary(cb), store_summary(_train(
        MachineConfig(dtype="float64", weight_bits=4, rounding="stochastic", weight_range=0.25,
                      weight_range_recurrent=0.25, weight_range_growth=1), cores=3, lr=0.5)[1])
    assert store_summary(ca) == grown
    assert all(grown[p]["widened"] > 0 and grown[p]["growth_reached"] >= 2 for p in grown), grown
    assert sum(g["dropped_abs"] for g in grown.values()) < sum(f["dropped_abs"] for f in fixed.values())
    hidden = [c for c in cb if c["population"] == "hidden"]        # input and recurrent: a byte per neuron each
    assert [c["memory"]["weight_shifts"] for c in hidden] == [2 * (c["slice"][1] - c["slice"][0]) for c in hidden]


def test_pcm_is_deterministic_under_its_seed_and_split():
    m = MachineConfig(dtype="float64", synapse="pcm")
    a, _ = _train(m, cores=3)
    b, _ = _train(m, cores=3)
    c, _ = _train(m, cores=1)
    d, _ = _train(MachineConfig(dtype="float64", synapse="pcm", weight_seed=5), cores=3)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        np.testing.assert_array_equal(a[name], c[name], err_msg=name)
    assert all(not np.array_equal(a[k], d[k]) for k in a)


def test_pcm_reads_at_the_emulated_time_of_the_sample():
    """Noise-free devices, no update: the weights drift as w0 ((t + t0) / t0)^-nu, with
    t = samples run x T x dt, counted over forward runs (here 3 runs of 4 samples of 30 ms)."""
    p = PCMParams.noise_free(nu_mean=0.05, refresh=False)
    m = MachineConfig(dtype="float64", synapse="pcm", pcm=p)
    net = _net()
    tr = _trainer(m, cores=2, net=net)
    try:
        w_start = tr.weights()
        rng = np.random.default_rng(0)
        for _ in range(3):
            tr.forward(rng.normal(0, 1, (T, 4, N_IN)), None)
        w_now = tr.weights()
    finally:
        tr.close()
    t = 3 * 4 * T * 1e-3
    factor = ((t + p.t0_s) / p.t0_s) ** -p.nu_mean
    for proj in net.projections:
        # noise-free programming writes w0 exactly (up to float32 conductances)
        np.testing.assert_allclose(w_start[proj.name], proj.weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w_now[proj.name], proj.weights * factor, rtol=1e-5, atol=1e-6)
    assert factor < 0.9999


def test_learning_state_round_trip_continues_identically():
    """A checkpoint of the stores (codes, accumulators, random streams) resumes bit for bit."""
    m = MachineConfig(dtype="float64", weight_bits=4, rounding="stochastic", accumulate=False)
    rng = np.random.default_rng(3)
    xs = [(rng.normal(0, 1, (T, 4, N_IN)), rng.integers(0, 3, 4)) for _ in range(4)]
    tr = _trainer(m)
    try:
        for x, y in xs[:2]:
            tr.train_batch(x, y)
        state = tr.state()
        for x, y in xs[2:]:
            tr.train_batch(x, y)
        want, crc = tr.weights(), tr.checksum()
    finally:
        tr.close()
    tr = _trainer(m)
    try:
        tr.load_state(state)
        for x, y in xs[2:]:
            tr.train_batch(x, y)
        got = tr.weights()
        assert tr.checksum() == crc
    finally:
        tr.close()
    for name in want:
        np.testing.assert_array_equal(want[name], got[name])


def test_weights_at_the_grid_limit_are_reported_once_per_copy():
    """A grid narrower than the weights saturates: each core reports, per projection, the stored
    weights at +-w_max (counted here from the weights themselves) and the updates refused there;
    the run's summary counts each slice once, whatever the number of data-parallel copies."""
    m = MachineConfig(dtype="float64", weight_bits=4, weight_max=0.5, weight_range_growth=1)
    rng = np.random.default_rng(7)
    learn = EPropConfig(batch_size=4, lr=0.5, surrogate="triangle", gamma=0.3)
    tr = eprop_trainer(_net(), learn, machine=m, hidden_cores=3, replicas=2)
    try:
        for _ in range(3):
            tr.train_batch(rng.normal(0, 1, (T, 4, N_IN)), rng.integers(0, 3, 4))
        w = tr.weights()
        cores, _ = tr.sim.reports()
    finally:
        tr.close()
    summary = store_summary(cores)
    assert set(summary) == set(w)
    for name, weights in w.items():
        st = summary[name]
        limit = int(np.count_nonzero(np.isclose(np.abs(weights), 0.5)))
        assert st["weights"] == weights.size and st["at_limit"] == limit
        assert st["at_limit_fraction"] == pytest.approx(limit / weights.size)
        assert st["updates"] == 3
    assert sum(st["at_limit"] for st in summary.values()) > 0
    assert sum(st["dropped_abs"] for st in summary.values()) > 0
    per_core = sum(c["weight_store"]["input->hidden"]["at_limit"] for c in cores if "weight_store" in c
                   and "input->hidden" in c["weight_store"])
    assert per_core == 2 * summary["input->hidden"]["at_limit"]       # two identical copies
    assert store_summary([{k: v for k, v in c.items() if k != "weight_store"} for c in cores]) is None
