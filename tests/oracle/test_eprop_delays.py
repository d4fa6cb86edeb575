"""Every legal delay is exact in e-prop: readout and recurrent delays of 1-3 steps, every exchange
interval K <= the smallest delay, 1 and 3 hidden cores, with and without recurrence, in float64,
against the loop-by-loop reference (oracle/eprop_reference.py) and, without recurrence, against
dense BPTT (oracle/bptt_reference.py).

The learning signals cross the router as float32 (the packet format), so the cores' hidden
gradients are compared with the reference given the same float32 signals (``signal_dtype``); the
readout's gradient and the reference itself (against BPTT) involve no wire and are compared as they
are.  The Ray backend: tests/integration/test_eprop_delays.py.
"""

from functools import lru_cache

import numpy as np
import pytest

from spinnray import ALIF, LI, AnalogSource, MachineConfig, Network, Simulator
from spinnray.mapping import Learning
from spinnray.rules.learning import LearningCore

from helpers import eprop_learning
from oracle import eprop_reference as ref
from oracle.bptt_reference import ALIFNetConfig, Weights, loss_and_grads
from oracle.test_eprop import _net, _problem

P = dict(tau_m_ms=5.0, tau_a_ms=150.0, tau_out_ms=10.0, dt_ms=1.0, beta=0.184, v_th=0.6,
         mg_lens=0.5, mg_scale=6.0, mg_height=0.15, surrogate="multi_gaussian", gamma=0.5)
T, B, N_IN, N_H, N_OUT = 30, 2, 5, 6, 3
WINDOW = 12                      # the loss on the last 12 steps: c_t must start at the right step
DELAYS = [(r, o) for r in (1, 2, 3) for o in (1, 2, 3)]          # (recurrent, readout)
TOL = 1e-12                      # float64; measured: <= 1e-15


@lru_cache(maxsize=None)
def problem(rec: bool):
    """x (T, B, n_in), W_in, W_rec (zero without recurrence), W_out, labels."""
    return _problem(seed=11, T=T, B=B, n_in=N_IN, n_h=N_H, n_out=N_OUT, rec=float(rec))


def network(w_in, w_rec, w_out, rec_delay: int, out_delay: int) -> Network:
    """input -> hidden (recurrent, ``rec_delay``; zero weights without recurrence, still a
    projection whose gradient counts) -> readout (``out_delay``)."""
    return _net(w_in, w_rec, w_out, rec_delay=rec_delay, out_delay=out_delay)


def core_grads(net: Network, x, labels, cores: int, k: int, backend: str = "local",
               learning: Learning | None = None) -> dict[str, np.ndarray]:
    """The cores' e-prop gradients (float64) of one batch run with exchange interval ``k``, by projection."""
    machine = MachineConfig(dtype="float64")
    learning = learning or eprop_learning(net, machine, lr=1e-3, surrogate=P["surrogate"], gamma=P["gamma"],
                                          window_steps=WINDOW)
    hidden = [p for p in ("lif", "hidden") if p in net.populations]
    split = {"hidden": cores} if hidden == ["hidden"] else {"lif": 1, "hidden": cores}
    with Simulator(net, machine, cores_per_population={**split, "output": 1}, backend=backend,
                   batch_size=x.shape[1], exchange_interval=k, learning=learning) as sim:
        sim.run(x.shape[0], inputs={"input": x}, targets={"output": labels})
        sim.backward(1.0 / x.shape[1], rounds=1)
        got = sim.call(LearningCore.gradients)
        grads = {p.name: np.zeros(p.weights.shape) for p in net.projections}
        for pl in sim.mapping.placements:
            for proj, g in zip(net.incoming(net[pl.slice.population]), got[pl.core_id]):
                grads[proj.name][:, pl.slice.lo:pl.slice.hi] = g
    return grads


@lru_cache(maxsize=None)
def reference(rec: bool, rec_delay: int, out_delay: int, signal_dtype=None):
    x, w_in, w_rec, w_out, labels = problem(rec)
    p = dict(P, loss_window=WINDOW, rec_delay=rec_delay, out_delay=out_delay)
    want, _, outs = ref.eprop(p, w_in, w_rec, w_out, x, labels, signal_dtype=signal_dtype)
    return want, outs


def rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def bptt(rec: bool, rec_delay: int, out_delay: int) -> Weights:
    x, w_in, w_rec, w_out, labels = problem(rec)
    cfg = ALIFNetConfig(n_in=N_IN, n_h=N_H, n_out=N_OUT, tau_m_ms=P["tau_m_ms"], tau_a_ms=P["tau_a_ms"],
                        beta=P["beta"], v_th=P["v_th"], tau_out_ms=P["tau_out_ms"], surrogate=P["surrogate"],
                        loss_window=WINDOW, dtype="float64")
    return loss_and_grads(cfg, Weights(w_in, w_rec, w_out), x, labels, rec_delay=rec_delay, out_delay=out_delay)[1]


@pytest.mark.parametrize("rec_delay,out_delay", DELAYS)
def test_reference_without_recurrence_equals_bptt(rec_delay, out_delay):
    """The two references agree for every delay when W_rec = 0 (e-prop is exact there): the
    generalised reference is right before the cores are held against it."""
    want, outs = reference(False, rec_delay, out_delay)
    bp = bptt(False, rec_delay, out_delay)
    assert sum(o["z"].sum() for o in outs) > 20
    for name in ("w_in", "w_rec", "w_out"):
        assert np.abs(getattr(bp, name)).max() > 1e-4, name          # a gradient that can disagree
        assert rel(want[name], getattr(bp, name)) <= TOL, name


@pytest.mark.parametrize("rec", [False, True], ids=["feedforward", "recurrent"])
@pytest.mark.parametrize("rec_delay,out_delay", DELAYS)
def test_cores_match_reference_for_every_delay_and_k(rec, rec_delay, out_delay):
    """The cores' gradients = the reference's, on 1 and 3 hidden cores and every K <= min delay;
    without recurrence also = BPTT (to the float32 rounding of the learning signals)."""
    x, w_in, w_rec, w_out, labels = problem(rec)
    net = network(w_in, w_rec, w_out, rec_delay, out_delay)
    want, outs = reference(rec, rec_delay, out_delay, np.float32)
    exact, _ = reference(rec, rec_delay, out_delay)
    names = {"w_in": "input->hidden", "w_rec": "hidden->hidden", "w_out": "hidden->output"}
    for k in range(1, min(rec_delay, out_delay) + 1):
        for cores in (1, 3):
            g = core_grads(net, x, labels, cores, k)
            for name, proj in names.items():
                assert rel(g[proj], want[name]) <= TOL, (name, k, cores)
                assert rel(g[proj], exact[name]) <= 1e-6, (name, k, cores)     # float32 signals
    if not rec:
        bp = bptt(False, rec_delay, out_delay)
        for name, proj in names.items():
            assert rel(g[proj], getattr(bp, name)) <= 1e-6, name
    elif (rec_delay, out_delay) == (1, 1):
        # with recurrence e-prop is not BPTT: the comparison above could fail
        assert rel(exact["w_rec"], bptt(True, 1, 1).w_rec) > 1e-3


def test_two_hidden_populations_with_their_own_readout_delays():
    """LIF and ALIF populations whose projections into the readout have delays 2 and 3: each
    population's cores filter with their own delay (one spec per population), K = 2."""
    rng = np.random.default_rng(4)
    n_lif, n_alif = 3, 4
    n = n_lif + n_alif
    x = rng.normal(0.0, 1.0, (T, B, N_IN))
    labels = rng.integers(0, N_OUT, B)
    w_in = rng.normal(0.0, 1.5, (N_IN, n))
    w_rec = rng.normal(0.0, 0.5, (n, n))
    np.fill_diagonal(w_rec, 0.0)
    w_out = rng.normal(0.0, 1.0, (n, N_OUT))
    net = Network(dt_ms=P["dt_ms"])
    net.population("input", N_IN, AnalogSource())
    pops = {"lif": slice(0, n_lif), "hidden": slice(n_lif, n)}
    for name, beta in (("lif", 0.0), ("hidden", P["beta"])):
        net.population(name, pops[name].stop - pops[name].start,
                       ALIF(tau_mem_ms=P["tau_m_ms"], tau_adapt_ms=P["tau_a_ms"], beta=beta, v_th=P["v_th"]))
    net.population("output", N_OUT, LI(tau_mem_ms=P["tau_out_ms"]))
    out_delay = {"lif": 2, "hidden": 3}
    for name, sl in pops.items():
        net.connect("input", name, w_in[:, sl])
    for pre, psl in pops.items():
        for post, qsl in pops.items():
            net.connect(pre, post, w_rec[psl, qsl], delays=2, mask=~np.eye(n, dtype=bool)[psl, qsl])
    for name, sl in pops.items():
        net.connect(name, "output", w_out[sl], delays=out_delay[name])
    learning = eprop_learning(net, MachineConfig(dtype="float64"), lr=1e-3, surrogate=P["surrogate"],
                              gamma=P["gamma"], window_steps=WINDOW)
    assert {p: learning.specs[p].readout_delay for p in pops} == out_delay
    p = dict(P, beta=[0.0] * n_lif + [P["beta"]] * n_alif, loss_window=WINDOW, rec_delay=2,
             out_delay=[2] * n_lif + [3] * n_alif)
    want, _, outs = ref.eprop(p, w_in, w_rec, w_out, x, labels, signal_dtype=np.float32)
    z = np.stack([o["z"] for o in outs])
    assert z[..., :n_lif].sum() > 5 and z[..., n_lif:].sum() > 5
    for k in (1, 2):
        g = core_grads(net, x, labels, 2, k, learning=learning)
        full_in = np.concatenate([g[f"input->{q}"] for q in pops], axis=1)
        full_rec = np.block([[g[f"{a}->{b}"] for b in pops] for a in pops])
        full_out = np.concatenate([g[f"{q}->output"] for q in pops], axis=0)
        for name, got in (("w_in", full_in), ("w_rec", full_rec), ("w_out", full_out)):
            assert rel(got, want[name]) <= TOL, (name, k)
