"""spinnray.rules.eventprop (the rule): the silent-neuron weight bump after a mini-batch."""

import numpy as np

from spinnray.config import MachineConfig
from spinnray.data import encode_yin_yang, yin_yang
from spinnray.rules.eventprop import after_batch
from spinnray.rules.eventprop.core import EventPropCore

from helpers import EventPropConfig, FeedForwardConfig, eventprop_trainer, yinyang_net

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
