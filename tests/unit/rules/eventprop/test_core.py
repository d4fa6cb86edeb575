"""spinnray.rules.eventprop.core: replicas and hidden-layer splits train the same weights; a layered
reverse pass checks its error events against the SRAM budget and rejects error frames past the run; lockstep
reverse rounds reject an error that arrives after its step and buffer one that arrives early."""

import numpy as np
import pytest

from spinnray.config import MachineConfig
from spinnray.data import encode_yin_yang, yin_yang
from spinnray.errors import BudgetError
from spinnray.machine import packet
from spinnray.model.network import Network
from spinnray.model.neurons import LI, LIF, SpikeSource
from spinnray.rules.eventprop.core import EventPropCore
from spinnray.simulator import Simulator

from helpers import EventPropConfig, FeedForwardConfig, eventprop_learning, eventprop_trainer, yinyang_net
from unit.machine.test_schedule import MB, NET as LAYERED_NET, yy_data

NET = FeedForwardConfig(steps=50, hidden=40)


def trainer(replicas=1, cores=None, backend="local", dtype="float64", batch=24, lr=5e-3):
    learn = EventPropConfig(batch_size=batch, lr=lr)
    return eventprop_trainer(yinyang_net(NET, seed=0), learn, machine=MachineConfig(dtype=dtype),
                            cores_per_population=cores, replicas=replicas, backend=backend)


def data(n, seed):
    x, y = yin_yang(n, seed)
    return encode_yin_yang(x, scheme="wunderlich", steps=NET.steps), y


def train_steps(tr, x, y, batches, batch=24):
    for k in range(batches):
        idx = np.arange(k * batch, (k + 1) * batch) % len(y)
        tr.train_batch(x[:, idx], y[idx])
    return tr.weights()


@pytest.fixture(scope="module")
def reference_weights():
    x, y = data(72, 42)
    tr = trainer()
    try:
        return train_steps(tr, x, y, 3)
    finally:
        tr.close()


@pytest.mark.parametrize("replicas, cores", [(2, None), (3, None), (1, {"hidden": 3}), (3, {"hidden": 2})])
def test_replicas_and_hidden_split_give_the_same_weights(reference_weights, replicas, cores):
    x, y = data(72, 42)
    tr = trainer(replicas=replicas, cores=cores)
    try:
        w = train_steps(tr, x, y, 3)
        crcs = tr.checksums()
        assert all(len(set(c)) == 1 and len(c) == replicas for c in crcs.values())   # replicas identical
        for r in range(replicas):
            assert all(np.array_equal(tr.weights(r)[k], w[k]) for k in w)
    finally:
        tr.close()
    for name, ref in reference_weights.items():
        np.testing.assert_allclose(w[name], ref, rtol=1e-9, atol=1e-12, err_msg=name)
        assert not np.allclose(ref, yinyang_net(NET, seed=0).projections[0 if name.startswith("input") else 1].weights)


def test_layered_error_events_over_budget_raise_budget_error_naming_the_core():
    """A layered reverse pass keeps every error event of the run until it starts:
    checked against the core's SRAM like the input events."""
    from dataclasses import replace

    x, y = yy_data(MB, 42)
    learn = EventPropConfig(batch_size=MB, lr=5e-3)
    tr = eventprop_trainer(yinyang_net(LAYERED_NET, seed=0), learn, machine=MachineConfig(), cores_per_population=None,
                          replicas=1, backend="local", schedule="layered")
    try:
        tr.forward(x, y)
        hidden = next(c for c in tr.sim.backend.cores if c.spec.population == "hidden")
        # a budget that holds everything of the forward run, but not the error events on top
        hidden.spec = replace(hidden.spec, budget_bytes=sum(hidden.memory().values()) + 8)
        with pytest.raises(BudgetError, match=rf"core {hidden.id} \(hidden\): the error events of a layered "
                                              rf"reverse pass of {LAYERED_NET.steps} steps make \d+ bytes; the budget is"):
            tr.sim.backward(1.0 / MB)
    finally:
        tr.close()


def test_error_frame_beyond_the_span_is_rejected_and_not_used():
    T = LAYERED_NET.steps
    x, y = yy_data(4, 42)
    tr = eventprop_trainer(yinyang_net(LAYERED_NET, seed=0), EventPropConfig(batch_size=4, guard=0.3),
                          machine=MachineConfig(dtype="float64"), cores_per_population=None, replicas=1,
                          backend="local", schedule="layered")
    try:
        tr.forward(x, y)
        cores = tr.sim.backend.cores
        hid = next(c for c in cores if c.spec.population == "hidden")
        out = next(c for c in cores if c.spec.population == "output")
        assert isinstance(hid, EventPropCore) and hid.layered
        t, b, i, _ = (np.asarray(a) for a in hid.own_events)
        late = int(np.argmax(t >= 1))                  # a hidden spike after the bias spike at step 0
        assert t[late] >= 1
        key = hid.spec.error_key_base + int(i[late])

        def frame(offset, value=0.5):
            return packet.encode(packet.Kind.ERROR, out.id, 0, keys=[key], offsets=[offset], batch=[int(b[late])],
                                 payload=[value])

        def reverse(frames):
            hid.begin_backward(T, 0.25)
            hid.deliver_errors(frames, 0, span=T)
            received = len(hid._received[0])
            hid.backward_layer(T)
            return received, [g.copy() for g in hid.gradients()]

        c = hid.counters
        n0, g0 = reverse([])
        assert n0 == 0 and not any(g.any() for g in g0)
        rejected, got = c.rejected, c.error_events_received
        n1, g1 = reverse([frame(int(t[late]))])        # valid: used (the positive control)
        assert n1 == 1 and any(g.any() for g in g1)
        assert c.rejected == rejected and c.error_events_received == got + 1
        for bad in (T, T + 1, 65535):                  # offsets past the run's T steps
            n2, g2 = reverse([frame(bad, 1e3)])
            assert n2 == 0 and all(np.array_equal(p, q) for p, q in zip(g2, g0))
            assert c.rejected == rejected + 1 and c.error_events_received == got + 1
            assert f"max_offset={T - 1}" in hid.reasons[-1] and str(bad) in hid.reasons[-1]
            rejected += 1
        n3, g3 = reverse([frame(T, 1e3), frame(int(t[late]))])   # the bad one is skipped, the good one used
        assert n3 == 1 and all(np.array_equal(p, q) for p, q in zip(g3, g1))
        assert c.rejected == rejected + 1
        n4, _ = reverse([frame(T - 1)])                # the last step of the run is inside the span
        assert n4 == 1 and c.rejected == rejected + 1
    finally:
        tr.close()


def test_lockstep_error_about_a_later_step_is_rejected_and_an_earlier_one_waits_for_its_step():
    """Lockstep reverse rounds: an error event about a spike at step s is used in step s-1, so a
    frame about a step after the round's first arrived too late (rejected, noted, not used); one
    about an earlier step waits in the error buffer and counts in the memory account."""
    rng = np.random.default_rng(0)
    net = Network()
    net.population("inp", 4, SpikeSource())
    net.population("hid", 6, LIF())
    net.population("out", 2, LI(tau_syn_ms=5.0))
    net.connect("inp", "hid", rng.normal(1.5, 0.5, (4, 6)))
    net.connect("hid", "hid", rng.normal(0.0, 0.3, (6, 6)), delays=2)
    net.connect("hid", "out", rng.normal(0.5, 0.5, (6, 2)))
    machine = MachineConfig(dtype="float64")
    x = rng.random((30, 1, 4)) < 0.15
    with Simulator(net, machine, learning=eventprop_learning(net, machine, loss="mean_voltage")) as sim:
        sim.run(30, {"inp": x}, targets={"out": np.array([1])})
        hid = next(c for c in sim.backend.cores if c.spec.population == "hid")
        out = next(c for c in sim.backend.cores if c.spec.population == "out")
        t, _, i, _ = hid.own_events
        k = int(np.argmax(t >= 5))
        s, key = int(t[k]), hid.spec.error_key_base + int(i[k])

        def frame(step):
            return packet.encode(packet.Kind.ERROR, out.id, step, keys=[key], offsets=[0], payload=[0.5])

        def reverse(step_of_frame, at):
            hid.begin_backward(30, 1.0)
            for j in reversed(range(at + 1, 30)):
                hid.backward_block(j)
                hid.deliver_errors([], j)
            hid.backward_block(at)
            hid.deliver_errors([frame(step_of_frame)], at)
            held = hid.memory().get("error_buffers", 0)
            for j in reversed(range(at)):
                hid.backward_block(j)
                hid.deliver_errors([], j)
            return held, [g.copy() for g in hid.gradients()]

        c = hid.counters
        rejected = c.rejected
        _, g0 = reverse(s, s)                  # about step s, delivered after step s: used next (the usual case)
        held, g1 = reverse(s, s + 2)           # arrived two rounds early: buffered, then used at step s-1
        assert held > 0 and c.rejected == rejected
        assert all(np.array_equal(a, b) for a, b in zip(g0, g1)) and any(g.any() for g in g0)
        _, g2 = reverse(s, s - 1)              # one round late: rejected, not used
        assert c.rejected == rejected + 1 and f"about step {s} arrived after reverse step {s - 1}" in hid.reasons[-1]
        hid.begin_backward(30, 1.0)
        for j in reversed(range(30)):
            hid.backward_block(j)
            hid.deliver_errors([], j)
        assert all(np.array_equal(a, b) for a, b in zip(g2, hid.gradients()))
