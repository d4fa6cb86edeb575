"""Data-parallel e-prop on Ray: R copies of the model-parallel network (each its cores as Ray actors)
train exactly as on the local backend, and give the update of one copy running the mini-batch in
lockstep (float64, relative error <= 1e-12).  Across nodes (one copy per node):
tests/integration/test_cluster.py.  Without Ray, all R, splits and shards:
tests/unit/rules/eprop/test_replicas.py."""

import numpy as np
import pytest

from unit.rules.eprop.test_replicas import assert_same_update, lockstep, update


@pytest.mark.ray
@pytest.mark.parametrize("replicas,cores,variant", [(2, 3, "reg-random"), (4, 1, "plain")])
def test_ray_replicas_equal_local_and_one_copy_in_lockstep(ray_session, replicas, cores, variant):
    got, loss = update(replicas, cores, variant, backend="ray")
    local, local_loss = update(replicas, cores, variant)
    np.testing.assert_array_equal(loss, local_loss)
    for dw, ref in zip(got, local):                  # the same float operations on either backend
        for name in ref:
            np.testing.assert_array_equal(dw[name], ref[name], err_msg=name)
    want, _ = lockstep(cores, variant)
    for dw in got:
        assert_same_update(dw, want)
