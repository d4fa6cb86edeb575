"""spinnray.mapping.place: partitioning, placement on chips and nodes, key allocation and the routing
tables, checked against destination sets computed independently from the synapses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinnray.config import ClusterConfig, MachineConfig
from spinnray.errors import BudgetError, MappingError
from spinnray.machine.router import RoutingTable
from spinnray.mapping import Learning, assign_nodes, check_router_routes, check_routes, map_network, router_tables
from spinnray.model.network import Network
from spinnray.model.neurons import ALIF, LI, LIF, SpikeSource
from spinnray.simulator import Simulator

from helpers import CLUSTER_CORES as CORES, CLUSTER_MACHINE as MACHINE, cluster_network as make_network

MODELS = [LIF(), LIF(tau_syn_ms=0.0, reset="subtract"), ALIF(refractory_steps=2), LI()]


def random_network(rng, max_size=24) -> Network:
    """Sources, LIF/ALIF/LI populations, projections incl. recurrent ones,
    masks with empty blocks, and scalar or per-synapse delays."""
    net = Network(dt_ms=1.0)
    for i in range(int(rng.integers(1, 3))):
        net.population(f"in{i}", int(rng.integers(1, max_size)), SpikeSource())
    for i in range(int(rng.integers(1, 4))):
        net.population(f"p{i}", int(rng.integers(1, max_size)), MODELS[int(rng.integers(len(MODELS)))])
    pops = list(net.populations.values())
    pres = [p for p in pops if not isinstance(p.model, LI)]
    posts = [p for p in pops if not isinstance(p.model, SpikeSource)]
    for _ in range(int(rng.integers(1, 6))):
        post = posts[int(rng.integers(len(posts)))]
        if post.model.spiking and rng.random() < 0.3:
            pre = post                                   # recurrent
        else:
            pre = pres[int(rng.integers(len(pres)))]
        shape = (pre.size, post.size)
        kind = int(rng.integers(4))
        if kind == 0:
            mask = None
        elif kind == 1:                                  # dense random
            mask = rng.random(shape) < 0.5
        elif kind == 2:                                  # very sparse
            mask = rng.random(shape) < 0.03
        else:                                            # empty row and column bands
            mask = rng.random(shape) < 0.6
            r0, r1 = sorted(rng.integers(0, pre.size + 1, 2))
            c0, c1 = sorted(rng.integers(0, post.size + 1, 2))
            mask[r0:r1, :] = False
            mask[:, c0:c1] = False
        w = rng.standard_normal(shape)
        delays = int(rng.integers(1, 4)) if rng.random() < 0.5 else rng.integers(1, 6, shape)
        net.connect(pre, post, w, delays, mask=mask)
    return net


def random_parallel(rng, net):
    """(machine, cores_per_population) with a cap small enough to cut populations."""
    cap = int(rng.integers(3, 12))
    machine = MachineConfig(neurons_per_core=cap, pes_per_chip=int(rng.integers(2, 10)))
    mode = int(rng.integers(3))
    if mode == 0:
        return machine, None
    need = max(math.ceil(p.size / cap) for p in net.populations.values())
    if mode == 1:
        return machine, need + int(rng.integers(0, 4))
    cores = {}
    for p in net.populations.values():
        if rng.random() < 0.6:
            cores[p.name] = math.ceil(p.size / cap) + int(rng.integers(0, 4))
    return machine, cores


def ref_lookup(table: RoutingTable, key: int):
    for e in table.entries:
        if (key & e.mask) == e.key:
            return e
    return None


def expected_destinations(mapping):
    """core id -> set of core ids its spikes must reach, from the synapses themselves."""
    net = mapping.network
    where = {}                                   # (replica, population, neuron) -> core id
    for pl in mapping.placements:
        for i in range(pl.slice.lo, pl.slice.hi):
            where[pl.replica, pl.slice.population, i] = pl.core_id
    want = {pl.core_id: set() for pl in mapping.placements}
    for r in range(mapping.replicas):
        for proj in net.projections:
            mask = np.ones((proj.pre.size, proj.post.size), bool) if proj.mask is None else proj.mask
            for i, j in zip(*np.nonzero(mask)):
                want[where[r, proj.pre.name, int(i)]].add(where[r, proj.post.name, int(j)])
    return want


def assert_partition(mapping, name, size, k):
    """``k`` contiguous slices covering [0, size), sizes within 1 of each other."""
    sl = [p.slice for p in mapping.cores_of(name)]
    assert len(sl) == k, (name, [(s.lo, s.hi) for s in sl])
    assert sl[0].lo == 0 and sl[-1].hi == size
    assert all(a.hi == b.lo for a, b in zip(sl, sl[1:]))
    sizes = [s.n for s in sl]
    assert sum(sizes) == size and min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def chain(sizes, models=None, delays=1):
    """in -> p0 -> p1 ... with dense weights."""
    net = Network()
    pops = [net.population("inp", sizes[0], SpikeSource())]
    for i, n in enumerate(sizes[1:]):
        pops.append(net.population(f"p{i}", n, (models or {}).get(i, LIF())))
        net.connect(pops[-2], pops[-1], np.full((pops[-2].size, n), 0.1), delays)
    return net


@pytest.mark.parametrize("size, cap", [(1, 1), (10, 4), (12, 4), (13, 4), (100, 7), (256, 256), (257, 256)])
def test_auto_partition_obeys_cap(size, cap):
    net = chain([5, size])
    m = map_network(net, MachineConfig(neurons_per_core=cap))
    assert_partition(m, "p0", size, math.ceil(size / cap))
    assert all(p.slice.n <= cap for p in m.placements)


def test_forced_cores_int_is_clamped_to_population_size():
    net = chain([2, 10, 3])
    m = map_network(net, cores_per_population=4)
    assert_partition(m, "inp", 2, 2)
    assert_partition(m, "p0", 10, 4)
    assert_partition(m, "p1", 3, 3)
    assert [p.slice.n for p in m.cores_of("p0")] == [2, 3, 2, 3]


def test_forced_cores_dict_leaves_others_automatic():
    net = chain([9, 10, 20])
    m = map_network(net, MachineConfig(neurons_per_core=8), cores_per_population={"p0": 5, "p1": 50})
    assert_partition(m, "inp", 9, 2)         # automatic: ceil(9 / 8)
    assert_partition(m, "p0", 10, 5)
    assert_partition(m, "p1", 20, 20)        # clamped
    assert m.n_cores == 27


@pytest.mark.parametrize("bad", [0, -1, 2.0, "2"])
def test_forced_cores_must_be_positive_int(bad):
    with pytest.raises(MappingError) as info:
        map_network(chain([3, 4]), cores_per_population={"p0": bad})
    assert "'p0'" in str(info.value) and repr(bad) in str(info.value)


def test_forced_cores_dict_with_unknown_population_is_refused():
    with pytest.raises(MappingError) as info:
        map_network(chain([3, 4]), cores_per_population={"p0": 2, "hiden": 2})
    assert "'hiden'" in str(info.value)


def test_forced_cores_over_cap_names_the_numbers():
    with pytest.raises(MappingError) as info:
        map_network(chain([3, 10]), MachineConfig(neurons_per_core=4), cores_per_population={"p0": 2})
    msg = str(info.value)
    assert "'p0'" in msg and "10 neurons on 2 cores" in msg and "5 neurons per core" in msg and "= 4" in msg


def test_empty_network_is_refused():
    with pytest.raises(MappingError):
        map_network(Network())


def test_auto_partition_splits_to_fit_the_budget():
    # 40 inputs -> 12 LIF: one neuron costs 40 * 4 (weights) + 12 (state); 40 bytes of history, one key row.
    net = chain([40, 12])
    per_neuron, fixed = 40 * 4 + 3 * 4, 40 + 32
    budget = 4 * per_neuron + fixed          # four neurons fit, five do not
    m = map_network(net, MachineConfig(sram_per_pe_bytes=budget))
    assert_partition(m, "p0", 12, 3)
    for pl, mem in zip(m.placements, m.memory):
        assert sum(mem.values()) <= budget
        if pl.slice.population == "p0":
            assert sum(mem.values()) == pl.slice.n * per_neuron + fixed


def test_budget_error_auto_even_one_neuron_does_not_fit():
    # One neuron of 'hidden': 100 * 4 weights + 3 * 4 state + 100 history + 1 source slice * 32 = 544.
    net = Network()
    inp = net.population("inp", 100, SpikeSource())
    hid = net.population("hidden", 4, LIF())
    net.connect(inp, hid, np.ones((100, 4)))
    with pytest.raises(BudgetError) as info:
        map_network(net, MachineConfig(sram_per_pe_bytes=300))
    msg = str(info.value)
    assert "'hidden'" in msg and "544 bytes" in msg and "300" in msg, msg
    assert isinstance(info.value, MappingError)


def test_budget_error_forced_cores():
    # Two neurons of 'hidden': 100 * 2 * 4 + 2 * 3 * 4 + 100 + 32 = 956 bytes.
    net = Network()
    inp = net.population("inp", 100, SpikeSource())
    hid = net.population("hidden", 4, LIF())
    net.connect(inp, hid, np.ones((100, 4)))
    map_network(net, MachineConfig(sram_per_pe_bytes=956), cores_per_population={"hidden": 2})
    with pytest.raises(BudgetError) as info:
        map_network(net, MachineConfig(sram_per_pe_bytes=955), cores_per_population={"hidden": 2})
    msg = str(info.value)
    assert "'hidden'" in msg and "956 bytes" in msg and "955" in msg, msg


def test_auto_partition_accounts_for_the_key_table():
    # in (1) -> h (4).  Per core of n neurons of h: 4n weights + 12n state + 1 history + 32 key table.
    # 1 core: 16 + 48 + 1 + 32 = 97 > 80; 2 cores: 8 + 24 + 1 + 32 = 65 <= 80.
    net = Network()
    inp = net.population("inp", 1, SpikeSource())
    h = net.population("h", 4, LIF())
    net.connect(inp, h, np.ones((1, 4)))
    machine = MachineConfig(sram_per_pe_bytes=80)
    forced = map_network(net, machine, cores_per_population={"h": 2})   # a 2-core mapping fits
    assert max(sum(m.values()) for m in forced.memory) == 65
    auto = map_network(net, machine)        # raises BudgetError: "h [0, 4) needs 97 bytes"
    assert len(auto.cores_of("h")) == 2


def test_too_many_cores_names_the_numbers():
    net = chain([3, 4])
    map_network(net, MachineConfig(chips=2, pes_per_chip=4), cores_per_population=4)   # 4 + 4 = 8 fit
    with pytest.raises(MappingError) as info:
        map_network(net, MachineConfig(chips=2, pes_per_chip=3), cores_per_population=4)
    msg = str(info.value)
    assert "7 cores" in msg and "2 chips x 3 PEs = 6" in msg, msg


def test_routing_table_capacity_names_the_chip():
    # x (2 slices, chip 0) -> z, y (2 slices, chip 1) -> z (chip 2): chip 2 holds all four entries.
    net = Network()
    x = net.population("x", 2, SpikeSource())
    y = net.population("y", 4, LIF())
    z = net.population("z", 1, LIF())
    net.connect(x, z, np.ones((2, 1)))
    net.connect(y, z, np.ones((4, 1)))
    cores = {"x": 2, "y": 2, "z": 1}
    ok = map_network(net, MachineConfig(pes_per_chip=2, routing_entries_per_chip=4), cores_per_population=cores)
    assert ok.chip_entries == {0: 2, 1: 2, 2: 4}
    assert len(ok.table) == 4
    with pytest.raises(MappingError) as info:
        map_network(net, MachineConfig(pes_per_chip=2, routing_entries_per_chip=3), cores_per_population=cores)
    msg = str(info.value)
    assert "chip 2 needs 4 routing entries" in msg and "= 3" in msg, msg


def test_placement_fills_a_chip_before_the_next():
    net = chain([5, 7, 3])
    m = map_network(net, MachineConfig(pes_per_chip=3, chips=3), cores_per_population={"inp": 2, "p0": 4, "p1": 2})
    got = [(p.core_id, p.chip, p.pe, p.slice.population, p.slice.lo) for p in m.placements]
    want = [(0, 0, 0, "inp", 0), (1, 0, 1, "inp", 2), (2, 0, 2, "p0", 0), (3, 1, 0, "p0", 1),
            (4, 1, 1, "p0", 3), (5, 1, 2, "p0", 5), (6, 2, 0, "p1", 0), (7, 2, 1, "p1", 1)]
    assert got == want
    assert m.summary()["chips_used"] == 3


def test_routes_of_random_networks_match_the_synapses():
    pruned = recurrent = per_synapse = multi_slice = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        net = random_network(rng)
        machine, cores = random_parallel(rng, net)
        replicas = 1 + seed % 2
        m = map_network(net, machine, cores, replicas=replicas)
        check_routes(m)
        per_replica = sum(len(m.cores_of(name)) for name in net.populations)
        assert m.n_cores == replicas * per_replica
        assert sorted({p.replica for p in m.placements}) == list(range(replicas))

        senders = {p.pre.name for p in net.projections}
        want = expected_destinations(m)
        kb = m.key_bits
        assert all(p.slice.n <= 2 ** kb for p in m.placements)
        for pl in m.placements:
            if pl.slice.population not in senders:
                assert pl.key_base is None
                assert ref_lookup(m.table, pl.core_id << kb) is None
                continue
            assert pl.key_base == pl.core_id << kb
            for i in range(pl.slice.n):
                e = ref_lookup(m.table, pl.key_base + i)
                got = set() if e is None else set(e.destinations)
                assert got == want[pl.core_id], (seed, pl, i)
        # Bookkeeping so the loop is known to cover what it claims.
        for proj in net.projections:
            recurrent += proj.pre is proj.post
            per_synapse += not np.isscalar(proj.delays)
            if proj.mask is not None:
                for a in m.cores_of(proj.pre.name):
                    for b in m.cores_of(proj.post.name):
                        pruned += not proj.mask[a.slice.lo:a.slice.hi, b.slice.lo:b.slice.hi].any()
        multi_slice += any(len(m.cores_of(n)) > 1 for n in net.populations)
    assert pruned > 10 and recurrent > 3 and per_synapse > 10 and multi_slice > 20


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
    # one router per chip by default, or one per node
    assert s["router_per"] == "chip" and s["routers"] == 4 and s["node_of_router"] == [0, 0, 1, 2]
    assert three.router_of() == {p.core_id: p.chip for p in three.placements}
    assert sum(s["routing_entries_per_router"].values()) == sum(s["routing_entries_per_node"].values())
    per_node = assign_nodes(m, nodes=3, router_per="node").summary()
    assert per_node["routers"] == 3 and per_node["node_of_router"] == [0, 1, 2]
    assert per_node["routing_entries_per_router"] == per_node["routing_entries_per_node"]
    with pytest.raises(MappingError, match=r"cluster.router_per = 'board': expected one of \['chip', 'node'\]"):
        assign_nodes(m, router_per="board")


@pytest.mark.parametrize("kwargs, message", [
    ({"nodes": 5}, r"cluster.nodes = 5: the mapping uses only 4 chip\(s\) \(8 cores, machine.pes_per_chip = 2\)"),
    ({"nodes": 2, "chips_per_node": 1}, r"cluster.nodes = 2 with cluster.chips_per_node = 1: .* fill 4 node\(s\)"),
    ({"nodes": 0}, r"cluster.nodes = 0: expected null or an int >= 1"),
])
def test_placement_that_cannot_be_made_names_the_numbers(kwargs, message):
    with pytest.raises(MappingError, match=message):
        Simulator(make_network(), MACHINE, cores_per_population=CORES, cluster=ClusterConfig(**kwargs))


@pytest.mark.parametrize("seed", range(12))
def test_router_tables_deliver_like_the_machine_table(seed):
    """Random networks, replicas and error keys: routing through the router
    tables (one router per chip, or per node) reaches exactly the cores the machine's table names."""
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
        for unit in ("node", "chip"):
            mm = assign_nodes(m, nodes=nodes, router_per=unit)
            check_router_routes(mm)
            tables = router_tables(mm)
            router = mm.router_of()
            assert sorted(tables) == list(range(nodes if unit == "node" else chips))
            # every core of a router is on one node: the router's
            assert all(mm.router_node()[router[p.core_id]] == p.node for p in mm.placements)
            for n, t in tables.items():  # a router's entries name only its own cores, and never link to itself
                assert all(router[d] == n for e in t.entries for d in e.destinations)
                assert all(n not in e.links for e in t.entries)
