"""Low-precision e-prop cores on Ray equal local, and learn a tiny task at 8 and 4 bits."""

import numpy as np
import pytest

from spinnray import MachineConfig

from helpers import EPropConfig, RecurrentALIFConfig, analog_split, eprop_net, eprop_trainer
from unit.rules.eprop.test_core_lowprec import T, _train


@pytest.mark.ray
@pytest.mark.parametrize("m", [
    MachineConfig(dtype="float64", weight_bits=4, rounding="stochastic", accumulate=False),
    MachineConfig(dtype="float64", weight_bits=4, rounding="stochastic", weight_range=0.25,
                  weight_range_recurrent=0.25, weight_range_growth=16)], ids=["direct", "widening"])
def test_stochastic_4bit_ray_equals_local(ray_session, m):
    a, ca = _train(m, cores=3, backend="local", steps=2)
    b, cb = _train(m, cores=3, backend="ray", steps=2)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert [c["memory"] for c in ca] == [c["memory"] for c in cb]


@pytest.mark.parametrize("bits", [8, 4])
def test_learns_a_tiny_task_at_low_precision(bits):
    """The task of tests/integration/test_eprop.py (which input group is more active) at 8 and 4 bits with
    mixed-precision accumulation."""
    rng = np.random.default_rng(0)
    n_in, B = 8, 8

    def data(n):
        y = rng.integers(0, 2, n)
        rate = np.where(np.arange(n_in)[None, :] < n_in // 2, 0.05, 0.3)
        rate = np.where(y[:, None] == 1, rate, rate[:, ::-1])
        return (rng.random((n, T, n_in)) < rate[:, None, :]).astype(np.float64), y

    xtr, ytr = data(160)
    xte, yte = data(100)
    net = eprop_net(RecurrentALIFConfig(hidden=12, v_th=0.6, tau_mem_ms=10.0, w_in_scale=4.0,
                                                 w_out_scale=10.0), n_in, 2, seed=1)
    learn = EPropConfig(batch_size=B, lr=0.02, surrogate="triangle", gamma=0.3)
    tr = eprop_trainer(net, learn, machine=MachineConfig(dtype="float64", weight_bits=bits), hidden_cores=3,
                      backend="local")
    try:
        before, _ = tr.evaluate(analog_split(xte, yte), B)
        for _ in range(3):
            for first in range(0, len(ytr), B):
                tr.train_batch(np.ascontiguousarray(xtr[first:first + B].transpose(1, 0, 2)), ytr[first:first + B])
        after, _ = tr.evaluate(analog_split(xte, yte), B)
    finally:
        tr.close()
    assert after >= 0.8 and after > before + 0.1, (before, after)
