"""EventProp on the emulated machine against the dense reference and finite differences."""

import numpy as np
import pytest

from spinnray.config import MachineConfig
from spinnray.data import encode_yin_yang, yin_yang
from spinnray.model.network import Network
from spinnray.model.neurons import LIF, SpikeSource
from spinnray.rules.learning import LearningCore
from spinnray.simulator import Simulator

from helpers import eventprop_learning
from oracle import eventprop_reference as ref

T, DT, TAU_MEM, TAU_SYN, GUARD = 40, 1.0, 20.0, 5.0, 1e-3


LOSS = {"kind": "wunderlich", "tau0_ms": 0.5, "tau1_ms": 6.4, "alpha": 3e-3}


def weights(seed=0, n_hid=20):
    rng = np.random.default_rng(seed)
    return [rng.normal(1.5, 0.78, (5, n_hid)), rng.normal(0.93 * 200 / n_hid / 2, 0.5, (n_hid, 3))]


def data(batch=6, seed=42):
    x, y = yin_yang(batch, seed)
    return encode_yin_yang(x, scheme="wunderlich", steps=T, dt_ms=DT), y


def build_sim(W, cores, replicas, batch, backend="local", dtype="float64", silent_ms=0.0):
    net = Network(dt_ms=DT)
    net.population("inp", W[0].shape[0], SpikeSource())
    net.population("hid", W[0].shape[1], LIF(tau_mem_ms=TAU_MEM, tau_syn_ms=TAU_SYN))
    net.population("out", W[1].shape[1], LIF(tau_mem_ms=TAU_MEM, tau_syn_ms=TAU_SYN))
    net.connect("inp", "hid", W[0], delays=1)
    net.connect("hid", "out", W[1], delays=1)
    machine = MachineConfig(dtype=dtype)
    learning = eventprop_learning(net, machine, guard=GUARD, lr=1e-3, silent_ms=silent_ms,
                                  **{k: v for k, v in LOSS.items() if k != "kind"})
    per_replica = -(-batch // replicas)
    return net, Simulator(
        net, machine, cores_per_population={"inp": 1, "hid": cores, "out": 1},
        batch_size=per_replica, replicas=replicas, backend=backend, learning=learning)


def machine_gradients(sim, net):
    """Per projection: the full (n_pre, n_post) gradient, summed over replicas."""
    learners = [pl for pl in sim.mapping.placements if pl.slice.population in ("hid", "out")]
    got = sim.call(LearningCore.gradients, cores=[pl.core_id for pl in learners])
    full = {name: np.zeros((net[pre].size, net[post].size))
            for name, pre, post in (("inp->hid", "inp", "hid"), ("hid->out", "hid", "out"))}
    for pl in learners:
        proj = "inp->hid" if pl.slice.population == "hid" else "hid->out"
        full[proj][:, pl.slice.lo:pl.slice.hi] += got[pl.core_id][0]
    return [full["inp->hid"], full["hid->out"]]


@pytest.fixture(scope="module")
def reference():
    W = weights()
    x, y = data()
    layers = ref.forward(W, x, TAU_MEM, TAU_SYN, DT)
    t, fired, first, loss, g = ref.ttfs(layers[-1], y, T, DT, LOSS["tau0_ms"], LOSS["tau1_ms"], LOSS["alpha"])
    assert fired.mean() > 0.8 and layers[0]["s"].sum() > 20, "the test network must spike"
    grads = ref.backward(W, x, layers, first, g, TAU_MEM, TAU_SYN, DT, GUARD, 1.0 / len(y))
    assert all(np.abs(gr).max() > 0 for gr in grads)
    return W, x, y, loss, t, grads, layers


@pytest.mark.parametrize("replicas", [1, 2, 3])
@pytest.mark.parametrize("cores", [1, 3])
def test_distributed_gradient_equals_dense_reference(reference, replicas, cores):
    W, x, y, loss, t, grads, layers = reference
    net, sim = build_sim(W, cores, replicas, len(y))
    with sim:
        res = sim.run(T, {"inp": x}, targets={"out": y}, record=("spikes",))
        assert np.array_equal(res.spikes["hid"], layers[0]["s"])
        np.testing.assert_allclose(res.outputs["loss"], loss, rtol=1e-12)
        np.testing.assert_allclose(res.outputs["t_first_ms"], t, rtol=1e-12)
        sim.backward(scale=1.0 / len(y))
        got = machine_gradients(sim, net)
        m = sim.metrics()
    for g_machine, g_ref in zip(got, grads):
        rel = np.abs(g_machine - g_ref).max() / np.abs(g_ref).max()
        assert rel <= 1e-6, rel
    # Error events only for hidden spikes, and never more than one per spike per hidden core.
    hidden_spikes = int(layers[0]["s"].sum())
    assert 0 < m["traffic"]["error_events_sent"] <= hidden_spikes
    assert m["traffic"]["error_events"] == m["traffic"]["error_events_sent"]   # one owner core each


def test_gradient_approaches_finite_differences_as_dt_shrinks():
    """On a 3-4-2 network with one spike per neuron, spike times move smoothly with the
    weights; the machine's EventProp gradient at step dt approaches central finite
    differences of the continuous-time loss (dense forward at dt = 0.01 ms, interpolated
    spike times, eps = 0.05: small eps moves a spike by less than a step and is noise)."""
    rng = np.random.default_rng(3)
    W = [rng.normal(2.5, 0.5, (3, 4)), rng.normal(2.5, 0.6, (4, 2))]
    window_ms, t_in, label = 30.0, np.array([1.0, 4.0, 7.0]), np.array([0])

    def inputs(dt):
        x = np.zeros((int(round(window_ms / dt)), 1, 3), bool)
        x[np.round(t_in / dt).astype(int), 0, np.arange(3)] = True
        return x

    def loss(Ws, dt):
        x = inputs(dt)
        layers = ref.forward(Ws, x, TAU_MEM, TAU_SYN, dt)
        return ref.ttfs(layers[-1], label, x.shape[0], dt, LOSS["tau0_ms"], LOSS["tau1_ms"], LOSS["alpha"])

    _, fired, *_ = loss(W, 0.01)
    assert fired.all()
    eps, fd = 0.05, []
    for li in range(2):
        g = np.zeros_like(W[li])
        for idx in np.ndindex(W[li].shape):
            plus, minus = [w.copy() for w in W], [w.copy() for w in W]
            plus[li][idx] += eps
            minus[li][idx] -= eps
            g[idx] = (loss(plus, 0.01)[3][0] - loss(minus, 0.01)[3][0]) / (2 * eps)
        fd.append(g)
    fd = np.concatenate([g.ravel() for g in fd])

    errors = {}
    for dt in (1.0, 0.5, 0.25, 0.05):
        global DT
        old, DT = DT, dt
        try:
            net, sim = build_sim([w.copy() for w in W], 1, 1, 1)
        finally:
            DT = old
        with sim:
            x = inputs(dt)
            sim.run(x.shape[0], {"inp": x}, targets={"out": label})
            sim.backward(scale=1.0)
            g = np.concatenate([a.ravel() for a in machine_gradients(sim, net)])
        errors[dt] = np.linalg.norm(g - fd) / np.linalg.norm(fd)
    # Measured here: 0.29, 0.14, 0.041, 0.025.
    assert errors[0.5] < errors[1.0] and errors[0.25] < errors[0.5]
    assert errors[0.05] < 0.25 * errors[1.0] and errors[0.05] < 0.06, errors


SILENT_MS = 20.0


def silent_setup():
    """The reference network with output 2 too weak to fire: label-2 samples have a silent label."""
    W = weights()
    W[1][:, 2] = 0.02
    x, y = data(batch=8, seed=42)
    layers = ref.forward(W, x, TAU_MEM, TAU_SYN, DT)
    assert not layers[1]["s"][:, :, 2].any() and (y == 2).sum() >= 2 and layers[1]["s"][:, :, :2].any()
    return W, x, y, layers


def reference_loss(W, x, y):
    layers = ref.forward(W, x, TAU_MEM, TAU_SYN, DT)
    return ref.ttfs_silent(layers[-1], y, T, DT, LOSS["tau0_ms"], LOSS["tau1_ms"], LOSS["alpha"], SILENT_MS)


@pytest.mark.parametrize("replicas, cores", [(1, 1), (2, 3)])
def test_silent_surrogate_gradient_equals_dense_reference(replicas, cores):
    """With silent_ms > 0 the silent outputs count as firing at T + silent_ms (1 - Vmax) and
    get a gradient through their voltage peak; the machine equals the dense reference."""
    W, x, y, layers = silent_setup()
    t, fired, first, loss, g, g_sil, peak = reference_loss(W, x, y)
    assert np.all(t[:, 2] > T * DT) and np.abs(g_sil[:, 2]).max() > 0
    inj = ref.silent_inject(g_sil, peak, T, SILENT_MS, TAU_MEM, TAU_SYN, DT, 1.0 / len(y))
    grads = ref.backward(W, x, layers, first, g, TAU_MEM, TAU_SYN, DT, GUARD, 1.0 / len(y), inject=inj)
    plain = ref.backward(W, x, layers, first, g, TAU_MEM, TAU_SYN, DT, GUARD, 1.0 / len(y))
    assert np.all(plain[1][:, 2] == 0) and np.abs(grads[1][:, 2]).max() > 0     # nothing without the surrogate
    net, sim = build_sim(W, cores, replicas, len(y), silent_ms=SILENT_MS)
    with sim:
        res = sim.run(T, {"inp": x}, targets={"out": y})
        np.testing.assert_allclose(res.outputs["loss"], loss, rtol=1e-12)
        assert res.outputs["label_silent"].tolist() == (y == 2).tolist()
        sim.backward(scale=1.0 / len(y))
        got = machine_gradients(sim, net)
    for g_machine, g_ref in zip(got, grads):      # error events carry float32 payloads
        assert np.abs(g_machine - g_ref).max() <= 1e-6 * np.abs(g_ref).max()


def test_silent_label_gradient_is_the_derivative_of_the_surrogate():
    """For a silent label neuron, Vmax is linear in its incoming weights (the hidden spikes do
    not depend on them), so the machine's gradient of those weights must equal central
    finite differences of the surrogate loss, and have the sign that raises the peak."""
    W, x, y, layers = silent_setup()
    net, sim = build_sim(W, 1, 1, len(y), silent_ms=SILENT_MS)
    with sim:
        sim.run(T, {"inp": x}, targets={"out": y})
        sim.backward(scale=1.0 / len(y))
        g_col = machine_gradients(sim, net)[1][:, 2]
    eps, fd = 1e-5, np.zeros(W[1].shape[0])
    for j in range(len(fd)):
        plus, minus = [w.copy() for w in W], [w.copy() for w in W]
        plus[1][j, 2] += eps
        minus[1][j, 2] -= eps
        fd[j] = (reference_loss(plus, x, y)[3].mean() - reference_loss(minus, x, y)[3].mean()) / (2 * eps)
    np.testing.assert_allclose(g_col, fd, rtol=1e-5, atol=1e-9 * np.abs(fd).max())
    assert np.all(g_col <= 0) and g_col.min() < 0      # descent raises the silent label's peak voltage
