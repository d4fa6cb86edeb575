"""Low-precision EventProp cores on Ray equal local, and Yin-Yang is learned at 8 bits."""

import numpy as np
import pytest

from spinnray.config import MachineConfig

from helpers import spikes_split
from unit.rules.eventprop.test_core_lowprec import data, train, trainer


@pytest.mark.ray
def test_4bit_ray_equals_local(ray_session):
    m = MachineConfig(dtype="float32", weight_bits=4, rounding="stochastic")
    a, ca, ra = train(m, batches=2, replicas=2, backend="local")
    b, cb, rb = train(m, batches=2, replicas=2, backend="ray")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert ca == cb
    assert [c["memory"] for c in ra] == [c["memory"] for c in rb]


def test_yinyang_learns_at_8_bits():
    x, y = data(480, 42)
    xt, yt = data(300, 40)
    tr = trainer(MachineConfig(dtype="float32", weight_bits=8), lr=1e-2)
    try:
        before, _ = tr.evaluate(spikes_split(xt, yt), 24)
        rng = np.random.default_rng(0)
        for epoch in range(4):
            order = rng.permutation(len(y))
            for first in range(0, len(y), 24):
                idx = order[first:first + 24]
                tr.train_batch(x[:, idx], y[idx])
        after, _ = tr.evaluate(spikes_split(xt, yt), 24)
    finally:
        tr.close()
    assert after > 0.6 and after > before + 0.1, (before, after)   # chance is 1/3
