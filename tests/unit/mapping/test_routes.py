"""spinnray.mapping.routes: check_routes and check_router_routes catch every kind of wrong table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spinnray.errors import RoutingError
from spinnray.machine.router import RoutingEntry, RoutingTable
from spinnray.mapping import assign_nodes, check_router_routes, check_routes, map_network, router_tables
from spinnray.model.network import Network
from spinnray.model.neurons import LI, LIF, SpikeSource

from helpers import CLUSTER_CORES as CORES, CLUSTER_MACHINE as MACHINE, cluster_network as make_network


@pytest.fixture
def small_mapping():
    """inp (6, 2 cores: 0, 1) -> h (6, 3 cores: 2, 3, 4), h -> out (2, core 5); out sends nothing."""
    net = Network()
    inp = net.population("inp", 6, SpikeSource())
    h = net.population("h", 6, LIF())
    out = net.population("out", 2, LI())
    net.connect(inp, h, np.ones((6, 6)))
    net.connect(h, out, np.ones((6, 2)))
    m = map_network(net, cores_per_population={"inp": 2, "h": 3, "out": 1})
    check_routes(m)
    assert [(e.key >> m.key_bits, e.destinations) for e in m.table.entries] == \
        [(0, (2, 3, 4)), (1, (2, 3, 4)), (2, (5,)), (3, (5,)), (4, (5,))]
    return m


def _with(m, entries):
    return dataclasses.replace(m, table=RoutingTable(entries))


def test_check_routes_catches_a_missing_destination(small_mapping):
    m = small_mapping
    e = m.table.entries
    with pytest.raises(RoutingError) as info:
        check_routes(_with(m, [RoutingEntry(e[0].key, e[0].mask, (2, 4))] + e[1:]))
    assert "core 0" in str(info.value) and "[2, 4]" in str(info.value) and "[2, 3, 4]" in str(info.value)


def test_check_routes_catches_an_extra_destination(small_mapping):
    m = small_mapping
    e = m.table.entries
    with pytest.raises(RoutingError) as info:
        check_routes(_with(m, e[:3] + [RoutingEntry(e[3].key, e[3].mask, (1, 5))] + e[4:]))
    assert "core 3" in str(info.value) and "[1, 5]" in str(info.value)


def test_check_routes_catches_a_missing_entry(small_mapping):
    m = small_mapping
    with pytest.raises(RoutingError) as info:
        check_routes(_with(m, m.table.entries[:-1]))
    assert "core 4" in str(info.value) and "reaches cores []" in str(info.value)


def test_check_routes_catches_a_routed_non_sender(small_mapping):
    m = small_mapping
    key = 5 << m.key_bits
    with pytest.raises(RoutingError) as info:
        check_routes(_with(m, m.table.entries + [RoutingEntry(key, m.table.entries[0].mask, (0,))]))
    assert "non-sending core 5" in str(info.value)


def test_check_routes_catches_a_key_matching_two_entries(small_mapping):
    m = small_mapping
    e = m.table.entries
    broad = RoutingEntry(0, (e[0].mask << 1) & 0xFFFFFFFF, (2, 3, 4))   # covers cores 0 and 1
    with pytest.raises(RoutingError) as info:
        check_routes(_with(m, [broad] + e))
    assert "matches 2 entries" in str(info.value)


@pytest.mark.parametrize("unit", ["node", "chip"])
def test_check_router_routes_catches_a_missing_link(unit):
    m = assign_nodes(map_network(make_network(), MACHINE, CORES), nodes=3, router_per=unit)
    tables = dict(router_tables(m))
    r = next(r for r, t in tables.items() if any(e.links and e.destinations for e in t.entries))
    bad = [RoutingEntry(e.key, e.mask, e.destinations, ()) if e.links and e.destinations else e
           for e in tables[r].entries]
    tables[r] = RoutingTable([e for e in bad if e.destinations or e.links])
    with pytest.raises(RoutingError, match="reaches cores"):
        check_router_routes(m, tables)
