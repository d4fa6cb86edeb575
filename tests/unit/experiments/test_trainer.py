"""spinnray.experiments.trainer: training never writes into the network it was given."""

import numpy as np

from spinnray.config import MachineConfig
from spinnray.data import encode_yin_yang, yin_yang

from helpers import EventPropConfig, FeedForwardConfig, eventprop_trainer, yinyang_net

NET = FeedForwardConfig(steps=50, hidden=40)


def data(n, seed):
    x, y = yin_yang(n, seed)
    return encode_yin_yang(x, scheme="wunderlich", steps=NET.steps), y


def test_training_never_writes_into_the_network():
    net = yinyang_net(NET, seed=0)
    before = [p.weights.copy() for p in net.projections]
    x, y = data(24, 42)
    tr = eventprop_trainer(net, EventPropConfig(batch_size=24), machine=MachineConfig(dtype="float64"),
                          cores_per_population=None, replicas=2, backend="local")
    try:
        tr.train_batch(x, y)
        assert not np.array_equal(tr.weights()["input->hidden"], before[0])
    finally:
        tr.close()
    assert all(np.array_equal(p.weights, b) for p, b in zip(net.projections, before))
