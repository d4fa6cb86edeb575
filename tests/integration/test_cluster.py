"""The machine spread over cluster nodes, one router per chip (issue 6, issue 25).

Without Ray (tests/unit/mapping/test_place.py, test_routes.py, tests/unit/backends/test_local.py,
test_transport.py, test_chip_routers.py, tests/unit/machine/test_counters.py): chips go onto nodes as
configured, the per-router tables (one per chip or per node) deliver exactly like the machine's table,
routers on several chips and nodes give the same frames as one router, the link-class counters equal
an independent count from the spikes.

With Ray (``ray``, ``multinode``): a 3-node ``ray.cluster_utils.Cluster`` on this
machine, started in a child process (the session-wide Ray of conftest.py
lives in this one, and a process holds one Ray), which runs this file as a
script and pickles what it saw; the tests compare that with the local
backend here.  Results and counters equal local ones (a network over 4 chips on 3 nodes, one router
per chip or per node; also data-parallel e-prop with one copy per node), cores and routers run on the
nodes configured, a killed core or a removed node is a prompt error naming the core,
round and phase, and an impossible placement fails at once.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spinnray.config import ClusterConfig, MachineConfig
from spinnray.mapping import assign_nodes, map_network
from spinnray.simulator import Simulator

import helpers
from helpers import (
    CLUSTER_BATCH as BATCH,
    CLUSTER_CORES as CORES,
    CLUSTER_MACHINE as MACHINE,
    CLUSTER_STEPS as STEPS,
    cluster_forward as forward,
    cluster_inputs as make_inputs,
    cluster_network as make_network,
    expected_link_classes,
)

CHILD_TIMEOUT_S = 420


def _child_main(out_path: str) -> None:
    """Start a 3-node Cluster, run everything the multinode tests check, pickle it."""
    import ray
    from ray.cluster_utils import Cluster

    from spinnray.backends import cluster_nodes

    out = {}
    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False))
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()
        out["cluster_up_s"] = time.monotonic() - t0
        order = cluster_nodes()
        out["default_order"] = [a["node_id"] for a in order]
        out["head"] = cluster.head_node.node_id
        out["driver_node"] = ray.get_runtime_context().get_node_id()
        w1, w2 = (w.node_id for w in workers)
        out["workers"] = [w1, w2]

        # A: the forward network (4 chips, a router each) on 3 nodes in a non-default order; then a
        # core is killed mid-run.
        asked = (w2, out["head"], w1)
        cfg = ClusterConfig(nodes=3, node_ids=asked, round_timeout_s=300.0)
        t = time.monotonic()
        sim = Simulator(make_network(), MACHINE, cores_per_population=CORES, batch_size=BATCH, backend="ray",
                        cluster=cfg)
        out["setup_s"] = time.monotonic() - t
        try:
            res = sim.run(STEPS, make_inputs(), record=("spikes", "v"))
            out["forward"] = {"spikes": res.spikes, "v": res.v, "reports": sim.reports(), "metrics": sim.metrics(),
                              "asked": asked, "actual": dict(sim.backend.actual_nodes),
                              "routers_on": ray.get([r.node.remote() for r in sim.backend.routers])}
            out["kill"] = _kill_mid_run(ray, sim, victim=sim.mapping.cores_of("hid")[1].core_id)
        finally:
            sim.close()
        # A2: the same with one router per node
        t2 = time.monotonic()
        with Simulator(make_network(), MACHINE, cores_per_population=CORES, batch_size=BATCH, backend="ray",
                       cluster=ClusterConfig(nodes=3, node_ids=asked, router_per="node")) as sim:
            setup_s = time.monotonic() - t2
            res = sim.run(STEPS, make_inputs(), record=("spikes", "v"))
            out["forward_node_routers"] = {"spikes": res.spikes, "v": res.v, "reports": sim.reports(),
                                           "metrics": sim.metrics(), "setup_s": setup_s}

        out["phase_s"] = {"A": time.monotonic() - t}
        t = time.monotonic()
        # B: an EventProp training step, replicas over 3 nodes.
        tr = yinyang_trainer("ray", ClusterConfig(nodes=3))
        try:
            out["eventprop"] = eventprop_step(tr)
        finally:
            tr.close()

        out["phase_s"]["B"] = time.monotonic() - t
        t = time.monotonic()
        # C: an e-prop training step, hidden cores over 2 nodes (2 chips each).
        tr = recurrent_trainer("ray", ClusterConfig(chips_per_node=2))
        try:
            out["eprop"] = eprop_steps(tr)
            # a dead router between runs: the next run says so before it starts
            ray.kill(tr.sim.backend.routers[1])
            time.sleep(0.5)
            try:
                eprop_steps(tr)
                out["dead_router"] = None
            except Exception as e:     # noqa: BLE001 - the parent checks type and message
                out["dead_router"] = (type(e).__name__, str(e))
        finally:
            tr.close()

        out["phase_s"]["C"] = time.monotonic() - t
        t = time.monotonic()
        # C2: data-parallel e-prop, one copy (3 hidden cores + readout = one chip) per node.
        out["eprop_replicas"] = eprop_replicas_step("ray", ClusterConfig(chips_per_node=1))
        out["phase_s"]["C2"] = time.monotonic() - t
        t = time.monotonic()
        # D: default node order; then a node is removed mid-run.
        sim = Simulator(make_network(), MachineConfig(pes_per_chip=1, sram_per_pe_bytes=1 << 20),
                        cores_per_population=1, batch_size=BATCH, backend="ray",
                        cluster=ClusterConfig(nodes=3, round_timeout_s=300.0))
        try:
            out["default_nodes"] = list(sim.backend.ray_node_ids)
            victim = next(w for w in workers if w.node_id == sim.backend.ray_node_ids[2])
            out["remove"] = _kill_mid_run(ray, sim, remove=lambda: cluster.remove_node(victim),
                                          victim=victim.node_id)
        finally:
            sim.close()

        out["phase_s"]["D"] = time.monotonic() - t
        # E: placements the cluster cannot satisfy.
        out["impossible"] = {}
        for name, cfg in (("too_many", ClusterConfig(nodes=4)),
                          ("dead_node", ClusterConfig(nodes=2, node_ids=(out["head"], victim.node_id)))):
            t = time.monotonic()
            try:
                Simulator(make_network(), MachineConfig(pes_per_chip=1), cores_per_population=CORES,
                          batch_size=BATCH, backend="ray", cluster=cfg).close()
                out["impossible"][name] = None
            except Exception as e:     # noqa: BLE001 - the parent checks type and message
                out["impossible"][name] = (type(e).__name__, str(e), time.monotonic() - t)
        out["alive_after"] = [a["node_id"] for a in cluster_nodes()]
        t = time.monotonic()
        # F: e-prop training on the 2 nodes left; the other worker is removed mid-training.
        survivor = next(w for w in workers if w.node_id != victim.node_id)
        out["lost_node_training"] = _train_losing_node(lambda: cluster.remove_node(survivor))
        out["lost_node_training"]["removed"] = survivor.node_id
        out["phase_s"]["F"] = time.monotonic() - t
        out["total_s"] = time.monotonic() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
    with open(out_path, "wb") as f:
        pickle.dump(out, f)


def _kill_mid_run(ray, sim, victim, remove=None) -> dict:
    """Run long on ``sim``; once the rounds are going, kill core ``victim``
    (or call ``remove``).  What the run raised, how soon, and what a second
    run says."""
    steps = 20_000
    fired = threading.Event()
    finished = threading.Event()

    def packets_in():
        return ray.get(sim.backend.routers[0].report.remote())["counters"]["packets_in"]

    start = packets_in()        # counters add up over runs: strike some 100 rounds into this one

    def strike():
        while not finished.is_set():
            if packets_in() > start + 200:
                fired.set()
                if remove is None:
                    ray.kill(sim.backend.actors[victim])
                else:
                    remove()
                return
            time.sleep(0.02)

    th = threading.Thread(target=strike)
    th.start()
    t = time.monotonic()
    try:
        sim.run(steps, make_inputs(steps))
        error = None
    except Exception as e:     # noqa: BLE001 - the parent checks type and message
        error = (type(e).__name__, str(e))
    elapsed = time.monotonic() - t
    finished.set()
    th.join()
    try:
        sim.run(5, make_inputs(5))
        again = None
    except Exception as e:     # noqa: BLE001
        again = (type(e).__name__, str(e))
    return {"error": error, "elapsed_s": elapsed, "fired": fired.is_set(), "again": again,
            "victim": victim, "timeout_s": sim.backend.timeout_s, "steps": steps}


def training_cfg(backend: str, **over):
    """A small e-prop run through the runner, with checkpoints every 2 mini-batches."""
    from spinnray.config import RunConfig, from_dict

    d = {"kind": "eprop", "seed": 3, "backend": backend, "progress": False, "report": False,
         "machine": {"pes_per_chip": 1},
         "parallel": {"cores_per_population": 3},
         "network": {"hidden": 12, "tau_adapt_ms": 500.0, "beta": 5.0, "v_th": 0.6, "w_in_scale": 20.0,
                     "w_out_scale": 10.0},
         "data": {"name": "cue", "train_size": 24, "test_size": 8, "n_cues": 3, "total_ms": 600.0},
         "learning": {"epochs": 2, "batch_size": 4, "lr": 0.01, "surrogate": "triangle", "gamma": 0.3},
         "checkpoint": {"every": 2}, **over}
    return from_dict(RunConfig, d)


def _train_losing_node(remove) -> dict:
    """Train on 2 nodes; call ``remove`` before mini-batch 7 (mid-way through epoch 2)."""
    import tempfile

    from spinnray.experiments.runner import run
    from spinnray.experiments.trainer import Trainer

    real, calls = Trainer.train_batch, {"n": 0}

    def train_batch(self, x, y):
        calls["n"] += 1
        if calls["n"] == 7:
            remove()
        return real(self, x, y)

    Trainer.train_batch = train_batch
    try:
        with tempfile.TemporaryDirectory() as d:
            got = run(training_cfg("ray", cluster={"nodes": 2, "round_timeout_s": 60.0}), Path(d), "t")
    finally:
        Trainer.train_batch = real
    got["history"] = [{k: v for k, v in h.items() if k != "train_s"} for h in got["history"]]   # wall time
    return {k: got[k] for k in ("restarts", "weights_crc32", "history", "mapping", "traffic")}


def yinyang_trainer(backend: str, cluster=None):
    net = helpers.yinyang_net(helpers.FeedForwardConfig(steps=50, hidden=40), seed=0)
    return helpers.eventprop_trainer(net, helpers.EventPropConfig(batch_size=24, lr=5e-3),
                            machine=MachineConfig(dtype="float32", pes_per_chip=1), cores_per_population=1,
                            replicas=2, backend=backend, cluster=cluster)


def eventprop_step(tr) -> dict:
    from spinnray.data import encode_yin_yang, yin_yang

    x, y = yin_yang(24, 42)
    res = tr.train_batch(encode_yin_yang(x, scheme="wunderlich", steps=50), y)
    cores, _ = tr.sim.reports()
    return {"weights": [tr.weights(r) for r in range(2)], "loss": res.outputs["loss"],
            "traffic": tr.sim.metrics()["traffic"], "nodes": [c["node"] for c in cores],
            "ray_nodes": [c.get("ray_node_id") for c in cores]}


def recurrent_trainer(backend: str, cluster=None):
    net = helpers.eprop_net(helpers.RecurrentALIFConfig(hidden=12, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0), 5, 3,
                            seed=2)
    learn = helpers.EPropConfig(batch_size=4, lr=0.01, surrogate="triangle", gamma=0.3)
    return helpers.eprop_trainer(net, learn, machine=MachineConfig(dtype="float64", pes_per_chip=1), hidden_cores=3,
                        backend=backend, cluster=cluster)


def eprop_steps(tr) -> dict:
    rng = np.random.default_rng(7)
    for _ in range(2):
        tr.train_batch(rng.normal(0, 1, (30, 4, 5)), rng.integers(0, 3, 4))
    cores, _ = tr.sim.reports()
    return {"weights": tr.weights(), "traffic": tr.sim.metrics()["traffic"], "nodes": [c["node"] for c in cores]}


def eprop_replicas_step(backend: str, cluster=None):
    """One mini-batch of data-parallel e-prop (regulariser, random feedback) on 3 copies of 4 cores."""
    from unit.rules.eprop.test_replicas import update

    dws, loss, cores, replica_of = update(3, 3, "reg-random", backend=backend, cluster=cluster, reports=True,
                                          machine=MachineConfig(dtype="float64", pes_per_chip=4))
    return {"updates": dws, "loss": loss, "nodes": {c["core_id"]: c["node"] for c in cores},
            "replica_of": replica_of}


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """What the 3-node cluster child process saw (one Cluster for all tests)."""
    path = tmp_path_factory.mktemp("cluster") / "out.pkl"
    env = dict(os.environ, RAY_DEDUP_LOGS="0", PYTHONPATH=os.pathsep.join(       # this checkout, helpers
        [str(helpers.ROOT), str(helpers.TESTS)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, __file__, str(path)], capture_output=True, text=True, env=env,
                          timeout=CHILD_TIMEOUT_S)
    if proc.returncode != 0 or not path.exists():
        pytest.fail(f"cluster child failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    with open(path, "rb") as f:
        return pickle.load(f)


@pytest.fixture(scope="module")
def one_node():
    """One router for the whole machine, on one node."""
    return forward("local", ClusterConfig(router_per="node"))


@pytest.mark.ray
@pytest.mark.multinode
@pytest.mark.parametrize("unit", ["chip", "node"])
def test_cluster_forward_equals_local_on_one_and_three_nodes(child, one_node, unit):
    """4 chips on 3 nodes, one router per chip (node 0 holds two) or per node: the spikes and
    voltages of one router on one node, and every counter of the local backend's same routers."""
    got = child["forward" if unit == "chip" else "forward_node_routers"]
    ref = one_node[0]
    local3 = forward("local", ClusterConfig(nodes=3, router_per=unit))
    for name in ref.spikes:
        assert np.array_equal(got["spikes"][name], ref.spikes[name]), name
    for name in ref.v:
        assert np.array_equal(got["v"][name], ref.v[name]), name
    cores, routers = got["reports"]
    l_cores, l_routers = local3[1]
    assert len(one_node[1][1]) == 1 and len(routers) == (4 if unit == "chip" else 3)
    assert [c["counters"] for c in cores] == [c["counters"] for c in l_cores] == \
        [c["counters"] for c in one_node[1][0]]
    assert [r["counters"] for r in routers] == [r["counters"] for r in l_routers]
    assert got["metrics"]["traffic"] == local3[2]["traffic"]


@pytest.mark.ray
@pytest.mark.multinode
def test_cluster_cores_and_routers_run_on_the_nodes_configured(child):
    got = child["forward"]
    mapping = assign_nodes(map_network(make_network(), MACHINE, CORES), nodes=3)
    asked = got["asked"]
    assert len(set(asked)) == 3 and asked[1] == child["head"]
    cores, routers = got["reports"]
    for c, p in zip(cores, mapping.placements):
        assert c["node"] == p.node
        assert c["ray_node_id"] == got["actual"][p.core_id] == asked[p.node], c["core_id"]
    assert mapping.router_node() == [0, 0, 1, 2]            # a router per chip; node 0 holds chips 0 and 1
    assert got["routers_on"] == [asked[n] for n in mapping.router_node()]
    assert [r["ray_node_id"] for r in routers] == got["routers_on"]
    assert [(r["node"], r["chips"]) for r in routers] == [(0, [0]), (0, [1]), (1, [2]), (2, [3])]
    assert got["metrics"]["mapping"]["ray_node_ids"] == list(asked)
    assert got["metrics"]["mapping"]["cores_per_node"] == [4, 2, 2]
    # default order: the driver's node (the head) first, then the others by node id
    assert child["driver_node"] == child["head"]
    assert child["default_order"] == [child["head"]] + sorted(child["workers"])
    assert child["default_nodes"] == child["default_order"]


@pytest.mark.ray
@pytest.mark.multinode
@pytest.mark.parametrize("unit", ["chip", "node"])
def test_cluster_inter_node_traffic_counted(child, unit):
    """Traffic per link class (and the routers' copies between chips and between nodes) equals a
    count from the spikes; every class is present."""
    got = child["forward" if unit == "chip" else "forward_node_routers"]
    mapping = assign_nodes(map_network(make_network(), MACHINE, CORES), nodes=3, router_per=unit)
    want, wire = expected_link_classes(make_network(), mapping, got["spikes"])
    traffic = got["metrics"]["traffic"]
    assert {k: v["events"] for k, v in traffic["by_link_class"].items()} == want
    assert want["across_nodes"] > 0 and want["same_node"] > 0 and want["same_chip"] > 0 and want["same_core"] > 0
    assert traffic["inter_node"]["events"] == wire["inter_node"] > 0
    assert traffic["inter_chip"]["events"] == wire["inter_chip"]
    assert (wire["inter_chip"] > 0) == (unit == "chip")
    assert traffic["inter_node"]["bytes"] > 0
    _, routers = got["reports"]
    for cls, key in (("across_nodes", "inter_node"), ("same_node", "inter_chip")):
        assert sum(r["counters"]["forwarded_by_class"][cls]["events"] for r in routers) == \
            sum(r["counters"]["from_routers_by_class"][cls]["events"] for r in routers) == wire[key]


@pytest.mark.ray
@pytest.mark.multinode
def test_cluster_eventprop_step_equals_local(child):
    got = child["eventprop"]
    tr = yinyang_trainer("local")
    try:
        ref = eventprop_step(tr)
    finally:
        tr.close()
    assert len(set(got["nodes"])) == 3 and len(set(got["ray_nodes"])) == 3
    assert got["traffic"]["inter_node"]["events"] > 0 and got["traffic"]["error_events"] > 0
    assert np.array_equal(got["loss"], ref["loss"])
    for r in range(2):
        for name, w in ref["weights"][r].items():
            assert np.array_equal(got["weights"][r][name], w), (r, name)
    start = yinyang_trainer("local")
    try:
        w0 = start.weights(0)
    finally:
        start.close()
    assert not np.array_equal(w0["input->hidden"], ref["weights"][0]["input->hidden"])   # it did learn


@pytest.mark.ray
@pytest.mark.multinode
def test_cluster_eprop_steps_equal_local(child):
    got = child["eprop"]
    tr = recurrent_trainer("local")
    try:
        ref = eprop_steps(tr)
    finally:
        tr.close()
    assert got["nodes"] == [0, 0, 1, 1]                  # 4 chips of one core, 2 chips per node
    assert got["traffic"]["inter_node"]["events"] > 0 and got["traffic"]["inter_chip"]["events"] > 0
    for name, w in ref["weights"].items():
        np.testing.assert_array_equal(got["weights"][name], w, err_msg=name)


@pytest.mark.ray
@pytest.mark.multinode
def test_cluster_eprop_replicas_one_copy_per_node(child):
    """3 copies of the e-prop network, one per node: the same update as on the local backend, and
    as one copy running the mini-batch in lockstep (float64, <= 1e-12)."""
    from unit.rules.eprop.test_replicas import assert_same_update, lockstep

    got = child["eprop_replicas"]
    nodes = {}
    for cid, r in got["replica_of"].items():
        nodes.setdefault(r, set()).add(got["nodes"][cid])
    assert sorted(nodes) == [0, 1, 2] and all(len(n) == 1 for n in nodes.values())
    assert len(set.union(*nodes.values())) == 3                      # each copy on a node of its own
    ref = eprop_replicas_step("local")
    np.testing.assert_array_equal(got["loss"], ref["loss"])
    want, _ = lockstep(3, "reg-random")
    for dw, local in zip(got["updates"], ref["updates"]):
        for name in local:
            np.testing.assert_array_equal(dw[name], local[name], err_msg=name)
        assert_same_update(dw, want)


@pytest.mark.ray
@pytest.mark.multinode
def test_cluster_dead_router_is_named_before_the_next_run(child):
    kind, message = child["dead_router"]
    assert kind == "TransportError"
    # routers[1] is chip 1's, on node 0 (2 chips per node)
    assert "a router did not answer before the run" in message and "router 1 (node 0) is dead" in message


@pytest.mark.ray
@pytest.mark.multinode
def test_cluster_killed_core_is_a_prompt_clear_error(child):
    k = child["kill"]
    assert k["fired"], "the run ended before the core was killed"
    kind, message = k["error"]
    assert kind == "TransportError"
    victim = k["victim"]
    assert f"core {victim} (chip " in message and "died during the forward run" in message
    assert "round " in message and "(step " in message
    assert "timed out" not in message and "timeout of" not in message
    assert k["elapsed_s"] < k["timeout_s"]          # it was not the round timeout that ended the run
    kind, message = k["again"]
    assert kind == "TransportError" and "failed earlier and cannot run again" in message
    assert f"core {victim}" in message


@pytest.mark.ray
@pytest.mark.multinode
def test_cluster_removed_node_is_a_prompt_clear_error(child):
    r = child["remove"]
    assert r["fired"], "the run ended before the node was removed"
    kind, message = r["error"]
    assert kind == "TransportError"
    assert "node 2" in message and ("died during the forward run" in message
                                    or re.search(r"lost router \d+ \(node 2\)", message))
    assert r["elapsed_s"] < r["timeout_s"]
    assert r["again"][0] == "TransportError" and "cannot run again" in r["again"][1]
    assert r["victim"] not in child["alive_after"]


@pytest.mark.ray
@pytest.mark.multinode
def test_cluster_impossible_placement_fails_at_once_naming_asked_and_alive(child):
    imp = child["impossible"]
    kind, message, _ = imp["too_many"]
    assert kind == "MappingError"
    assert "spread over 4 nodes" in message and "the Ray cluster has 2 alive node(s)" in message
    assert all(n[:12] in message for n in child["alive_after"])
    kind, message, _ = imp["dead_node"]
    dead = child["remove"]["victim"]
    assert kind == "MappingError" and f"cluster.node_ids[1] = {dead!r} is not an alive node" in message


@pytest.mark.ray
@pytest.mark.multinode
def test_cluster_training_survives_a_removed_node(child, tmp_path):
    """A node removed mid-training: the run continues from its last checkpoint on
    the node left and ends exactly as an uninterrupted local run."""
    from spinnray.experiments.runner import run

    got = child["lost_node_training"]
    assert got["restarts"] == 1
    ref = run(training_cfg("local"), tmp_path, "t")
    assert got["weights_crc32"] == ref["weights_crc32"]
    assert got["history"] == [{k: v for k, v in h.items() if k != "train_s"} for h in ref["history"]]
    for key in ("spike_events_sent", "error_events_sent"):
        assert got["traffic"][key] == ref["traffic"][key] > 0
    assert got["mapping"]["ray_node_ids"] == [child["head"]]        # continued on the one node left


if __name__ == "__main__":
    _child_main(sys.argv[1])
