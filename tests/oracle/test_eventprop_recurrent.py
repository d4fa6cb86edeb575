"""Recurrent EventProp with any delays and voltage losses on the emulated machine (local backend)
against the independent dense reference of the same discrete recurrences (oracle/eventprop_reference.py),
for 1, 2, 3 and 5 cores per population and 1-3 replicas; and against central finite differences of
the continuous-time loss as dt shrinks.  Ray: tests/integration/test_eventprop_recurrent.py."""

import numpy as np
import pytest

from spinnray.config import MachineConfig
from spinnray.model.network import Network
from spinnray.model.neurons import LI, LIF, SpikeSource
from spinnray.simulator import Simulator

from helpers import eventprop_learning
from oracle import eventprop_reference as ref
from oracle.eventprop_cases import (B, N_HID, T, TAU_MEM, TAU_SYN, Case, conns, data, machine_gradients,
                                    reference, relative_errors, run_machine, simulator)

TOL = 1e-6          # error events carry float32 payloads; everything else is float64
#: (cores per population, replicas): every core count of 1, 2, 3, 5 and every replica count of 1-3 at least once
SPLITS = [(1, 1), (2, 2), (3, 3), (5, 1)]


def check(case: Case, cores: int, replicas: int, k: int = 1, schedule: str = "lockstep", x=None, y=None):
    """The machine equals the reference: spikes exactly, losses to 1e-12, every projection's
    gradient to TOL; error events only at hidden spikes, at most one per spike and core above."""
    if x is None:
        x, y = data()
    recs, loss, grads = reference(case, x, y)
    assert recs["hid"]["s"].sum() > 2 * N_HID, "the test network must spike"
    assert all(np.abs(g).max() > 0 for g in grads), "every projection must have a gradient"
    res, got, m, cores_rep = run_machine(case, x, y, cores, replicas, k, schedule=schedule)
    assert np.array_equal(res.spikes["hid"], recs["hid"]["s"])
    np.testing.assert_allclose(res.outputs["loss"], loss, rtol=1e-12)
    rel = relative_errors(got, grads)
    assert max(rel) <= TOL, rel
    # error events: one per (hidden spike, core that receives it and learns), never more
    spikes = int(recs["hid"]["s"].sum())
    receivers = (cores if case.recurrent else 0) + 1
    assert 0 < m["traffic"]["error_events_sent"] <= spikes * receivers
    assert m["traffic"]["error_events"] == m["traffic"]["error_events_sent"]      # one owner core each
    assert m["traffic"]["dropped"] == 0 and m["traffic"]["rejected"] == 0
    return m, cores_rep


@pytest.mark.parametrize("replicas", [1, 2, 3])
@pytest.mark.parametrize("cores", [1, 2, 3, 5])
def test_recurrent_gradient_equals_dense_reference(cores, replicas):
    """Recurrent hidden LIF -> LI readout, mean-voltage loss: the adjoint of the recurrent
    coupling travels as error events between the hidden cores (and a core to itself)."""
    check(Case(), cores, replicas)


@pytest.mark.parametrize("cores, replicas", SPLITS)
@pytest.mark.parametrize("delay, k", [(1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3)])
def test_delays_and_exchange_interval(delay, k, cores, replicas):
    """Every projection delayed by 1-3 steps, K up to the minimum delay (forward and reverse
    rounds of K steps)."""
    check(Case(d_in=delay, d_rec=delay, d_out=delay), cores, replicas, k)


@pytest.mark.parametrize("cores, replicas", SPLITS)
@pytest.mark.parametrize("d, k", [((1, 3), 1), ((2, 3), 2)])
def test_per_synapse_delays(d, k, cores, replicas):
    """Per-synapse delays on the recurrent and readout projections: a core sums a pre spike's
    error over its synapses' delays before sending it (one event per spike and core)."""
    m, reps = check(Case(d_in=d[0], d_rec=d, d_out=d), cores, replicas, k)
    hidden = [r for r in reps if r["population"] == "hid"]
    assert any(r["memory"].get("error_buffers", 0) > 0 for r in hidden)        # partial sums / early errors kept


@pytest.mark.parametrize("cores, replicas", SPLITS)
@pytest.mark.parametrize("loss", ["wunderlich", "bena", "mean_voltage", "sum_voltage", "max_voltage", "silent"])
def test_each_loss(loss, cores, replicas):
    """Each loss on the recurrent network with per-synapse delays and K = 2."""
    case = Case(loss="wunderlich" if loss == "silent" else loss, d_in=2, d_rec=(2, 3), d_out=2,
                silent_ms=20.0 if loss == "silent" else 0.0)
    if loss == "silent":
        case = Case(**{**case.__dict__, "seed": 4})
    check(case, cores, replicas, 2)


@pytest.mark.parametrize("cores, replicas", SPLITS)
@pytest.mark.parametrize("hid, out", [({"v_th": 0.8, "v_reset": -0.2}, {"v_th": 0.9, "v_reset": 0.1}),
                                      ({"reset": "subtract"}, {"reset": "subtract"})])
def test_thresholds_and_resets(hid, out, cores, replicas):
    """Other thresholds, a reset below 0 and reset by subtraction: the adjoint's jump is the
    reset's size (v_th - v_reset, or v_th)."""
    check(Case(loss="wunderlich", d_in=2, d_rec=2, d_out=2, hid=hid, out=out), cores, replicas, 2)
    check(Case(loss="mean_voltage", hid=hid), cores, replicas, 1)


def test_feedforward_delays_layered_equals_lockstep_and_reference():
    """A feed-forward network with per-synapse readout delays: the layered schedule (one round
    per level) gives the reference's gradient and the lockstep one's, bit for bit."""
    case = Case(loss="wunderlich", recurrent=False, d_in=2, d_out=(1, 3))
    x, y = data()
    _, _, grads = reference(case, x, y)
    _, lay, m_lay, _ = run_machine(case, x, y, 3, 2, 1, schedule="layered")
    _, lock, m_lock, _ = run_machine(case, x, y, 3, 2, 1)
    assert max(relative_errors(lay, grads)) <= TOL
    assert all(np.array_equal(a, b) for a, b in zip(lay, lock))
    assert m_lay["traffic"]["error_events_sent"] == m_lock["traffic"]["error_events_sent"]
    assert m_lay["traffic"]["packets"] < m_lock["traffic"]["packets"]


def test_spike_records_grow_with_spikes_not_steps():
    """The records a core keeps for its reverse pass are its own spikes (step, sample, neuron as
    int16 and I - V_pre: 14 bytes in float64) and the spikes it received (6 bytes), and an LI
    output's per-neuron sum, maximum and its step: bytes = a function of the spike counts only,
    the same for a run four times longer (silence after the input) as its spike counts say."""
    case = Case(d_rec=2, d_out=(1, 3))

    def check_records(x, y):
        net, sim = simulator(case, 2, 1, 1)
        with sim:
            sim.run(x.shape[0], {"inp": x}, targets={"out": y})
            sim.backward(1.0 / len(y))
            reps = sim.reports()[0]
        for r in reps:
            c, got = r["counters"], r["memory"].get("spike_records")
            if r["population"] == "hid":
                assert got == 14 * c["spike_events_sent"] + 6 * c["spike_events_received"] > 0
            elif r["population"] == "out":
                assert got == 6 * c["spike_events_received"] + len(y) * 3 * (8 + 8 + 4)
        return sum(r["memory"].get("spike_records", 0) for r in reps)

    x, y = data()
    short = check_records(x, y)
    quiet = np.zeros((4 * T, B, x.shape[2]), bool)
    quiet[:T] = x
    long = check_records(quiet, y)
    assert long < 1.5 * short            # four times the steps; the few spikes after T are all it adds


@pytest.mark.parametrize("loss", ["mean_voltage", "sum_voltage", "max_voltage"])
def test_readout_gradient_is_the_exact_derivative_of_the_discrete_loss(loss):
    """The readout weights move no spike, so the discrete loss is smooth in them: the machine's
    gradient of the recurrent network's readout equals central differences at the same dt (the
    injection factor -(1-b) / (tau_syn (1-a)) is exact, not only in the limit)."""
    case = Case(loss=loss, d_rec=2, d_out=(1, 3))
    x, y = data()
    _, got, _, _ = run_machine(case, x, y, 2, 1, 1)
    layers, cs = conns(case)
    eps, fd = 1e-6, np.zeros_like(cs[-1].W)
    for idx in np.ndindex(fd.shape):
        vals = []
        for sign in (1, -1):
            shifted = [ref.Conn(c.pre, c.post, c.W.copy(), c.D) for c in cs]
            shifted[-1].W[idx] += sign * eps
            vals.append(ref.voltage(ref.run(layers, shifted, x, 1.0)["out"], y, loss)[1].mean())
        fd[idx] = (vals[0] - vals[1]) / (2 * eps)
    np.testing.assert_allclose(got[-1], fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


# ------------------------------------------------------------------ finite differences as dt shrinks
WINDOW_MS, DELAY_MS, T_IN = 30.0, 1.0, np.array([1.0, 3.0, 5.0, 8.0])
FD_LOSSES = ("mean_voltage", "max_voltage")


def _fd_weights():
    rng = np.random.default_rng(2)
    return [rng.normal(2.0, 0.4, (4, 3)), rng.normal(0.0, 0.15, (3, 3)), rng.normal(0.6, 0.5, (3, 2))]


def _fd_net(W, dt):
    """4 inputs (one spike each) -> 3 recurrent LIF (delays of DELAY_MS) -> 2 LI readouts."""
    d = max(1, int(round(DELAY_MS / dt)))
    layers = [ref.Layer("inp", 4, "source"), ref.Layer("hid", 3, "lif", TAU_MEM, TAU_SYN),
              ref.Layer("out", 2, "li", TAU_MEM, TAU_SYN)]
    return layers, [ref.Conn("inp", "hid", W[0], d), ref.Conn("hid", "hid", W[1], d), ref.Conn("hid", "out", W[2], d)]


def _fd_inputs(dt):
    x = np.zeros((int(round(WINDOW_MS / dt)), 1, 4), bool)
    x[np.round(T_IN / dt).astype(int), 0, np.arange(4)] = True
    return x


def _fd_losses(W, dt, label):
    """Both voltage losses of one dense forward run, and its records."""
    layers, cs = _fd_net(W, dt)
    recs = ref.run(layers, cs, _fd_inputs(dt), dt)
    return {loss: ref.voltage(recs["out"], label, loss)[1][0] for loss in FD_LOSSES}, recs


def _machine_fd_gradient(W, dt, loss, label):
    layers, cs = _fd_net(W, dt)
    net = Network(dt_ms=dt)
    net.population("inp", 4, SpikeSource())
    net.population("hid", 3, LIF(tau_mem_ms=TAU_MEM, tau_syn_ms=TAU_SYN))
    net.population("out", 2, LI(tau_mem_ms=TAU_MEM, tau_syn_ms=TAU_SYN))
    for c in cs:
        net.connect(c.pre, c.post, c.W, delays=c.D)
    machine = MachineConfig(dtype="float64")
    learning = eventprop_learning(net, machine, loss=loss, guard=1e-3)
    x = _fd_inputs(dt)
    with Simulator(net, machine, cores_per_population={"inp": 1, "hid": 2, "out": 1}, backend="local",
                   exchange_interval=cs[0].D, learning=learning) as sim:
        sim.run(x.shape[0], {"inp": x}, targets={"out": label})
        sim.backward(scale=1.0)
        return np.concatenate([g.ravel() for g in machine_gradients(sim, net)])


FD_DTS = (1.0, 0.5, 0.25, 0.1)


@pytest.fixture(scope="module")
def fd_errors():
    """Relative L2 distance of the machine's gradient at each dt from central finite differences
    of the continuous-time loss (dense forward at dt = 0.01 ms, eps = 0.02), per voltage loss;
    the delays stay DELAY_MS, so they grow from 1 to 10 steps (K = the delay)."""
    W, label = _fd_weights(), np.array([1])
    _, recs = _fd_losses(W, 0.01, label)
    counts = recs["hid"]["s"].sum(axis=(0, 1))
    assert (counts >= 1).all(), counts                 # every hidden neuron spikes: its weights have a gradient
    eps, fd = 0.02, {loss: [] for loss in FD_LOSSES}
    for li, w in enumerate(W):
        g = {loss: np.zeros_like(w) for loss in FD_LOSSES}
        for idx in np.ndindex(w.shape):
            plus, minus = [a.copy() for a in W], [a.copy() for a in W]
            plus[li][idx] += eps
            minus[li][idx] -= eps
            lp, rp = _fd_losses(plus, 0.01, label)
            lm, rm = _fd_losses(minus, 0.01, label)
            # no spike appears or vanishes under the perturbation: spike times move smoothly
            assert rp["hid"]["s"].sum() == rm["hid"]["s"].sum() == recs["hid"]["s"].sum(), (li, idx)
            for loss in FD_LOSSES:
                g[loss][idx] = (lp[loss] - lm[loss]) / (2 * eps)
        for loss in FD_LOSSES:
            fd[loss].append(g[loss].ravel())
    out = {}
    for loss in FD_LOSSES:
        want = np.concatenate(fd[loss])
        out[loss] = {dt: float(np.linalg.norm(_machine_fd_gradient(W, dt, loss, label) - want) / np.linalg.norm(want))
                     for dt in FD_DTS}
    return out


@pytest.mark.parametrize("loss", FD_LOSSES)
def test_recurrent_gradient_approaches_finite_differences_as_dt_shrinks(fd_errors, loss):
    """4 inputs -> 3 recurrent LIF (delays 1 ms) -> 2 LI readouts, one spike per input, every
    weight's gradient.  Measured here: mean_voltage 0.211, 0.113, 0.061, 0.023 and max_voltage
    0.116, 0.057, 0.029, 0.012 at dt = 1, 0.5, 0.25, 0.1 ms (first order in dt)."""
    errors = fd_errors[loss]
    print(loss, {dt: round(e, 4) for dt, e in errors.items()})
    values = [errors[dt] for dt in FD_DTS]
    assert all(b < a for a, b in zip(values, values[1:])), errors          # falls with every halving of dt
    assert errors[FD_DTS[-1]] < 0.25 * errors[FD_DTS[0]], errors


# ------------------------------------------------------------------ hidden spike-count regulariser
REG = (0.002, 0.001, 2.0)            # lambda_upper, lambda_lower, nu: neurons both above and below the target


@pytest.mark.parametrize("cores, replicas", [(1, 1), (3, 1), (1, 2), (3, 2)])
@pytest.mark.parametrize("loss, k", [("mean_voltage", 1), ("wunderlich", 2)])
def test_count_regulariser_equals_dense_reference(loss, k, cores, replicas):
    """The regulariser's slope enters lamV at the hidden spikes on the cores and reaches every
    projection through the usual error events: gradient and per-sample loss (regulariser
    included) equal the reference's, and the term changes the gradient."""
    case = Case(loss=loss, d_in=k, d_rec=k, d_out=k, reg=REG)
    x, y = data()
    recs, _, _ = reference(case, x, y)
    counts = recs["hid"]["s"].sum(axis=0)
    assert (counts > REG[2]).any() and ((counts > 0) & (counts < REG[2])).any()      # both sides of nu
    check(case, cores, replicas, k)
    _, _, plain = reference(Case(loss=loss, d_in=k, d_rec=k, d_out=k), x, y)
    _, _, regd = reference(case, x, y)
    change = relative_errors(plain, regd)
    assert min(change[:-1]) > 1e-2 and change[-1] == 0, change     # the hidden projections move, the readout not


def test_count_regulariser_loss_and_layered_schedule():
    """The loss the machine reports holds the regulariser (per sample, every hidden core's part);
    a feed-forward network under the layered schedule gets the reference's gradient too."""
    case = Case(loss="wunderlich", recurrent=False, d_in=2, d_out=(1, 3), reg=REG)
    x, y = data()
    recs, loss, grads = reference(case, x, y)
    res, got, _, _ = run_machine(case, x, y, 3, 2, 1, schedule="layered")
    reg_loss, _ = ref.count_regulariser(recs["hid"], *REG, 1.0 / len(y))
    assert (reg_loss > 0).all()
    np.testing.assert_allclose(res.outputs["reg_loss"], reg_loss, rtol=1e-12)
    np.testing.assert_allclose(res.outputs["loss"], loss, rtol=1e-12)
    assert max(relative_errors(got, grads)) <= TOL


def test_count_regulariser_off_is_bit_identical():
    """Strengths 0 (the default) build no regulariser: the same gradients bit for bit."""
    x, y = data()
    _, a, _, _ = run_machine(Case(), x, y, 2, 1)
    _, b, _, _ = run_machine(Case(reg=(0.0, 0.0, 5.0)), x, y, 2, 1)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


def test_count_regulariser_gradient_is_a_descent_direction():
    """The spike count is piecewise constant in the weights (no finite-difference gradient to
    compare with); what its EventProp slope must do is lower it: a step against the
    regulariser's part of the gradient lowers R and the hidden spikes (dense reference)."""
    x, y = data()
    case = Case(reg=REG)
    _, _, with_reg = reference(case, x, y)
    _, _, plain = reference(Case(), x, y)
    layers, cs = conns(case)

    def regulariser(step):
        moved = [ref.Conn(c.pre, c.post, c.W - step * (g - g0), c.D) for c, g, g0 in zip(cs, with_reg, plain)]
        hid = ref.run(layers, moved, x, 1.0)["hid"]
        return ref.count_regulariser(hid, *REG, 1.0 / len(y))[0].mean(), int(hid["s"].sum())

    r0, n0 = regulariser(0.0)
    for step in (0.5, 1.0):
        r, n = regulariser(step)
        assert r < 0.8 * r0 and n < n0, (step, r, r0, n, n0)
