"""e-prop on Ray equals local (gradients, counters, training); e-prop learns a tiny task and the rate
regulariser pulls the rates to the target; the paper's network keeps its memory constant in T."""

import numpy as np
import pytest

from spinnray import MachineConfig
from spinnray.rules.eprop import TRAINING_STATE

from helpers import EPropConfig, RecurrentALIFConfig, analog_split, eprop_net, eprop_trainer
from oracle.test_eprop import _distributed_grads, _problem
from unit.rules.eprop.test_core import _train


@pytest.mark.ray
def test_ray_equals_local_and_error_events_counted(ray_session):
    x, w_in, w_rec, w_out, labels = _problem(seed=5)
    g_l, res_l, cores_l, _ = _distributed_grads(x, w_in, w_rec, w_out, labels, 3, "local")
    g_r, res_r, cores_r, _ = _distributed_grads(x, w_in, w_rec, w_out, labels, 3, "ray")
    for name in g_l:
        np.testing.assert_array_equal(g_l[name], g_r[name])
    np.testing.assert_array_equal(res_l.outputs["loss"], res_r.outputs["loss"])
    assert [c["counters"] for c in cores_l] == [c["counters"] for c in cores_r]
    # the readout sends one learning signal per hidden neuron and sample; hidden cores receive them
    out = [c for c in cores_l if c["population"] == "output"][0]["counters"]
    hid = [c["counters"] for c in cores_l if c["population"] == "hidden"]
    assert out["error_events_sent"] == 8 * 3
    assert sum(h["error_events_received"] for h in hid) == 8 * 3
    assert all(h["error_events_sent"] == 0 for h in hid)


@pytest.mark.ray
def test_training_ray_equals_local(ray_session):
    a, b = _train(3, "local", steps=2), _train(3, "ray", steps=2)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_rate_regulariser_pulls_rates_to_the_target():
    """Training on the regulariser alone (a zero-gain readout loss is not possible, so a huge c)
    moves an over-active network's rates toward the target, identically on 1 and 3 cores."""
    rng = np.random.default_rng(3)
    T, n_in, B = 40, 6, 4
    x = rng.normal(0.3, 1.0, (T, B, n_in))
    y = rng.integers(0, 3, B)

    def run(cores):
        net = eprop_net(RecurrentALIFConfig(hidden=9, v_th=0.6, w_in_scale=3.0, w_out_scale=1.0),
                                  n_in, 3, seed=4)
        learn = EPropConfig(batch_size=B, lr=0.1, surrogate="triangle", gamma=0.3, rate_reg=1e4,
                                    rate_target_hz=20.0)
        tr = eprop_trainer(net, learn, machine=MachineConfig(dtype="float64"), hidden_cores=cores,
                          backend="local")
        try:
            rates = []
            for _ in range(15):
                res = tr.forward(x, None, record=("spikes",))
                rates.append(res.spikes["hidden"].mean() * 1000.0)
                tr.train_batch(x, y)
            return rates, tr.weights()
        finally:
            tr.close()

    rates, w1 = run(1)
    assert rates[0] > 80.0 and abs(rates[-1] - 20.0) < 0.5 * abs(rates[0] - 20.0), rates
    _, w3 = run(3)
    for name in w1:
        np.testing.assert_array_equal(w1[name], w3[name], err_msg=name)


def _paper_memory(steps):
    net = eprop_net(RecurrentALIFConfig(), 80, 12, seed=0)
    tr = eprop_trainer(net, EPropConfig(batch_size=1), machine=MachineConfig(dtype="float32"),
                      hidden_cores=12, backend="local")
    try:
        x = np.random.default_rng(0).normal(0, 1, (steps, 1, 80)).astype(np.float32)
        tr.train_batch(x, np.array([3]))
        cores, _ = tr.sim.reports()
    finally:
        tr.close()
    return cores


def test_paper_network_memory_constant_in_T():
    """Rostami et al.'s 80-120-12 on 12 + 1 cores: training state <= 680 KB, every core under 128 KB,
    the same at T = 100 and T = 1000."""
    a, b = _paper_memory(100), _paper_memory(1000)
    assert [c["memory"] for c in a] == [c["memory"] for c in b]
    state = sum(v for c in a for k, v in c["memory"].items() if k in TRAINING_STATE)
    assert state <= 680_000
    # the arrays held: 25,440 weights x (weights, gradients, two Adam moments) in float32
    assert sum(c["memory"]["weights"] for c in a) == 25_440 * 4
    assert all(sum(c["memory"].values()) <= 128 * 1024 for c in a)
    assert len([c for c in a if c["population"] == "hidden"]) == 12


def test_learns_a_tiny_task_above_chance():
    """Which of two input groups is more active: e-prop on 3 cores learns it online-ish."""
    rng = np.random.default_rng(0)
    T, n_in, B = 30, 8, 8

    def data(n):
        y = rng.integers(0, 2, n)
        rate = np.where(np.arange(n_in)[None, :] < n_in // 2, 0.05, 0.3)
        rate = np.where(y[:, None] == 1, rate, rate[:, ::-1])
        x = (rng.random((n, T, n_in)) < rate[:, None, :]).astype(np.float64)
        return x, y

    xtr, ytr = data(160)
    xte, yte = data(100)
    net = eprop_net(RecurrentALIFConfig(hidden=12, v_th=0.6, tau_mem_ms=10.0, w_in_scale=4.0,
                                                 w_out_scale=10.0), n_in, 2, seed=1)
    learn = EPropConfig(batch_size=B, lr=0.02, surrogate="triangle", gamma=0.3)
    tr = eprop_trainer(net, learn, machine=MachineConfig(dtype="float64"), hidden_cores=3, backend="local")
    try:
        before, _ = tr.evaluate(analog_split(xte, yte), B)
        for _ in range(3):
            for first in range(0, len(ytr), B):
                tr.train_batch(np.ascontiguousarray(xtr[first:first + B].transpose(1, 0, 2)), ytr[first:first + B])
        after, _ = tr.evaluate(analog_split(xte, yte), B)
    finally:
        tr.close()
    assert after >= 0.8 and after > before + 0.1, (before, after)
