"""e-prop with delays on Ray: the gradients equal the local backend's and the hand-written reference's
for readout and recurrent delays > 1 at K > 1, and training at K = 2 on Ray equals K = 1 locally
(on Ray the round's last trace update runs while the router routes the round)."""

import numpy as np
import pytest

from helpers import RecurrentALIFConfig
from oracle.test_eprop_delays import TOL, core_grads, network, problem, reference, rel
from unit.rules.eprop.test_core_delays import _trainer


@pytest.mark.ray
@pytest.mark.parametrize("rec_delay,out_delay,k", [(2, 3, 2), (3, 3, 3)])
def test_ray_gradients_with_delays_equal_local_and_reference(ray_session, rec_delay, out_delay, k):
    x, w_in, w_rec, w_out, labels = problem(True)
    net = network(w_in, w_rec, w_out, rec_delay, out_delay)
    on_ray = core_grads(net, x, labels, 3, k, backend="ray")
    local = core_grads(net, x, labels, 3, k)
    want, _ = reference(True, rec_delay, out_delay, np.float32)
    names = {"w_in": "input->hidden", "w_rec": "hidden->hidden", "w_out": "hidden->output"}
    for name, proj in names.items():
        np.testing.assert_array_equal(on_ray[proj], local[proj])
        assert rel(on_ray[proj], want[name]) <= TOL, name


@pytest.mark.ray
def test_ray_training_at_k2_equals_local_at_k1(ray_session):
    rng = np.random.default_rng(5)
    batches = [(rng.normal(0, 1, (25, 2, 5)), rng.integers(0, 3, 2)) for _ in range(2)]
    cfg = RecurrentALIFConfig(hidden=9, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0, rec_delay=2, out_delay=2)
    got = {}
    for k, backend in ((1, "local"), (2, "ray")):
        tr = _trainer(cfg, k, 3, backend=backend)
        try:
            for x, y in batches:
                tr.train_batch(x, y)
            got[backend] = (tr.weights(), tr.checksum())
        finally:
            tr.close()
    assert got["ray"][1] == got["local"][1]
    for name, w in got["local"][0].items():
        np.testing.assert_array_equal(got["ray"][0][name], w, err_msg=name)
