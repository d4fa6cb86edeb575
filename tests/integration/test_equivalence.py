"""The equivalence contract on Ray: identical spikes and states for 1, 2, 3 and 5 cores per population and
K = 1 and 3, and, for the same mapping, identical counters on both backends (local: tests/unit/test_simulator.py)."""

import pytest

from unit import test_simulator as local_tests
from unit.test_simulator import CORES, assert_same, run_all

reference = local_tests.reference          # the fixture: the local run on one core that Ray must equal


@pytest.mark.ray
@pytest.mark.parametrize("cores", CORES)
def test_ray_identical_and_counters_equal_local(ray_session, reference, cores):
    ray_results, (ray_cores, ray_routers), _ = run_all("ray", cores)
    for k, res in ray_results.items():
        assert_same(res, reference, f"ray, {cores} cores, K={k}")
    _, (loc_cores, loc_routers), _ = run_all("local", cores)
    assert [c["counters"] for c in ray_cores] == [c["counters"] for c in loc_cores]
    assert [c["memory"] for c in ray_cores] == [c["memory"] for c in loc_cores]
    assert ray_routers[0]["counters"] == loc_routers[0]["counters"]
    assert ray_routers[0]["counters"]["packets_out"] > 0
    assert ray_routers[0]["counters"]["dropped"] == 0 and ray_routers[0]["counters"]["rejected"] == 0
