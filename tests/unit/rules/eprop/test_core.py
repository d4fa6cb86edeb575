"""spinnray.rules.eprop.core: the same training on any split of the hidden cores gives the same weights,
and the memory model of the cores equals the arrays they hold."""

import numpy as np
import pytest

from spinnray import MachineConfig

from helpers import EPropConfig, RecurrentALIFConfig, eprop_net, eprop_trainer, held_bytes


def _train(cores, backend, steps=3, batch=4, feedback="symmetric", n_lif=0, rate_reg=0.0):
    rng = np.random.default_rng(7)
    T, n_in = 30, 5
    net = eprop_net(RecurrentALIFConfig(hidden=12, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0, n_lif=n_lif),
                              n_in, 3, seed=2)
    learn = EPropConfig(batch_size=batch, lr=0.01, surrogate="triangle", gamma=0.3, feedback=feedback,
                                rate_reg=rate_reg)
    tr = eprop_trainer(net, learn, machine=MachineConfig(dtype="float64"), hidden_cores=cores, backend=backend)
    try:
        for _ in range(steps):
            x = rng.normal(0, 1, (T, batch, n_in))
            tr.train_batch(x, rng.integers(0, 3, batch))
        return tr.weights()
    finally:
        tr.close()


@pytest.mark.parametrize("feedback", ["symmetric", "random"])
def test_training_identical_for_1_3_12_cores(feedback):
    """(c) same seed -> the same weights after training, whatever the split."""
    ws = {c: _train(c, "local", feedback=feedback) for c in (1, 3, 12)}
    for c in (3, 12):
        for name in ws[1]:
            np.testing.assert_array_equal(ws[1][name], ws[c][name], err_msg=f"{name}, {c} cores")
    assert not np.allclose(ws[1]["input->hidden"], _train(1, "local", steps=0)["input->hidden"])


def test_mix_and_regulariser_train_identically_for_2_4_12_cores():
    """(c) with 5 LIF + 7 ALIF and the rate regulariser: same weights for any split."""
    ws = {c: _train(c, "local", n_lif=5, rate_reg=5.0) for c in (2, 4, 12)}
    for c in (4, 12):
        for name in ws[2]:
            np.testing.assert_array_equal(ws[2][name], ws[c][name], err_msg=f"{name}, {c} cores")
    assert set(ws[2]) >= {"input->lif", "lif->hidden", "hidden->lif", "lif->output"}


@pytest.mark.parametrize("n_lif,rate_reg", [(0, 0.0), (7, 1.0)])
def test_learning_bytes_estimate_matches_cores(n_lif, rate_reg):
    net = eprop_net(RecurrentALIFConfig(hidden=20, n_lif=n_lif), 7, 3, seed=0)
    tr = eprop_trainer(net, EPropConfig(batch_size=2, rate_reg=rate_reg), machine=MachineConfig(),
                      hidden_cores=4, backend="local")
    try:
        cores, _ = tr.sim.reports()
        held = [held_bytes(c) for c in tr.sim.backend.cores]
        estimate = tr.sim.mapping.memory
    finally:
        tr.close()
    assert {c["population"] for c in cores} == ({"lif", "hidden", "output"} if n_lif else {"hidden", "output"})
    # the mapper's estimate = the core's report = the arrays it holds
    assert [c["memory"] for c in cores] == estimate == held
