"""The layered schedule on Ray: identical to lockstep and to local, forward and training
(local: tests/unit/machine/test_schedule.py)."""

import pytest

from unit.machine import test_schedule as local_tests
from unit.machine.test_schedule import assert_same, assert_same_training, event_counters, forward, packets, train

ff_reference = local_tests.ff_reference    # the fixture: lockstep on the local backend, the reference


@pytest.mark.ray
def test_layered_forward_on_ray_identical_to_lockstep_and_local(ray_session, ff_reference):
    ray_res, ray_rep = forward("layered", 2, 1, "float32", replicas=2, backend="ray", dmin=2)
    for run, ref in enumerate(ff_reference[2, "float32"]):
        assert_same(ray_res[run], ref, f"ray layered, run {run}")
    _, loc_rep = forward("layered", 2, 1, "float32", replicas=2, dmin=2)
    _, lock_rep = forward("lockstep", 2, 2, "float32", replicas=2, dmin=2)
    assert [r["counters"] for r in ray_rep] == [r["counters"] for r in loc_rep]
    assert [r["memory"] for r in ray_rep] == [r["memory"] for r in loc_rep]
    assert event_counters(ray_rep) == event_counters(lock_rep)
    assert packets(ray_rep) < packets(lock_rep)


@pytest.mark.ray
def test_layered_training_on_ray_identical_to_local(ray_session):
    ray_out = train("layered", 2, None, "float32", backend="ray")
    local = train("layered", 2, None, "float32")
    assert_same_training(ray_out, local, "ray vs local, layered")
    assert [r["counters"] for r in ray_out["reports"]] == [r["counters"] for r in local["reports"]]
    assert ray_out["checksum"] == train("lockstep", 2, None, "float32")["checksum"]
