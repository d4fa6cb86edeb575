"""spinnray.rules.eventprop (the rule): the silent-neuron weight bump after a mini-batch."""

import ast

import numpy as np
import pytest

from spinnray.config import MachineConfig
from spinnray.data import encode_yin_yang, yin_yang
from spinnray.errors import ConfigError, NetworkError
from spinnray.model.network import Network
from spinnray.model.neurons import ALIF, LI, LIF, AnalogSource, SpikeSource
from spinnray.rules.eventprop import after_batch
from spinnray.rules.eventprop.core import EventPropCore
from spinnray.simulator import Simulator

from helpers import (ROOT, EventPropConfig, FeedForwardConfig, eventprop_learning, eventprop_trainer, raises_naming,
                     yinyang_net)

NET = FeedForwardConfig(steps=50, hidden=40)


def trainer(replicas=1, cores=None, backend="local", dtype="float64", batch=24, lr=5e-3):
    learn = EventPropConfig(batch_size=batch, lr=lr)
    return eventprop_trainer(yinyang_net(NET, seed=0), learn, machine=MachineConfig(dtype=dtype),
                            cores_per_population=cores, replicas=replicas, backend=backend)


def data(n, seed):
    x, y = yin_yang(n, seed)
    return encode_yin_yang(x, scheme="wunderlich", steps=NET.steps), y


def test_bump_raises_only_silent_label_neurons():
    """The silent-neuron remedy touches only the incoming weights of label neurons
    that did not fire for their sample, and the same ones on every replica (each
    replica sees other samples: the labels are pooled over the mini-batch)."""
    x, y = data(24, 42)
    order = np.argsort(y == 2, kind="stable")                  # class 2 only in replica 1's half
    x, y = x[:, order], y[order]
    assert (y[:12] != 2).all() and (y[12:] == 2).any()
    tr = trainer(replicas=2)
    try:
        outs = [pl for pl in tr.learners if pl.slice.population == "output"]
        for out in outs:
            w_big = tr.sim.call(EventPropCore.get_weights, cores=[out.core_id])[out.core_id]
            w_big[0][:, 2] = -5.0                              # output 2 can never fire
            tr.sim.call(EventPropCore.set_weights, {out.core_id: (w_big,)}, cores=[out.core_id])
        res = tr.forward(x, y)
        silent = res.outputs["label_silent"]
        assert silent[y == 2].all() and silent.any()
        before = tr.weights()["hidden->output"]
        after_batch(tr, res, y)
        assert tr.counters["weight_bumps"]["output"] == 1
        tr.check_replicas()                                    # the replicas stay identical
        diff = tr.weights(replica=1)["hidden->output"] - before
        assert np.allclose(diff[:, 2], tr.learn.bump)
        assert np.allclose(diff[:, [c for c in range(3) if not silent[y == c].any()]], 0.0)
    finally:
        tr.close()


def _net(hidden=None, output=None, analog=False):
    net = Network()
    net.population("inp", 3, AnalogSource() if analog else SpikeSource())
    net.population("hid", 4, hidden or LIF())
    net.population("out", 2, output or LI(tau_syn_ms=5.0))
    net.connect("inp", "hid", np.ones((3, 4)))
    net.connect("hid", "hid", np.zeros((4, 4)), delays=2)
    net.connect("hid", "out", np.ones((4, 2)))
    return net


@pytest.mark.parametrize("hidden, output, loss, message", [
    (ALIF(), None, "mean_voltage", "population 'hid': hidden populations need LIF neurons (model lif); it is ALIF("),
    (LIF(v_th=0.0), None, "mean_voltage", "population 'hid': v_th = 0.0: expected v_th > 0"),
    (LIF(v_th=1.0, v_reset=1.0), None, "mean_voltage", "v_reset = 1.0 with v_th = 1.0: expected v_reset < v_th"),
    (LIF(tau_syn_ms=0.0), None, "mean_voltage", "population 'hid': tau_syn_ms = 0.0: EventProp needs a synaptic"),
    (None, LI(tau_syn_ms=0.0), "max_voltage", "population 'out' (the output): tau_syn_ms = 0.0"),
    (None, LI(tau_syn_ms=5.0), "wunderlich", "(the output): a TTFS loss ('wunderlich') needs LIF neurons (model lif) "
                                               "(an li output takes a voltage loss: learning.loss = mean_voltage"),
    (None, LIF(), "sum_voltage", "(the output): learning.loss = 'sum_voltage' reads a leaky-integrator (model li) "
                                   "output; it is LIF("),
])
def test_learning_refuses_what_the_adjoint_does_not_cover(hidden, output, loss, message):
    net = _net(hidden, output)
    with raises_naming(ConfigError, "EventProp cannot train", message):
        eventprop_learning(net, MachineConfig(), loss=loss)


def test_core_refuses_analog_input_and_recurrent_layered_schedule():
    net = _net(analog=True)
    with raises_naming(NetworkError, "EventProp takes spike inputs only; projection 'inp->hid' comes from the analog"):
        Simulator(net, MachineConfig(), learning=eventprop_learning(net, MachineConfig(), loss="mean_voltage"))
    net = _net()
    with raises_naming(ConfigError, "parallel.schedule = 'layered' needs a feed-forward network",
                       "projection 'hid->hid' closes a cycle"):
        Simulator(net, MachineConfig(), schedule="layered",
                  learning=eventprop_learning(net, MachineConfig(), loss="mean_voltage"))
    with raises_naming(ConfigError, "parallel.exchange_interval = 2 exceeds the minimum synaptic delay of 1"):
        Simulator(net, MachineConfig(), exchange_interval=2,
                  learning=eventprop_learning(net, MachineConfig(), loss="mean_voltage"))


def test_no_data_set_is_wired_into_eventprop_or_the_trainer():
    """Issue 23 part 6: EventProp and the trainer take their data from the registry (data.name);
    none of their modules imports a data set module."""
    files = list((ROOT / "spinnray/rules/eventprop").glob("*.py")) + \
        [ROOT / "spinnray/experiments" / f for f in ("trainer.py", "train.py", "loop.py")]
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith("spinnray.data.") or name == "spinnray.data.base", (f.name, name)
                assert "yin" not in name.lower(), (f.name, name)
