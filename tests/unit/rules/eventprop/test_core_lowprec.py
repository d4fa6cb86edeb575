"""Low-precision and PCM weights inside the EventProp cores (machine.weight_bits, synapse, ...).

References: the grid, Adam's first step and the byte rules written out by hand; the same training
on other core splits and replica counts; the PCM drift law at the documented device clock.
"""

import numpy as np
import pytest

from spinnray.config import MachineConfig
from spinnray.data import encode_yin_yang, yin_yang
from spinnray.machine.quant import PCMParams
from spinnray.rules.eventprop.core import EventPropCore
from spinnray.rules.learning import weight_store_options

from helpers import EventPropConfig, FeedForwardConfig, eventprop_trainer, yinyang_net

NET = FeedForwardConfig(steps=50, hidden=40)


def data(n, seed):
    x, y = yin_yang(n, seed)
    return encode_yin_yang(x, scheme="wunderlich", steps=NET.steps), y


def trainer(machine, replicas=1, cores=None, backend="local", batch=24, lr=5e-3, bump=5e-3, net=None):
    learn = EventPropConfig(batch_size=batch, lr=lr, bump=bump)
    return eventprop_trainer(net or yinyang_net(NET, seed=0), learn, machine=machine, cores_per_population=cores,
                            replicas=replicas, backend=backend)


def train(machine, batches=3, batch=24, **kw):
    """(weights of replica 0, checksums per slice, core reports) after ``batches`` mini-batches."""
    x, y = data(batches * batch, 42)
    tr = trainer(machine, batch=batch, **kw)
    try:
        for k in range(batches):
            idx = np.arange(k * batch, (k + 1) * batch)
            tr.train_batch(x[:, idx], y[idx])
        cores, _ = tr.sim.reports()
        return tr.weights(), tr.checksums(), cores
    finally:
        tr.close()


def levels(w, w_max, bits):
    """Weights in units of one grid level D = w_max / (2^(bits-1) - 1)."""
    return w / (w_max / (2 ** (bits - 1) - 1))


@pytest.mark.parametrize("bits, lr", [(8, 0.05), (4, 0.3)])
def test_first_update_is_adams_step_rounded_onto_the_grid(bits, lr):
    """Initial weights clip(rint(w0 / D), -L, L) D; after one mini-batch each stored weight is
    clip(k0 + rint(delta / D), -L, L) D with Adam's first step delta = -lr g / (|g| + eps),
    written out here from the cores' gradients (nearest rounding, accumulator, transfer round)."""
    w_max, L = 3.0, 2 ** (bits - 1) - 1
    m = MachineConfig(dtype="float64", weight_bits=bits, weight_max=w_max, weight_range_growth=1)
    net = yinyang_net(NET, seed=0)
    x, y = data(24, 42)
    tr = trainer(m, lr=lr, bump=0.0, net=net)
    try:
        w0 = tr.weights()
        tr.forward(x, y)
        tr.sim.backward(scale=1.0 / len(y))
        ids = [pl.core_id for pl in tr.learners]
        grads = tr.sim.call(EventPropCore.gradients, cores=ids)
        tr.sim.call(EventPropCore.apply, {i: (grads[i], lr) for i in ids}, cores=ids)
        w1 = tr.weights()
        g = {("input->hidden" if pl.slice.population == "hidden" else "hidden->output"): grads[pl.core_id][0]
             for pl in tr.learners}
    finally:
        tr.close()
    saturated = 0
    for p in net.projections:
        k0 = np.clip(np.rint(p.weights / (w_max / L)), -L, L)
        np.testing.assert_allclose(levels(w0[p.name], w_max, bits), k0, atol=1e-6, err_msg=p.name)
        delta = -lr * g[p.name] / (np.abs(g[p.name]) + 1e-8)
        k1 = np.clip(k0 + np.rint(delta / (w_max / L)), -L, L)
        np.testing.assert_allclose(levels(w1[p.name], w_max, bits), k1, atol=1e-6, err_msg=p.name)
        assert (k1 != k0).any()                                  # the update moved levels
        saturated += int((np.abs(k1) == L).sum())
    assert saturated > 0                                         # some weights sit at +-w_max
    assert max(np.abs(w).max() for w in w1.values()) <= w_max * (1 + 1e-6)


@pytest.mark.parametrize("bits, rounding", [(8, "nearest"), (4, "stochastic")])
def test_trained_weights_stay_on_the_grid_and_saturate(bits, rounding):
    """A few mini-batches with a narrow range (weight_range 0.75 x max |w0|): every stored weight is
    a whole level within +-w_max, some sit at the bound, and the default ranges are 0.75 x the largest
    initial weight into each population."""
    m = MachineConfig(dtype="float64", weight_bits=bits, rounding=rounding, weight_range=0.75, weight_range_growth=1)
    net = yinyang_net(NET, seed=0)
    ranges = weight_store_options(m, net).ranges
    w, crcs, _ = train(m, lr=0.05, net=net)
    L = 2 ** (bits - 1) - 1
    for p in net.projections:
        assert ranges[p.name] == pytest.approx(0.75 * np.abs(p.weights).max())
        k = levels(w[p.name], ranges[p.name], bits)
        np.testing.assert_allclose(k, np.rint(k), atol=1e-6, err_msg=p.name)
        assert np.abs(k).max() <= L * (1 + 1e-6) and (np.abs(np.rint(k)) == L).any(), p.name
        assert not np.allclose(w[p.name], np.clip(p.weights, -ranges[p.name], ranges[p.name]))


@pytest.mark.parametrize("bits, rounding", [(8, "nearest"), (4, "stochastic")])
def test_replicas_and_splits_hold_the_same_stored_weights(bits, rounding):
    """R = 2 replicas end bit-identical (stored codes and accumulators, by checksum), and equal to
    R = 1 and to the hidden layer split over 3 cores, for the same total batch of 24."""
    m = MachineConfig(dtype="float64", weight_bits=bits, rounding=rounding)
    ref, ref_crc, _ = train(m)
    two, crcs, _ = train(m, replicas=2)
    assert all(len(c) == 2 and c[0] == c[1] for c in crcs.values()), crcs
    split, split_crc, _ = train(m, cores={"hidden": 3})
    for name in ref:
        np.testing.assert_array_equal(two[name], ref[name], err_msg=name)
        np.testing.assert_array_equal(split[name], ref[name], err_msg=name)
    assert [c[0] for c in crcs.values()] == [c[0] for c in ref_crc.values()]
    other, _, _ = train(MachineConfig(dtype="float64", weight_bits=bits, rounding=rounding, weight_seed=3))
    if rounding == "stochastic":                 # the seed drives the rounding
        assert any(not np.array_equal(other[k], ref[k]) for k in ref)
    else:
        assert all(np.array_equal(other[k], ref[k]) for k in ref)
    flt, _, _ = train(MachineConfig(dtype="float64"))
    assert all(not np.array_equal(flt[k], ref[k]) for k in ref)   # the store is really used


def test_bump_goes_through_the_store():
    """The silent-neuron bump is an update to the store: 0.9 of a level D on the bumped columns
    moves their codes by one (saturated codes stay), the other columns keep theirs."""
    bits, w_max = 4, 3.0
    D = w_max / 7
    tr = trainer(MachineConfig(dtype="float64", weight_bits=bits, weight_max=w_max, weight_range_growth=1))
    try:
        out = [pl.core_id for pl in tr.learners if pl.slice.population == "output"]
        before = levels(tr.weights()["hidden->output"], w_max, bits)
        tr.sim.call(EventPropCore.bump, {out[0]: (0.9 * D, np.array([1]))}, cores=out)   # rounds to one level
        after = levels(tr.weights()["hidden->output"], w_max, bits)
    finally:
        tr.close()
    np.testing.assert_allclose(after[:, 1], np.minimum(np.rint(before[:, 1]) + 1, 7), atol=1e-6)
    np.testing.assert_array_equal(after[:, [0, 2]], before[:, [0, 2]])


def test_memory_counts_the_stored_bits():
    """Core reports = the mapper's estimate; a 4-bit store packs two weights a byte (ceil per
    projection and core) plus a 4-byte accumulator each; 8 bits one byte; PCM 24 bytes."""
    net = yinyang_net(NET, seed=0)
    n_w = {"hidden": 5 * 40, "output": 40 * 3}
    got = {}
    for name, m in {"32": MachineConfig(), "8": MachineConfig(weight_bits=8), "4": MachineConfig(weight_bits=4),
                    "4-no-acc": MachineConfig(weight_bits=4, accumulate=False),
                    "pcm": MachineConfig(synapse="pcm")}.items():
        x, y = data(24, 42)
        tr = trainer(m, cores={"hidden": 3}, net=net)
        try:
            tr.train_batch(x, y)
            cores, _ = tr.sim.reports()
            estimate = {pl.core_id: mem for pl, mem in zip(tr.sim.mapping.placements, tr.sim.mapping.memory)}
        finally:
            tr.close()
        for c in cores:
            if c["population"] == "input":
                continue
            for k in set(c["memory"]) | set(estimate[c["core_id"]]):
                if k != "spike_records":             # estimated from a spike rate; checked at run time
                    assert c["memory"].get(k, 0) == estimate[c["core_id"]].get(k, 0), (name, k)
        got[name] = [c for c in cores if c["population"] != "input"]

    def total(name, key):
        return sum(c["memory"].get(key, 0) for c in got[name])

    hidden_slices = [c["slice"][1] - c["slice"][0] for c in got["4"] if c["population"] == "hidden"]
    assert sorted(hidden_slices) == [13, 13, 14]
    assert total("32", "weights") == 4 * sum(n_w.values())
    assert total("8", "weights") == sum(n_w.values())
    assert total("4", "weights") == sum(-(-5 * n * 4 // 8) for n in hidden_slices) + 40 * 3 * 4 // 8
    assert total("4", "weights") == 35 + 33 + 33 + 60   # 14 x 5 = 70 weights: 35 bytes; 13 x 5 = 65: 33 (rounded up)
    for name in ("8", "4", "pcm", "4-no-acc"):
        assert total(name, "weight_accumulator") == (0 if name == "4-no-acc" else 4 * sum(n_w.values()))
    assert total("32", "weight_accumulator") == 0
    assert total("pcm", "weights") == 24 * sum(n_w.values())


def test_pcm_is_deterministic_under_its_seed_and_replicas_agree():
    """PCM: the same seed gives the same devices bit for bit; another seed other weights; two
    replicas with uneven shards (5 samples: 3 + 2) still hold identical devices (one clock)."""
    m = MachineConfig(dtype="float64", synapse="pcm")
    a, ca, _ = train(m, batches=2)
    b, cb, _ = train(m, batches=2)
    c, _, _ = train(MachineConfig(dtype="float64", synapse="pcm", weight_seed=5), batches=2)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert ca == cb
    assert all(not np.array_equal(a[k], c[k]) for k in a)
    _, crcs, _ = train(m, batches=2, batch=5, replicas=2)
    assert all(len(v) == 2 and v[0] == v[1] for v in crcs.values()), crcs


def test_pcm_drifts_with_the_device_clock():
    """Noise-free devices, forward runs only: the weights drift as w0 ((t + t0) / t0)^-nu with
    t = runs x mapped batch x T x dt, here 3 runs x 24 x 50 ms, whatever each run's batch."""
    p = PCMParams.noise_free(nu_mean=0.05, refresh=False)
    net = yinyang_net(NET, seed=0)
    tr = trainer(MachineConfig(dtype="float64", synapse="pcm", pcm=p), net=net)
    try:
        start = tr.weights()
        x, y = data(24, 42)
        for b in (24, 10, 24):
            tr.forward(x[:, :b], y[:b])
        now = tr.weights()
    finally:
        tr.close()
    factor = ((3 * 24 * NET.steps * 1e-3 + p.t0_s) / p.t0_s) ** -p.nu_mean
    assert factor < 0.995
    for proj in net.projections:
        np.testing.assert_allclose(start[proj.name], proj.weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(now[proj.name], proj.weights * factor, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("machine", [MachineConfig(dtype="float64", weight_bits=4, rounding="stochastic"),
                                     MachineConfig(dtype="float64", synapse="pcm")], ids=["4bit", "pcm"])
def test_learning_state_round_trip_continues_identically(machine):
    """A checkpoint of the stores (codes, accumulators, devices, random streams, clock) resumes bit for bit."""
    x, y = data(96, 42)
    batches = [np.arange(k * 24, (k + 1) * 24) for k in range(4)]
    tr = trainer(machine, replicas=2)
    try:
        for idx in batches[:2]:
            tr.train_batch(x[:, idx], y[idx])
        state = tr.state()
        for idx in batches[2:]:
            tr.train_batch(x[:, idx], y[idx])
        want, crc = tr.weights(), tr.checksum()
    finally:
        tr.close()
    tr = trainer(machine, replicas=2)
    try:
        tr.load_state(state)
        for idx in batches[2:]:
            tr.train_batch(x[:, idx], y[idx])
        got = tr.weights()
        assert tr.checksum() == crc
    finally:
        tr.close()
    for name in want:
        np.testing.assert_array_equal(want[name], got[name], err_msg=name)
