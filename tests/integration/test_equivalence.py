"""The equivalence contract on Ray: identical spikes and states for 1, 2, 3 and 5 cores per population and
K = 1 and 3, and, for the same mapping, identical counters on both backends (local: tests/unit/test_simulator.py)."""

import numpy as np
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


@pytest.mark.ray
def test_ray_with_a_router_per_chip_equals_local(ray_session):
    """4 chips of 2 cores on one Ray node, one router actor per chip (the default), routing between
    chips over the router-to-router streams: the spikes and voltages of one router for the whole
    machine, and every core and router counter of the local backend's chip routers."""
    from spinnray.config import ClusterConfig

    from helpers import cluster_forward

    one, _, _, _ = cluster_forward("local", ClusterConfig(router_per="node"))
    local = cluster_forward("local", ClusterConfig())
    res, (cores, routers), metrics, mapping = cluster_forward("ray", ClusterConfig())
    assert len(routers) == mapping.routers == 4 and mapping.nodes == 1
    for name in one.spikes:
        assert np.array_equal(res.spikes[name], one.spikes[name]), name
    for name in one.v:
        assert np.array_equal(res.v[name], one.v[name]), name
    l_cores, l_routers = local[1]
    assert [c["counters"] for c in cores] == [c["counters"] for c in l_cores]
    assert [r["counters"] for r in routers] == [r["counters"] for r in l_routers]
    assert [r["chips"] for r in routers] == [[0], [1], [2], [3]]
    assert metrics["traffic"] == local[2]["traffic"]
    assert metrics["traffic"]["inter_chip"]["events"] > 0 and metrics["traffic"]["inter_node"]["events"] == 0
