"""spinnray.machine.counters: link classes by hand, and their counts against an independent count
from the spikes on one to three nodes."""

import pytest

from spinnray.config import ClusterConfig
from spinnray.errors import DataError
from spinnray.machine.counters import LINK_CLASSES, bytes_by_link_class, link_class, traffic_summary

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


@pytest.mark.parametrize("unit", ["chip", "node"])
@pytest.mark.parametrize("nodes", [1, 2, 3])
def test_link_classes_equal_an_independent_count(nodes, unit):
    """4 chips on 1-3 nodes, one router per chip or per node: the delivered events by link class and
    the router-to-router copies (inter-chip, inter-node) equal a count from the spikes."""
    res, (cores, routers), metrics, mapping = forward("local", ClusterConfig(nodes=nodes, router_per=unit))
    want, wire = expected_link_classes(make_network(), mapping, res.spikes)
    got = metrics["traffic"]["by_link_class"]
    assert {k: v["events"] for k, v in got.items()} == want
    assert sum(v["events"] for v in got.values()) == metrics["traffic"]["spike_events"]
    assert sum(v["bytes"] for v in got.values()) == metrics["traffic"]["bytes"]
    assert metrics["traffic"]["inter_node"]["events"] == wire["inter_node"]
    assert metrics["traffic"]["inter_chip"]["events"] == wire["inter_chip"]
    assert (want["across_nodes"] > 0) == (nodes > 1) and want["same_core"] > 0 and want["same_node"] > 0
    assert (wire["inter_node"] > 0) == (nodes > 1)
    assert (wire["inter_chip"] > 0) == (unit == "chip" and nodes < 4)      # some node holds 2+ chips
    assert len(routers) == (4 if unit == "chip" else nodes)
    # per router: its own links by class, summing to the machine's
    for k in LINK_CLASSES:
        assert sum(r["by_link_class"][k]["events"] for r in routers) == want[k]
    assert sum(r["counters"]["from_routers_events"] for r in routers) == sum(wire.values())
    for cls, key in (("across_nodes", "inter_node"), ("same_node", "inter_chip")):   # sent = received, by class
        for field in ("packets", "events", "bytes"):
            assert sum(r["counters"]["forwarded_by_class"][cls][field] for r in routers) == \
                sum(r["counters"]["from_routers_by_class"][cls][field] for r in routers) == \
                metrics["traffic"][key][field]
    assert [r["chips"] for r in routers] == ([[c] for c in range(4)] if unit == "chip" else
                                             [sorted({p.chip for p in mapping.placements if p.node == n})
                                              for n in range(nodes)])


def test_traffic_of_reports_without_the_split_counts_every_forwarded_copy_as_inter_node():
    """routers.json of runs before one router per chip has no forwarded_by_class: those runs had one
    router per node, so every forwarded copy crossed nodes."""
    old = [{"forwarded_packets": 2, "forwarded_events": 5, "forwarded_bytes": 80, "spike_events_out": 0,
            "error_events_out": 0, "packets_out": 0, "bytes_out": 0, "dropped": 0, "rejected": 0}]
    got = traffic_summary(old, [], 0)
    assert got["inter_node"] == {"packets": 2, "events": 5, "bytes": 80}
    assert got["inter_chip"] == {"packets": 0, "events": 0, "bytes": 0}
