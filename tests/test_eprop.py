"""Model-parallel e-prop on the emulated cores, against independent references.

* tests/eprop_reference.py: a hand-written e-prop with explicit loops (float64);
* tests/bptt_reference.py: dense BPTT (equal to e-prop when there is no recurrence);
* the same training on 1, 3 and 12 hidden cores, local and ray: identical weights.
"""

import numpy as np
import pytest

import eprop_reference as ref
from spinnray import ALIF, LI, AnalogSource, MachineConfig, Network, Simulator
from bptt_reference import ALIFNetConfig, Weights, loss_and_grads
from spinnray.config import from_dict
from spinnray.errors import ConfigError, NetworkError
from spinnray.rules.eprop import TRAINING_STATE, hidden_core_split
from spinnray.rules.learning import LearningCore

from helpers import (EPropConfig, RecurrentALIFConfig, analog_split, eprop_learning, eprop_net, eprop_trainer,
                     held_bytes)

P = dict(tau_m_ms=5.0, tau_a_ms=150.0, tau_out_ms=10.0, dt_ms=1.0, beta=0.184, v_th=0.6,
         mg_lens=0.5, mg_scale=6.0, mg_height=0.15, steepness=5.0)


def _problem(seed=1, T=40, B=3, n_in=6, n_h=8, n_out=3, rec=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (T, B, n_in))
    w_in = rng.normal(0.0, 1.0, (n_in, n_h))
    w_rec = rng.normal(0.0, 0.5, (n_h, n_h)) * rec
    np.fill_diagonal(w_rec, 0.0)
    w_out = rng.normal(0.0, 1.0, (n_h, n_out))
    labels = rng.integers(0, n_out, B)
    return x, w_in, w_rec, w_out, labels


def _net(w_in, w_rec, w_out, beta=P["beta"]):
    n_in, n_h = w_in.shape
    net = Network(dt_ms=1.0)
    net.population("input", n_in, AnalogSource())
    net.population("hidden", n_h, ALIF(tau_mem_ms=P["tau_m_ms"], tau_adapt_ms=P["tau_a_ms"], beta=beta,
                                       v_th=P["v_th"]))
    net.population("output", w_out.shape[1], LI(tau_mem_ms=P["tau_out_ms"]))
    net.connect("input", "hidden", w_in)
    net.connect("hidden", "hidden", w_rec, mask=~np.eye(n_h, dtype=bool))
    net.connect("hidden", "output", w_out)
    return net


def _distributed_grads(x, w_in, w_rec, w_out, labels, cores, backend, surrogate="triangle", window=None,
                       feedback="symmetric", beta=P["beta"], **extra):
    B = x.shape[1]
    net, machine = _net(w_in, w_rec, w_out, beta), MachineConfig(dtype="float64")
    learning = eprop_learning(net, machine, lr=1e-3, surrogate=surrogate, gamma=0.3 if surrogate == "triangle" else 0.5,
                              window_steps=window, feedback=feedback, **extra)
    with Simulator(net, machine, cores_per_population={"hidden": cores, "output": 1}, backend=backend, batch_size=B,
                   learning=learning) as sim:
        res = sim.run(x.shape[0], inputs={"input": x}, targets={"output": labels})
        sim.backward(1.0 / B, rounds=1)
        got = sim.call(LearningCore.gradients)
        hid = [pl.core_id for pl in sim.mapping.cores_of("hidden")]
        out = sim.mapping.cores_of("output")[0].core_id
        g = {"w_in": np.concatenate([got[c][0] for c in hid], axis=1),
             "w_rec": np.concatenate([got[c][1] for c in hid], axis=1),
             "w_out": got[out][0]}
        cores_, _ = sim.reports()
    return g, res, cores_, None


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("surrogate", ["triangle", "multi_gaussian"])
@pytest.mark.parametrize("cores", [1, 3])
def test_no_recurrence_equals_bptt(surrogate, cores):
    """(a) W_rec = 0, symmetric feedback: e-prop on the cores = dense BPTT (float64)."""
    x, w_in, w_rec, w_out, labels = _problem(rec=0.0)
    g, res, _, _ = _distributed_grads(x, w_in, w_rec, w_out, labels, cores, "local", surrogate)
    cfg = ALIFNetConfig(n_in=6, n_h=8, n_out=3, tau_m_ms=P["tau_m_ms"], tau_a_ms=P["tau_a_ms"], beta=P["beta"],
                        v_th=P["v_th"], tau_out_ms=P["tau_out_ms"], surrogate=surrogate, dtype="float64")
    loss, bp, _ = loss_and_grads(cfg, Weights(w_in, w_rec, w_out), x, labels)
    assert np.isclose(res.outputs["loss"].mean(), loss, rtol=1e-12)
    assert np.abs(bp.w_in).max() > 1e-4 and np.abs(bp.w_rec).max() > 1e-5     # a gradient that can disagree
    for name in ("w_in", "w_rec", "w_out"):
        # learning signals travel as float32 payloads: relative error ~1e-8
        assert _rel(g[name], getattr(bp, name)) <= 1e-6, name


@pytest.mark.parametrize("cores", [1, 3])
def test_rate_regulariser_no_recurrence_equals_bptt(cores):
    """The firing-rate regulariser's e-prop gradient (a local learning signal times the summed
    unfiltered traces) = BPTT's gradient of the same loss when W_rec = 0 (float64)."""
    x, w_in, w_rec, w_out, labels = _problem(rec=0.0, seed=5)
    reg = dict(rate_reg=50.0, rate_target_hz=30.0)
    g, _, cores_, _ = _distributed_grads(x, w_in, w_rec, w_out, labels, cores, "local", "triangle", window=10,
                                         **reg)
    g0, _, _, _ = _distributed_grads(x, w_in, w_rec, w_out, labels, cores, "local", "triangle", window=10)
    cfg = ALIFNetConfig(n_in=6, n_h=8, n_out=3, tau_m_ms=P["tau_m_ms"], tau_a_ms=P["tau_a_ms"], beta=P["beta"],
                        v_th=P["v_th"], tau_out_ms=P["tau_out_ms"], surrogate="triangle", loss_window=10,
                        dtype="float64")
    loss, bp, rec = loss_and_grads(cfg, Weights(w_in, w_rec, w_out), x, labels, **reg)
    loss0, _, _ = loss_and_grads(cfg, Weights(w_in, w_rec, w_out), x, labels)
    rates = rec.z.mean(axis=(0, 1)) * 1000.0
    assert rates.min() < 30.0 < rates.max() and loss > loss0        # the regulariser pulls both ways
    assert _rel(g0["w_in"], bp.w_in) > 1e-2                          # and changes the gradient
    for name in ("w_in", "w_rec", "w_out"):
        assert _rel(g[name], getattr(bp, name)) <= 1e-6, name
    hid = [c for c in cores_ if c["population"] == "hidden"]
    # eps_v (B P), d and acc (B n P), psi (B n), and the regulariser's E (n P) and spike counts (n int64)
    B, n_pre = x.shape[1], 6 + 8
    assert sum(c["memory"]["traces"] for c in hid) == \
        8 * (B * n_pre * cores + 2 * B * 8 * n_pre + B * 8 + 8 * n_pre) + 8 * 8


def test_rate_regulariser_pulls_rates_to_the_target():
    """Training on the regulariser alone (a zero-gain readout loss is not possible, so a huge c)
    moves an over-active network's rates toward the target, identically on 1 and 3 cores."""
    rng = np.random.default_rng(3)
    T, n_in, B = 40, 6, 4
    x = rng.normal(0.3, 1.0, (T, B, n_in))
    y = rng.integers(0, 3, B)

    def run(cores):
        net = eprop_net(RecurrentALIFConfig(hidden=9, v_th=0.6, w_in_scale=3.0, w_out_scale=1.0),
                                  n_in, 3, seed=4)
        learn = EPropConfig(batch_size=B, lr=0.1, surrogate="triangle", gamma=0.3, rate_reg=1e4,
                                    rate_target_hz=20.0)
        tr = eprop_trainer(net, learn, machine=MachineConfig(dtype="float64"), hidden_cores=cores,
                          backend="local")
        try:
            rates = []
            for _ in range(15):
                res = tr.forward(x, None, record=("spikes",))
                rates.append(res.spikes["hidden"].mean() * 1000.0)
                tr.train_batch(x, y)
            return rates, tr.weights()
        finally:
            tr.close()

    rates, w1 = run(1)
    assert rates[0] > 80.0 and abs(rates[-1] - 20.0) < 0.5 * abs(rates[0] - 20.0), rates
    _, w3 = run(3)
    for name in w1:
        np.testing.assert_array_equal(w1[name], w3[name], err_msg=name)


def _mixed_net(n_lif, hidden=8, n_in=6, n_out=3, seed=2, refractory=0):
    cfg = RecurrentALIFConfig(hidden=hidden, n_lif=n_lif, tau_mem_ms=P["tau_m_ms"], tau_adapt_ms=P["tau_a_ms"],
                             beta=P["beta"], v_th=P["v_th"], tau_out_ms=P["tau_out_ms"], w_in_scale=4.0,
                             w_rec_scale=2.0, w_out_scale=3.0, refractory_steps=refractory)
    return eprop_net(cfg, n_in, n_out, seed)


def _full(net, by_proj, order=("lif", "hidden")):
    """Full (pre, post) matrices of the mixed network from per-projection blocks."""
    pops = [p for p in order if p in net.populations]
    w_in = np.concatenate([by_proj[f"input->{p}"] for p in pops], axis=1)
    w_rec = np.block([[by_proj[f"{a}->{b}"] for b in pops] for a in pops])
    w_out = np.concatenate([by_proj[f"{p}->output"] for p in pops], axis=0)
    return w_in, w_rec, w_out


def test_lif_alif_mix_is_one_population_split_in_two():
    """network.n_lif = m: the first m neurons are LIF in their own population, with the
    same initial weights as one population; m = 0 is the network as before."""
    one, mixed = _mixed_net(0), _mixed_net(3)
    assert list(one.populations) == ["input", "hidden", "output"]
    assert [(n, p.size, p.model.beta) for n, p in mixed.populations.items() if n in ("lif", "hidden")] == \
        [("lif", 3, 0.0), ("hidden", 5, P["beta"])]
    w1 = {p.name: p.weights for p in one.projections}
    w_in, w_rec, w_out = _full(mixed, {p.name: p.weights for p in mixed.projections})
    np.testing.assert_array_equal(w_in, w1["input->hidden"])
    np.testing.assert_array_equal(w_rec, w1["hidden->hidden"])
    np.testing.assert_array_equal(w_out, w1["hidden->output"])
    with pytest.raises(ConfigError, match="network.n_lif = 8"):
        _mixed_net(8)
    assert hidden_core_split(mixed, 4) == {"lif": 2, "hidden": 2}
    assert hidden_core_split(_mixed_net(1, hidden=10), 4) == {"lif": 1, "hidden": 3}
    with pytest.raises(ConfigError, match="cores_per_population = 1"):
        hidden_core_split(mixed, 1)


@pytest.mark.parametrize("cores,refractory", [(2, 0), (5, 0), (3, 3)])
def test_lif_alif_mix_matches_hand_written_eprop(cores, refractory):
    """50 LIF + 50 ALIF in small: the cores of both populations = the reference with a
    per-neuron beta (0 for the LIF neurons), with recurrence across the two; with a
    refractory period too (psi = 0 while refractory)."""
    net = _mixed_net(3, refractory=refractory)
    x, _, _, _, labels = _problem(seed=6)
    machine = MachineConfig(dtype="float64")
    learning = eprop_learning(net, machine, lr=1e-3, surrogate="triangle", gamma=0.3, window_steps=15)
    split = hidden_core_split(net, cores)
    with Simulator(net, machine, cores_per_population={**split, "output": 1}, backend="local",
                   batch_size=x.shape[1], learning=learning) as sim:
        res = sim.run(x.shape[0], inputs={"input": x}, targets={"output": labels}, record=("spikes",))
        sim.backward(1.0 / x.shape[1], rounds=1)
        got = sim.call(LearningCore.gradients)
        grads = {p.name: np.zeros(p.weights.shape) for p in net.projections}
        for pl in sim.mapping.placements:
            for proj, g in zip(net.incoming(net[pl.slice.population]), got[pl.core_id]):
                grads[proj.name][:, pl.slice.lo:pl.slice.hi] = g
    assert res.spikes["lif"].sum() > 10 and res.spikes["hidden"].sum() > 10
    w = _full(net, {p.name: p.weights for p in net.projections})
    p = dict(P, beta=[0.0] * 3 + [P["beta"]] * 5, surrogate="triangle", gamma=0.3, loss_window=15,
             refractory_steps=refractory)
    want, _, outs = ref.eprop(p, *w, x, labels)
    z = np.stack([o["z"] for o in outs], axis=1)                        # (T, B, n)
    np.testing.assert_array_equal(z, np.concatenate([res.spikes["lif"], res.spikes["hidden"]], axis=2))
    if refractory:        # spikes at most every refractory + 1 steps, and the period changed the spikes
        gaps = [np.diff(np.nonzero(z[:, b, j])[0]) for b in range(z.shape[1]) for j in range(z.shape[2])]
        assert min(g.min() for g in gaps if len(g)) == refractory + 1
        assert not np.array_equal(z, np.stack([o["z"] for o in ref.eprop(dict(p, refractory_steps=0), *w, x,
                                                                          labels)[2]], axis=1))
    g = dict(zip(("w_in", "w_rec", "w_out"), _full(net, grads)))
    for name in ("w_in", "w_rec", "w_out"):
        assert _rel(g[name], want[name]) <= 1e-6, name
    # the LIF neurons' beta matters: the reference with beta everywhere disagrees
    other, _, _ = ref.eprop(dict(p, beta=P["beta"]), *w, x, labels)
    assert _rel(other["w_in"], want["w_in"]) > 1e-3


@pytest.mark.parametrize("window", [None, 12])
def test_recurrent_gradients_match_hand_written_eprop(window):
    """(b) with recurrence: the cores' e-prop = the loop-by-loop reference."""
    x, w_in, w_rec, w_out, labels = _problem(seed=3)
    g, res, _, _ = _distributed_grads(x, w_in, w_rec, w_out, labels, 3, "local", "multi_gaussian", window)
    p = dict(P, surrogate="multi_gaussian", gamma=0.5, loss_window=window)
    want, _, outs = ref.eprop(p, w_in, w_rec, w_out, x, labels)
    spikes = sum(o["z"].sum() for o in outs)
    assert spikes > 20
    for name in ("w_in", "w_rec", "w_out"):
        assert _rel(g[name], want[name]) <= 1e-6, name
    # and with recurrence e-prop is not BPTT (so the test above could fail)
    cfg = ALIFNetConfig(n_in=6, n_h=8, n_out=3, tau_m_ms=P["tau_m_ms"], tau_a_ms=P["tau_a_ms"], beta=P["beta"],
                        v_th=P["v_th"], tau_out_ms=P["tau_out_ms"], surrogate="multi_gaussian",
                        loss_window=window, dtype="float64")
    _, bp, _ = loss_and_grads(cfg, Weights(w_in, w_rec, w_out), x, labels)
    assert _rel(g["w_rec"], bp.w_rec) > 1e-3


def test_lif_hidden_beta_zero_matches_reference():
    """beta = 0 (LIF): the core keeps no eps_a and still matches the reference."""
    x, w_in, w_rec, w_out, labels = _problem(seed=4)
    g, _, cores, _ = _distributed_grads(x, w_in, w_rec, w_out, labels, 2, "local", "triangle", beta=0.0)
    want, _, _ = ref.eprop(dict(P, beta=0.0, surrogate="triangle", gamma=0.3), w_in, w_rec, w_out, x, labels)
    for name in ("w_in", "w_rec", "w_out"):
        assert _rel(g[name], want[name]) <= 1e-6, name


def test_ray_equals_local_and_error_events_counted(ray_session):
    x, w_in, w_rec, w_out, labels = _problem(seed=5)
    g_l, res_l, cores_l, _ = _distributed_grads(x, w_in, w_rec, w_out, labels, 3, "local")
    g_r, res_r, cores_r, _ = _distributed_grads(x, w_in, w_rec, w_out, labels, 3, "ray")
    for name in g_l:
        np.testing.assert_array_equal(g_l[name], g_r[name])
    np.testing.assert_array_equal(res_l.outputs["loss"], res_r.outputs["loss"])
    assert [c["counters"] for c in cores_l] == [c["counters"] for c in cores_r]
    # the readout sends one learning signal per hidden neuron and sample; hidden cores receive them
    out = [c for c in cores_l if c["population"] == "output"][0]["counters"]
    hid = [c["counters"] for c in cores_l if c["population"] == "hidden"]
    assert out["error_events_sent"] == 8 * 3
    assert sum(h["error_events_received"] for h in hid) == 8 * 3
    assert all(h["error_events_sent"] == 0 for h in hid)


def _train(cores, backend, steps=3, batch=4, feedback="symmetric", n_lif=0, rate_reg=0.0):
    rng = np.random.default_rng(7)
    T, n_in = 30, 5
    net = eprop_net(RecurrentALIFConfig(hidden=12, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0, n_lif=n_lif),
                              n_in, 3, seed=2)
    learn = EPropConfig(batch_size=batch, lr=0.01, surrogate="triangle", gamma=0.3, feedback=feedback,
                                rate_reg=rate_reg)
    tr = eprop_trainer(net, learn, machine=MachineConfig(dtype="float64"), hidden_cores=cores, backend=backend)
    try:
        for _ in range(steps):
            x = rng.normal(0, 1, (T, batch, n_in))
            tr.train_batch(x, rng.integers(0, 3, batch))
        return tr.weights()
    finally:
        tr.close()


@pytest.mark.parametrize("feedback", ["symmetric", "random"])
def test_training_identical_for_1_3_12_cores(feedback):
    """(c) same seed -> the same weights after training, whatever the split."""
    ws = {c: _train(c, "local", feedback=feedback) for c in (1, 3, 12)}
    for c in (3, 12):
        for name in ws[1]:
            np.testing.assert_array_equal(ws[1][name], ws[c][name], err_msg=f"{name}, {c} cores")
    assert not np.allclose(ws[1]["input->hidden"], _train(1, "local", steps=0)["input->hidden"])


def test_mix_and_regulariser_train_identically_for_2_4_12_cores():
    """(c) with 5 LIF + 7 ALIF and the rate regulariser: same weights for any split."""
    ws = {c: _train(c, "local", n_lif=5, rate_reg=5.0) for c in (2, 4, 12)}
    for c in (4, 12):
        for name in ws[2]:
            np.testing.assert_array_equal(ws[2][name], ws[c][name], err_msg=f"{name}, {c} cores")
    assert set(ws[2]) >= {"input->lif", "lif->hidden", "hidden->lif", "lif->output"}


def test_training_ray_equals_local(ray_session):
    a, b = _train(3, "local", steps=2), _train(3, "ray", steps=2)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def _paper_memory(steps):
    net = eprop_net(RecurrentALIFConfig(), 80, 12, seed=0)
    tr = eprop_trainer(net, EPropConfig(batch_size=1), machine=MachineConfig(dtype="float32"),
                      hidden_cores=12, backend="local")
    try:
        x = np.random.default_rng(0).normal(0, 1, (steps, 1, 80)).astype(np.float32)
        tr.train_batch(x, np.array([3]))
        cores, _ = tr.sim.reports()
    finally:
        tr.close()
    return cores


def test_paper_network_memory_constant_in_T():
    """Rostami et al.'s 80-120-12 on 12 + 1 cores: training state <= 680 KB, every core under 128 KB,
    the same at T = 100 and T = 1000."""
    a, b = _paper_memory(100), _paper_memory(1000)
    assert [c["memory"] for c in a] == [c["memory"] for c in b]
    state = sum(v for c in a for k, v in c["memory"].items() if k in TRAINING_STATE)
    assert state <= 680_000
    # the arrays held: 25,440 weights x (weights, gradients, two Adam moments) in float32
    assert sum(c["memory"]["weights"] for c in a) == 25_440 * 4
    assert all(sum(c["memory"].values()) <= 128 * 1024 for c in a)
    assert len([c for c in a if c["population"] == "hidden"]) == 12


@pytest.mark.parametrize("n_lif,rate_reg", [(0, 0.0), (7, 1.0)])
def test_learning_bytes_estimate_matches_cores(n_lif, rate_reg):
    net = eprop_net(RecurrentALIFConfig(hidden=20, n_lif=n_lif), 7, 3, seed=0)
    tr = eprop_trainer(net, EPropConfig(batch_size=2, rate_reg=rate_reg), machine=MachineConfig(),
                      hidden_cores=4, backend="local")
    try:
        cores, _ = tr.sim.reports()
        held = [held_bytes(c) for c in tr.sim.backend.cores]
        estimate = tr.sim.mapping.memory
    finally:
        tr.close()
    assert {c["population"] for c in cores} == ({"lif", "hidden", "output"} if n_lif else {"hidden", "output"})
    # the mapper's estimate = the core's report = the arrays it holds
    assert [c["memory"] for c in cores] == estimate == held


def test_learns_a_tiny_task_above_chance():
    """Which of two input groups is more active: e-prop on 3 cores learns it online-ish."""
    rng = np.random.default_rng(0)
    T, n_in, B = 30, 8, 8

    def data(n):
        y = rng.integers(0, 2, n)
        rate = np.where(np.arange(n_in)[None, :] < n_in // 2, 0.05, 0.3)
        rate = np.where(y[:, None] == 1, rate, rate[:, ::-1])
        x = (rng.random((n, T, n_in)) < rate[:, None, :]).astype(np.float64)
        return x, y

    xtr, ytr = data(160)
    xte, yte = data(100)
    net = eprop_net(RecurrentALIFConfig(hidden=12, v_th=0.6, tau_mem_ms=10.0, w_in_scale=4.0,
                                                 w_out_scale=10.0), n_in, 2, seed=1)
    learn = EPropConfig(batch_size=B, lr=0.02, surrogate="triangle", gamma=0.3)
    tr = eprop_trainer(net, learn, machine=MachineConfig(dtype="float64"), hidden_cores=3, backend="local")
    try:
        before, _ = tr.evaluate(analog_split(xte, yte), B)
        for _ in range(3):
            for first in range(0, len(ytr), B):
                tr.train_batch(np.ascontiguousarray(xtr[first:first + B].transpose(1, 0, 2)), ytr[first:first + B])
        after, _ = tr.evaluate(analog_split(xte, yte), B)
    finally:
        tr.close()
    assert after >= 0.8 and after > before + 0.1, (before, after)


def test_bad_configs_name_the_value():
    with pytest.raises(ConfigError, match="rate_reg = -1"):
        from_dict(EPropConfig, {"rate_reg": -1}, "learning")
    with pytest.raises(ConfigError, match="learning.surrogate = 'relu'"):
        from_dict(EPropConfig, {"surrogate": "relu"}, "learning")
    with pytest.raises(ConfigError, match="gamma = -1.0"):
        from_dict(EPropConfig, {"gamma": -1.0}, "learning")
    bad = Network()
    bad.population("input", 3, AnalogSource())
    bad.population("hidden", 4, ALIF())
    bad.connect("input", "hidden", np.ones((3, 4)))
    with pytest.raises(NetworkError, match="delays = 2 from the AnalogSource"):
        bad.connect("input", "hidden", np.ones((3, 4)), delays=2, name="again")
