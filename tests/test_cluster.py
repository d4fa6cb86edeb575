"""The machine spread over cluster nodes: one router per node (issue 6).

Without Ray: chips go onto nodes as configured, the per-node routing tables
deliver exactly like the machine's table, routers on several nodes (in one
process, or as threads talking TCP) give the same frames as one router, the
link-class counters equal an independent count from the spikes, and a lost
or silent peer router is an error naming the router, round and phase.

With Ray (``multinode``): a 3-node ``ray.cluster_utils.Cluster`` on this
machine, started in a child process (the session-wide Ray of conftest.py
lives in this one, and a process holds one Ray), which runs this file as a
script and pickles what it saw; the tests compare that with the local
backend here.  Results and counters equal local ones, cores run on the nodes
configured, a killed core or a removed node is a prompt error naming the core,
round and phase, and an impossible placement fails at once.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spinnray.machine import packet
from spinnray.config import ClusterConfig, MachineConfig
from spinnray.errors import MappingError, RoutingError, TransportError
from spinnray.mapping import Learning, assign_nodes, check_node_routes, check_routes, map_network, node_tables
from spinnray.machine.counters import LINK_CLASSES
from spinnray.model.network import Network
from spinnray.model.neurons import LI, LIF, SpikeSource
from spinnray.machine.router import Router, RoutingEntry, RoutingTable
from spinnray.simulator import Simulator, poisson_spikes
from spinnray.backends.transport import CoreLink, RouterServer

import helpers

STEPS, BATCH, CORES = 80, 2, 2
MACHINE = MachineConfig(pes_per_chip=2, sram_per_pe_bytes=1 << 20)   # 8 cores -> 4 chips
HOST = "127.0.0.1"
SECRET = b"a test secret of 32 bytes, fixed"


def make_network(seed: int = 5) -> Network:
    """Sources -> recurrent LIF (masked, delays 1-3) -> LIF and LI readouts."""
    rng = np.random.default_rng(seed)
    net = Network(dt_ms=1.0)
    net.population("inp", 16, SpikeSource())
    net.population("hid", 21, LIF(tau_mem_ms=10.0, tau_syn_ms=4.0, v_th=0.5))
    net.population("out", 7, LIF(tau_mem_ms=12.0, tau_syn_ms=3.0, v_th=0.4))
    net.population("ro", 3, LI(tau_mem_ms=12.0, tau_syn_ms=3.0))
    net.connect("inp", "hid", rng.normal(0.4, 0.4, (16, 21)), delays=rng.integers(1, 4, (16, 21)))
    net.connect("hid", "hid", rng.normal(-0.05, 0.3, (21, 21)), delays=2, mask=rng.random((21, 21)) < 0.3)
    net.connect("hid", "out", rng.normal(0.3, 0.2, (21, 7)), delays=1, mask=rng.random((21, 7)) < 0.5)
    net.connect("out", "ro", rng.normal(0.3, 0.2, (7, 3)), delays=1)
    return net


def make_inputs(steps: int = STEPS, seed: int = 3) -> dict:
    return {"inp": poisson_spikes(80.0, steps, BATCH, 16, 1.0, np.random.default_rng(seed))}


def forward(backend: str, cluster: ClusterConfig | None, steps: int = STEPS):
    """(result, reports, metrics, mapping) of one run, K = 1."""
    with Simulator(make_network(), MACHINE, cores_per_population=CORES, batch_size=BATCH, backend=backend,
                   cluster=cluster) as sim:
        res = sim.run(steps, make_inputs(steps), record=("spikes", "v"))
        return res, sim.reports(), sim.metrics(), sim.mapping


def expected_link_classes(net: Network, mapping, spikes: dict) -> tuple[dict, int]:
    """Events per link class and router-to-router events, counted from the spikes.

    Independent of the routers: a spike of a neuron in source slice S is
    delivered once to every core holding a post-synaptic slice that some
    projection from S's population connects to (a masked block with no
    synapse is not routed); it crosses to each other node holding such a core
    once.
    """
    counts = {k: 0 for k in LINK_CLASSES}
    wire = 0
    for src in mapping.placements:
        pop = src.slice.population
        if pop not in spikes:
            continue
        dests = []
        for dst in mapping.placements:
            for proj in net.projections:
                if proj.pre.name == pop and proj.post.name == dst.slice.population and (
                        proj.mask is None or proj.mask[src.slice.lo:src.slice.hi, dst.slice.lo:dst.slice.hi].any()):
                    dests.append(dst)
                    break
        if not dests:
            continue
        n_spikes = int(spikes[pop][:, :, src.slice.lo:src.slice.hi].sum())
        for dst in dests:
            cls = ("same_core" if dst.core_id == src.core_id else "across_nodes" if dst.node != src.node
                   else "same_chip" if dst.chip == src.chip else "same_node")
            counts[cls] += n_spikes
        wire += n_spikes * len({d.node for d in dests} - {src.node})
    return counts, wire


# ------------------------------------------------------------------- placement


def test_chips_spread_over_nodes_as_configured():
    m = map_network(make_network(), MACHINE, CORES)
    chips = [p.chip for p in m.placements]
    assert chips == [i // 2 for i in range(8)]             # 8 cores, 2 per chip: 4 chips
    assert [p.node for p in assign_nodes(m).placements] == [0] * 8
    # nodes = 3 alone: 4 chips in contiguous blocks of 2, 1, 1
    three = assign_nodes(m, nodes=3)
    assert three.nodes == 3 and [p.node for p in three.placements] == [(c * 3) // 4 for c in chips]
    # chips_per_node = 3: chip c on node c // 3
    two = assign_nodes(m, chips_per_node=3)
    assert two.nodes == 2 and [p.node for p in two.placements] == [c // 3 for c in chips]
    assert assign_nodes(m, nodes=2, chips_per_node=3).node_of() == two.node_of()
    for mp in (three, two):      # a chip never spans nodes
        assert all(len({p.node for p in mp.placements if p.chip == c}) == 1 for c in set(chips))
    s = three.summary()
    assert s["nodes"] == 3 and s["cores_per_node"] == [4, 2, 2]
    assert s["node_of_chip"] == {"0": 0, "1": 0, "2": 1, "3": 2}
    assert sum(s["routing_entries_per_node"].values()) >= s["routing_entries"]


@pytest.mark.parametrize("kwargs, message", [
    ({"nodes": 5}, r"cluster.nodes = 5: the mapping uses only 4 chip\(s\) \(8 cores, machine.pes_per_chip = 2\)"),
    ({"nodes": 2, "chips_per_node": 1}, r"cluster.nodes = 2 with cluster.chips_per_node = 1: .* fill 4 node\(s\)"),
    ({"nodes": 0}, r"cluster.nodes = 0: expected null or an int >= 1"),
])
def test_placement_that_cannot_be_made_names_the_numbers(kwargs, message):
    with pytest.raises(MappingError, match=message):
        Simulator(make_network(), MACHINE, cores_per_population=CORES, cluster=ClusterConfig(**kwargs))


@pytest.mark.parametrize("seed", range(12))
def test_node_tables_deliver_like_the_machine_table(seed):
    """Random networks, replicas and error keys: routing through the node
    tables reaches exactly the cores the machine's table names."""
    rng = np.random.default_rng(seed)
    net = Network()
    sizes = rng.integers(3, 12, 4)
    for i, n in enumerate(sizes):
        net.population(f"p{i}", int(n), SpikeSource() if i == 0 else LIF())
    for _ in range(6):
        a, b = rng.integers(0, 4, 2)
        if b == 0 or f"p{a}->p{b}" in {p.name for p in net.projections}:
            continue
        net.connect(f"p{a}", f"p{b}", rng.normal(0, 1, (sizes[a], sizes[b])),
                    mask=rng.random((sizes[a], sizes[b])) < 0.3)
    machine = MachineConfig(pes_per_chip=int(rng.integers(1, 4)))
    m = map_network(net, machine, int(rng.integers(1, 4)), replicas=int(rng.integers(1, 3)),
                    learning=Learning(error_populations=frozenset({"p1"})))
    check_routes(m)
    chips = len({p.chip for p in m.placements})
    for nodes in range(1, min(chips, 4) + 1):
        mm = assign_nodes(m, nodes=nodes)
        check_node_routes(mm)
        tables = node_tables(mm)
        assert sorted(tables) == list(range(nodes))
        for n, t in tables.items():      # a node's entries name only its own cores, and never link to itself
            assert all(mm.node_of()[d] == n for e in t.entries for d in e.destinations)
            assert all(n not in e.links for e in t.entries)


def test_check_node_routes_catches_a_missing_link():
    m = assign_nodes(map_network(make_network(), MACHINE, CORES), nodes=3)
    tables = dict(node_tables(m))
    bad = [RoutingEntry(e.key, e.mask, e.destinations, ()) if e.links and e.destinations else e
           for e in tables[0].entries]
    tables[0] = RoutingTable([e for e in bad if e.destinations or e.links])
    with pytest.raises(RoutingError, match="reaches cores"):
        check_node_routes(m, tables)


# --------------------------------------------------------- routers, in-process


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


def test_router_with_links_refuses_single_router_routing():
    table = RoutingTable([RoutingEntry(0x10, 0xFFFFFFF0, (), (1,))])
    frame = packet.encode(packet.Kind.SPIKE, 0, 0, np.array([0x11], np.uint32), np.zeros(1, np.uint16))
    with pytest.raises(RoutingError, match="links to nodes"):
        Router(table, [0], max_offset=0, n_batch=1).route({0: [frame]})


def test_forwarded_frame_from_the_wrong_node_is_rejected():
    table = RoutingTable([RoutingEntry(0x10, 0xFFFFFFF0, (1,))])
    r = Router(table, [1], max_offset=0, n_batch=1, router_id=1, node=1, node_of={0: 0, 1: 1, 2: 2})
    frame = packet.encode(packet.Kind.SPIKE, 0, 0, np.array([0x11], np.uint32), np.zeros(1, np.uint16))
    assert r.deliver(r.route_forwarded({2: [frame]})) == {1: []}      # core 0 is on node 0, not 2
    assert r.counters.rejected == 1 and "forwarded by node 2" in r.reasons[0]
    assert r.deliver(r.route_forwarded({0: [frame]})) == {1: [frame]}


# ------------------------------------------------------- routers over TCP


def _tcp_machine(mapping, timeout_s):
    """One RouterServer per node (threads) and a CoreLink per core."""
    node_of = mapping.node_of()
    servers = []
    for n, table in sorted(mapping.node_tables().items()):
        r = Router(table, [c for c in node_of if node_of[c] == n], max_offset=0, n_batch=BATCH, router_id=n,
                   node=n, node_of=node_of)
        servers.append((r, RouterServer(r.route_local, r.cores, HOST, timeout_s, secret=SECRET, node=n,
                                        nodes=mapping.nodes,
                                        finish=lambda local, fwd, r=r: r.deliver(local, r.route_forwarded(fwd)))))
    for n, (_, s) in enumerate(servers):
        s.start({m: t.address for m, (_, t) in enumerate(servers) if m != n})
    links = {c: CoreLink(c, servers[node_of[c]][1].address, timeout_s, secret=SECRET, router_node=node_of[c])
             for c in sorted(node_of)}
    return servers, links


def _spike_frames(mapping, rnd, rng):
    """Random spike frames of every sending core for one round."""
    out = {}
    for p in mapping.placements:
        frames = []
        if p.key_base is not None:
            idx = np.flatnonzero(rng.random(p.slice.n) < 0.4)
            frames.append(packet.encode(packet.Kind.SPIKE, p.core_id, rnd, p.key_base + idx.astype(np.uint32),
                                        np.zeros(len(idx), np.uint16), batch=rng.integers(0, BATCH, len(idx))))
        out[p.core_id] = frames
    return out


def _close(servers, links):
    for link in links.values():
        link.close()
    for _, s in servers:
        s.close()


def test_routers_over_tcp_deliver_what_one_router_does():
    mapping = assign_nodes(map_network(make_network(), MACHINE, CORES), nodes=3)
    servers, links = _tcp_machine(mapping, 20.0)
    ref = Router(mapping.table, sorted(links), max_offset=0, n_batch=BATCH)
    rng = np.random.default_rng(0)
    try:
        for rnd in range(12):
            sent = _spike_frames(mapping, rnd, rng)
            got, errors = {}, []

            def core(c):
                try:
                    got[c] = links[c].exchange(sent[c], rnd)
                except Exception as e:          # noqa: BLE001 - reported below
                    errors.append(e)

            threads = [threading.Thread(target=core, args=(c,)) for c in links]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert not errors, errors
            assert got == ref.route(sent), f"round {rnd}"
        assert sum(r.counters.forwarded_packets for r, _ in servers) > 0
        assert all(s.error is None for _, s in servers)
    finally:
        _close(servers, links)


def test_big_envelopes_both_ways_at_once_do_not_deadlock():
    """Two routers forwarding more than a socket buffer to each other in the
    same round: both are sent and read at the same time, so neither waits."""
    big = {0: bytes(range(256)) * (8 << 12), 1: bytes(range(255, -1, -1)) * (8 << 12)}     # 8 MiB each
    servers = []
    for n in (0, 1):
        servers.append(RouterServer(lambda inbox, n=n: (None, {1 - n: [big[n]] + inbox[n]}), [n], HOST, 20.0,
                                    secret=SECRET, node=n, nodes=2, finish=lambda state, fwd, n=n: {n: fwd[1 - n]}))
    for n in (0, 1):
        servers[n].start({1 - n: servers[1 - n].address})
    links = {n: CoreLink(n, servers[n].address, 20.0, secret=SECRET, router_node=n) for n in (0, 1)}
    got = {}
    threads = [threading.Thread(target=lambda n=n: got.update({n: links[n].exchange([b"hello %d" % n], 0)}))
               for n in (0, 1)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert got == {0: [big[1], b"hello 1"], 1: [big[0], b"hello 0"]}
        assert all(s.error is None for s in servers)
    finally:
        for link in links.values():
            link.close()
        for s in servers:
            s.close()


def _two_nodes(timeout_s):
    mapping = assign_nodes(map_network(make_network(), MACHINE, CORES), nodes=2)
    servers, links = _tcp_machine(mapping, timeout_s)
    return mapping, servers, links


def _run_round(links, cores, rnd):
    errors = {}

    def core(c):
        try:
            links[c].exchange([], rnd)
        except TransportError as e:
            errors[c] = e

    threads = [threading.Thread(target=core, args=(c,)) for c in cores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


def test_lost_peer_router_stops_the_other_node_at_once():
    """A router that goes away: the other router fails naming it, the round
    and the phase, and its cores fail too, without waiting for the (long)
    timeout."""
    mapping, servers, links = _two_nodes(timeout_s=300.0)
    node0 = [c for c, n in mapping.node_of().items() if n == 0]
    try:
        assert _run_round(links, list(links), 0) == {}
        servers[1][1].close("killed in a test")
        errors = _run_round(links, node0, 1)
        assert sorted(errors) == node0
        assert all(f"core {c}, round 1 (step 1), phase " in str(e) for c, e in errors.items())
        servers[0][1].thread.join(30)
        err = servers[0][1].error
        assert err.startswith("router 0: ") and "round 1" in err and "router 1 (node 1)" in err
    finally:
        _close(servers, links)


def test_core_gone_between_runs_is_named_at_once_on_every_node():
    """A core whose process dies while the machine is idle: its router fails
    naming it straight away, and the other router hears of it while idle, so
    the next run fails at once instead of after the (long) timeout."""
    mapping, servers, links = _two_nodes(timeout_s=300.0)
    node_of = mapping.node_of()
    gone = max(c for c in node_of if node_of[c] == 1)
    try:
        assert _run_round(links, list(links), 0) == {}
        links[gone].close()
        servers[1][1].thread.join(30)
        servers[0][1].thread.join(30)
        assert f"router 1: core {gone}, idle before round 1, phase collect: connection closed" in servers[1][1].error
        assert "router 0: idle before round 1, phase peer-receive: lost router 1 (node 1)" in servers[0][1].error
        errors = _run_round(links, [c for c in links if c != gone], 1)
        assert sorted(errors) == sorted(c for c in links if c != gone)
    finally:
        _close(servers, links)


def test_silent_peer_router_times_out_naming_round_and_phase():
    """A router that hangs (alive, silent): the other router gives up after
    the timeout, naming the silent router, the round and the phase."""
    mapping, servers, links = _two_nodes(timeout_s=0.5)
    servers[0][1].begin_run(k=1, steps=10)
    try:
        assert _run_round(links, list(links), 0) == {}
        with servers[1][1].lock:           # router 1 stalls in its route phase
            errors = _run_round(links, list(links), 1)
        node0 = [c for c, n in mapping.node_of().items() if n == 0]
        assert set(node0) <= set(errors)
        servers[0][1].thread.join(30)
        err = servers[0][1].error
        assert "round 1 (step 1), phase peer-receive: router 1 (node 1) sent nothing within the timeout" in err
    finally:
        _close(servers, links)


# ----------------------------------------------------- a Ray cluster (child)

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

        # A: the forward network on 3 nodes in a non-default order; then a core is killed mid-run.
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


# The training clients (read-only use of the trainers).

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


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """What the 3-node cluster child process saw (one Cluster for all tests)."""
    path = tmp_path_factory.mktemp("cluster") / "out.pkl"
    env = dict(os.environ, RAY_DEDUP_LOGS="0", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1])] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, __file__, str(path)], capture_output=True, text=True, env=env,
                          timeout=CHILD_TIMEOUT_S)
    if proc.returncode != 0 or not path.exists():
        pytest.fail(f"cluster child failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    with open(path, "rb") as f:
        return pickle.load(f)


@pytest.mark.multinode
def test_cluster_forward_equals_local_on_one_and_three_nodes(child, one_node):
    got = child["forward"]
    ref = one_node[0]
    local3 = forward("local", ClusterConfig(nodes=3))
    for name in ref.spikes:
        assert np.array_equal(got["spikes"][name], ref.spikes[name]), name
    for name in ref.v:
        assert np.array_equal(got["v"][name], ref.v[name]), name
    cores, routers = got["reports"]
    l_cores, l_routers = local3[1]
    assert [c["counters"] for c in cores] == [c["counters"] for c in l_cores] == \
        [c["counters"] for c in one_node[1][0]]
    assert [r["counters"] for r in routers] == [r["counters"] for r in l_routers]
    assert got["metrics"]["traffic"] == local3[2]["traffic"]


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
    assert got["routers_on"] == list(asked)
    assert [r["ray_node_id"] for r in routers] == list(asked)
    assert got["metrics"]["mapping"]["ray_node_ids"] == list(asked)
    assert got["metrics"]["mapping"]["cores_per_node"] == [4, 2, 2]
    # default order: the driver's node (the head) first, then the others by node id
    assert child["driver_node"] == child["head"]
    assert child["default_order"] == [child["head"]] + sorted(child["workers"])
    assert child["default_nodes"] == child["default_order"]


@pytest.mark.multinode
def test_cluster_inter_node_traffic_counted(child):
    got = child["forward"]
    mapping = assign_nodes(map_network(make_network(), MACHINE, CORES), nodes=3)
    want, wire = expected_link_classes(make_network(), mapping, got["spikes"])
    traffic = got["metrics"]["traffic"]
    assert {k: v["events"] for k, v in traffic["by_link_class"].items()} == want
    assert want["across_nodes"] > 0 and want["same_node"] > 0 and want["same_chip"] > 0
    assert traffic["inter_node"]["events"] == wire > 0
    assert traffic["inter_node"]["bytes"] > 0


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


@pytest.mark.multinode
def test_cluster_eprop_steps_equal_local(child):
    got = child["eprop"]
    tr = recurrent_trainer("local")
    try:
        ref = eprop_steps(tr)
    finally:
        tr.close()
    assert got["nodes"] == [0, 0, 1, 1]                  # 4 chips of one core, 2 chips per node
    assert got["traffic"]["inter_node"]["events"] > 0
    for name, w in ref["weights"].items():
        np.testing.assert_array_equal(got["weights"][name], w, err_msg=name)


@pytest.mark.multinode
def test_cluster_dead_router_is_named_before_the_next_run(child):
    kind, message = child["dead_router"]
    assert kind == "TransportError"
    assert "a router did not answer before the run" in message and "router 1 (node 1) is dead" in message


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


@pytest.mark.multinode
def test_cluster_removed_node_is_a_prompt_clear_error(child):
    r = child["remove"]
    assert r["fired"], "the run ended before the node was removed"
    kind, message = r["error"]
    assert kind == "TransportError"
    assert "node 2" in message and ("died during the forward run" in message or "lost router 2" in message)
    assert r["elapsed_s"] < r["timeout_s"]
    assert r["again"][0] == "TransportError" and "cannot run again" in r["again"][1]
    assert r["victim"] not in child["alive_after"]


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


if __name__ == "__main__":
    _child_main(sys.argv[1])


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
