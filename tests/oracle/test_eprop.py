"""Model-parallel e-prop on the emulated cores, against independent references.

* oracle/eprop_reference.py: a hand-written e-prop with explicit loops (float64);
* oracle/bptt_reference.py: dense BPTT (equal to e-prop when there is no recurrence);
(the same training on any split: tests/unit/rules/eprop/test_core.py; on Ray and learning
a task: tests/integration/test_eprop.py).
"""

import numpy as np
import pytest

from spinnray import ALIF, LI, AnalogSource, MachineConfig, Network, Simulator
from spinnray.rules.eprop import hidden_core_split
from spinnray.rules.learning import LearningCore

from helpers import RecurrentALIFConfig, eprop_learning, eprop_net
from oracle import eprop_reference as ref
from oracle.bptt_reference import ALIFNetConfig, Weights, loss_and_grads

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


def _net(w_in, w_rec, w_out, beta=P["beta"], rec_delay=1, out_delay=1):
    n_in, n_h = w_in.shape
    net = Network(dt_ms=1.0)
    net.population("input", n_in, AnalogSource())
    net.population("hidden", n_h, ALIF(tau_mem_ms=P["tau_m_ms"], tau_adapt_ms=P["tau_a_ms"], beta=beta,
                                       v_th=P["v_th"]))
    net.population("output", w_out.shape[1], LI(tau_mem_ms=P["tau_out_ms"]))
    net.connect("input", "hidden", w_in)
    net.connect("hidden", "hidden", w_rec, delays=rec_delay, mask=~np.eye(n_h, dtype=bool))
    net.connect("hidden", "output", w_out, delays=out_delay)
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
