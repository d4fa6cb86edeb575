"""spinnray.backends.local: one router per node in one process gives what one router gives."""

from __future__ import annotations

import numpy as np
import pytest

from spinnray.config import ClusterConfig

from helpers import cluster_forward as forward


@pytest.fixture(scope="module")
def one_node():
    return forward("local", None)


@pytest.mark.parametrize("cluster", [ClusterConfig(nodes=2), ClusterConfig(nodes=3), ClusterConfig(chips_per_node=1)])
def test_local_nodes_identical_to_one_node(one_node, cluster):
    ref, (ref_cores, ref_routers), _, _ = one_node
    assert 0.02 < ref.spikes["hid"].mean() < 0.6 and ref.spikes["out"].any()
    res, (cores, routers), metrics, mapping = forward("local", cluster)
    for name in ref.spikes:
        assert np.array_equal(res.spikes[name], ref.spikes[name]), name
    for name in ref.v:
        assert np.array_equal(res.v[name], ref.v[name]), name
    assert [c["counters"] for c in cores] == [c["counters"] for c in ref_cores]
    assert len(routers) == mapping.nodes > 1
    one = ref_routers[0]["counters"]
    for key in ("packets_in", "bytes_in", "spike_events_in", "packets_out", "bytes_out", "spike_events_out"):
        assert sum(r["counters"][key] for r in routers) == one[key], key
    merged = {}
    for r in routers:                  # every link delivered once, by the router of its destination's node
        for link, cell in r["counters"]["links"].items():
            assert link not in merged
            dst = int(link.split("->")[1])
            assert mapping.node_of()[dst] == r["node"]
            merged[link] = cell
    assert merged == one["links"]
    assert [c["node"] for c in cores] == [p.node for p in mapping.placements]
