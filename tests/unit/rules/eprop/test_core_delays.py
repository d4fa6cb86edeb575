"""spinnray.rules.eprop.core with delays: the hidden cores' window constants follow the readout
delay, and training with recurrent and readout delays of 2 gives the same weights at K = 1 and K = 2
(the gradients against the references: tests/oracle/test_eprop_delays.py)."""

import numpy as np
import pytest

from spinnray import MachineConfig
from spinnray.config import ClusterConfig, ParallelConfig
from spinnray.experiments.trainer import Trainer
from spinnray.rules import rule
from spinnray.rules.eprop.core import EPropHiddenCore

from helpers import EPropConfig, RecurrentALIFConfig, eprop_net


def _trainer(cfg: RecurrentALIFConfig, k: int, cores: int = 3, window=None, dtype="float64",
             backend: str = "local") -> Trainer:
    net = eprop_net(cfg, 5, 3, seed=2)
    learn = EPropConfig(batch_size=2, lr=0.01, surrogate="multi_gaussian", gamma=0.5, window_steps=window)
    return Trainer(net, rule("eprop"), learn, machine=MachineConfig(dtype=dtype),
                   parallel=ParallelConfig(cores_per_population=cores, exchange_interval=k), backend=backend,
                   cluster=ClusterConfig())


@pytest.mark.parametrize("out_delay", [1, 2, 3])
@pytest.mark.parametrize("window", [None, 7])
def test_window_constants_follow_the_readout_delay(out_delay, window):
    """c_t, with sum over the window of ebar = sum_t c_t e[t] and ebar[s] = kappa ebar[s-1] +
    (1 - kappa) e[s - d]: in closed form c_t = (1 - kappa) sum_{s >= max(t + d, T - T_w)} kappa^(s - t - d)."""
    T = 20
    tr = _trainer(RecurrentALIFConfig(hidden=6, v_th=0.6, w_in_scale=3.0, out_delay=out_delay), 1, cores=2,
                  window=window)
    try:
        tr.forward(np.zeros((T, 2, 5)), np.zeros(2, int))
        hidden = [c for c in tr.sim.backend.cores if isinstance(c, EPropHiddenCore)]
        kappa = hidden[0].kappa
        start = T - (window or T)
        want = [(1 - kappa) * sum(kappa ** (s - t - out_delay) for s in range(max(t + out_delay, start), T))
                for t in range(T)]
        for core in hidden:
            np.testing.assert_allclose(core.c_read, want, rtol=1e-13, atol=0)
        assert np.count_nonzero(hidden[0].c_read) == T - out_delay     # the last d steps never reach the readout
    finally:
        tr.close()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_with_delays_two_identical_at_k_1_and_2(dtype):
    """Recurrent and readout delays of 2: exchanging every 2 steps trains the same weights, bit for bit,
    as every step (with the round's last trace update deferred to the exchange), on 1 and 3 cores."""
    rng = np.random.default_rng(3)
    x = [rng.normal(0, 1, (25, 2, 5)) for _ in range(3)]
    y = [rng.integers(0, 3, 2) for _ in range(3)]
    cfg = RecurrentALIFConfig(hidden=9, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0, rec_delay=2, out_delay=2)
    got = {}
    for k in (1, 2):
        for cores in (1, 3):
            tr = _trainer(cfg, k, cores, dtype=dtype)
            try:
                for xb, yb in zip(x, y):
                    tr.train_batch(xb, yb)
                got[k, cores] = tr.weights()
            finally:
                tr.close()
    for key in got:
        for name in got[1, 1]:
            np.testing.assert_array_equal(got[key][name], got[1, 1][name], err_msg=f"{name}, K and cores {key}")
    start = {p.name: p.weights for p in eprop_net(cfg, 5, 3, seed=2).projections}
    assert all(not np.allclose(got[1, 1][name], start[name]) for name in start)       # every projection learned
