"""One router per chip against one per node and one for the whole machine (local backend, no Ray).

Tiny networks spread over 3 chips of 2 PEs (``machine.pes_per_chip=2``) on 1 and 2 nodes: a training
step of EventProp and of e-prop (both send error events) gives the same loss, weights, per-core
counters and delivered traffic by link class whatever the routers; only the router-to-router
copies move between ``traffic.inter_chip`` and ``traffic.inter_node``.  The forward case is
tests/unit/backends/test_local.py; the same on Ray is tests/integration/test_equivalence.py and
test_cluster.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import helpers
from spinnray.config import ClusterConfig, MachineConfig

ONE_ROUTER = ClusterConfig(router_per="node")          # one node, one router for every chip
CLUSTERS = {"chip/1 node": ClusterConfig(), "chip/2 nodes": ClusterConfig(nodes=2),
            "node/2 nodes": ClusterConfig(nodes=2, router_per="node")}


def _eventprop(cluster):
    from spinnray.data import encode_yin_yang, yin_yang

    net = helpers.yinyang_net(helpers.FeedForwardConfig(steps=30, hidden=16), seed=0)
    tr = helpers.eventprop_trainer(net, helpers.EventPropConfig(batch_size=6, lr=5e-3),
                                   machine=MachineConfig(dtype="float32", pes_per_chip=2),
                                   cores_per_population={"hidden": 3, "output": 1}, cluster=cluster)
    try:
        x, y = yin_yang(6, 42)
        loss = tr.train_batch(encode_yin_yang(x, scheme="wunderlich", steps=30), y).outputs["loss"]
        return _state(tr, loss, tr.weights(0))
    finally:
        tr.close()


def _eprop(cluster):
    net = helpers.eprop_net(helpers.RecurrentALIFConfig(hidden=12, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0), 5, 3,
                            seed=2)
    learn = helpers.EPropConfig(batch_size=4, lr=0.01, surrogate="triangle", gamma=0.3)
    tr = helpers.eprop_trainer(net, learn, machine=MachineConfig(dtype="float64", pes_per_chip=2), hidden_cores=4,
                               cluster=cluster)
    try:
        rng = np.random.default_rng(7)
        for _ in range(2):
            tr.train_batch(rng.normal(0, 1, (30, 4, 5)), rng.integers(0, 3, 4))
        return _state(tr, None, tr.weights())
    finally:
        tr.close()


def _state(tr, loss, weights) -> dict:
    cores, routers = tr.sim.reports()
    return {"loss": loss, "weights": weights, "cores": [c["counters"] for c in cores],
            "traffic": tr.sim.metrics()["traffic"], "routers": len(routers), "mapping": tr.sim.mapping}


@pytest.fixture(scope="module", params=["eventprop", "eprop"])
def case(request):
    run = {"eventprop": _eventprop, "eprop": _eprop}[request.param]
    return run, run(ONE_ROUTER)


@pytest.mark.parametrize("name", list(CLUSTERS))
def test_training_step_identical_whatever_the_routers(case, name):
    run, ref = case
    got = run(CLUSTERS[name])
    mapping = got["mapping"]
    assert ref["routers"] == 1 and len({p.chip for p in mapping.placements}) >= 3
    assert got["routers"] == (mapping.routers if name.startswith("chip") else mapping.nodes)
    if ref["loss"] is not None:
        assert np.array_equal(got["loss"], ref["loss"])
    for w, want in ref["weights"].items():
        assert np.array_equal(got["weights"][w], want), w
    assert got["cores"] == ref["cores"]
    t, r = got["traffic"], ref["traffic"]
    assert r["error_events"] > 0 and t["error_events"] == r["error_events"]
    for key in ("spike_events", "packets", "bytes"):
        assert t[key] == r[key], key
    classes = {k: v for k, v in t["by_link_class"].items() if k != "across_nodes"}
    if mapping.nodes == 1:
        assert t["by_link_class"] == r["by_link_class"]
    else:                             # same deliveries; those between nodes leave same_node / same_chip
        assert sum(v["events"] for v in t["by_link_class"].values()) == \
            sum(v["events"] for v in r["by_link_class"].values())
        assert t["by_link_class"]["across_nodes"]["events"] > 0
    assert classes["same_chip"]["events"] > 0
    # router-to-router copies: between chips of a node only with one router per chip
    several_chips_on_a_node = any(len({p.chip for p in mapping.placements if p.node == n}) > 1
                                  for n in range(mapping.nodes))
    assert several_chips_on_a_node
    assert (t["inter_chip"]["events"] > 0) == (name.startswith("chip") and several_chips_on_a_node)
    assert (t["inter_node"]["events"] > 0) == (mapping.nodes > 1)
    assert r["inter_chip"]["events"] == r["inter_node"]["events"] == 0
