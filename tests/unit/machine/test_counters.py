"""spinnray.machine.counters: link classes by hand, and their counts against an independent count
from the spikes on one to three nodes."""

import pytest

from spinnray.config import ClusterConfig
from spinnray.errors import DataError
from spinnray.machine.counters import LINK_CLASSES, bytes_by_link_class, link_class

from helpers import cluster_forward as forward, cluster_network as make_network, expected_link_classes


def test_link_class_rules():
    a = {"core_id": 0, "chip": 0}
    assert link_class(a, a) == "same_core"
    assert link_class(a, {"core_id": 1, "chip": 0}) == "same_chip"
    assert link_class(a, {"core_id": 1, "chip": 3}) == "same_node"          # no node field: one node
    assert link_class(a, {"core_id": 1, "chip": 0, "node": None}) == "same_chip"
    assert link_class({**a, "node": "n0"}, {"core_id": 1, "chip": 0, "node": "n1"}) == "across_nodes"
    assert link_class({**a, "node": "n0"}, {"core_id": 1, "chip": 5, "node": "n0"}) == "same_node"
    cores = [{"core_id": 0, "chip": 0, "node": "a"}, {"core_id": 1, "chip": 0, "node": "a"},
             {"core_id": 2, "chip": 1, "node": "a"}, {"core_id": 3, "chip": 0, "node": "b"}]
    routers = [{"router_id": 0, "counters": {"links": {"0->0": [1, 10], "0->1": [2, 20], "0->2": [3, 30]}}},
               {"router_id": 1, "counters": {"links": {"0->3": [4, 40], "1->2": [5, 50]}}}]
    got = bytes_by_link_class(routers, cores)
    assert list(got) == list(LINK_CLASSES)
    assert got == {"same_core": {"events": 1, "bytes": 10}, "same_chip": {"events": 2, "bytes": 20},
                   "same_node": {"events": 8, "bytes": 80}, "across_nodes": {"events": 4, "bytes": 40}}
    with pytest.raises(DataError, match="core 9 is not in the core reports"):
        bytes_by_link_class([{"router_id": 0, "counters": {"links": {"0->9": [1, 1]}}}], cores)


@pytest.mark.parametrize("nodes", [1, 2, 3])
def test_link_classes_equal_an_independent_count(nodes):
    res, (cores, routers), metrics, mapping = forward("local", ClusterConfig(nodes=nodes))
    want, wire = expected_link_classes(make_network(), mapping, res.spikes)
    got = metrics["traffic"]["by_link_class"]
    assert {k: v["events"] for k, v in got.items()} == want
    assert sum(v["events"] for v in got.values()) == metrics["traffic"]["spike_events"]
    assert sum(v["bytes"] for v in got.values()) == metrics["traffic"]["bytes"]
    assert metrics["traffic"]["inter_node"]["events"] == wire
    assert (want["across_nodes"] > 0) == (nodes > 1) and want["same_core"] > 0
    # per router: its own links by class, summing to the machine's
    for k in LINK_CLASSES:
        assert sum(r["by_link_class"][k]["events"] for r in routers) == want[k]
    assert sum(r["counters"]["from_routers_events"] for r in routers) == wire
