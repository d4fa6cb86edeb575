"""The routing invariant, checked: every key reaches exactly the cores that need it.

:func:`check_routes` is what the tests lean on for the machine's table (every key of every
sending slice reaches exactly the cores that hold a connected post-synaptic slice, no other key
matches an entry); :func:`check_router_routes` checks that routing through the per-router tables
(one router per chip or per node, :func:`spinnray.mapping.place.router_tables`) reaches exactly the
same cores.
"""

from __future__ import annotations

import numpy as np

from spinnray.errors import RoutingError
from spinnray.mapping.place import KEY_SPACE_BITS, Mapping, _connected, _entry_sources
from spinnray.machine.router import RoutingTable

__all__ = ["check_routes", "check_router_routes"]


def check_routes(mapping: Mapping) -> None:
    """Assert the routing invariant; raise :class:`RoutingError` naming the key.

    For every sending slice and every neuron in it, the table delivers the key
    to exactly the cores that hold a post-synaptic slice connected to it; keys
    of a non-sending slice match no entry; no key matches two entries.
    """
    net = mapping.network
    table = mapping.table
    for src in mapping.placements:
        n = src.slice.n
        if src.key_base is None:
            continue
        keys = src.key_base + np.arange(n, dtype=np.uint64)
        want = {dst.core_id
                for proj in net.outgoing(net[src.slice.population])
                for dst in mapping.placements
                if dst.replica == src.replica and dst.slice.population == proj.post.name
                and _connected(proj, src.slice, dst.slice)}
        for key in keys:
            hits = [e for e in table.entries if (int(key) & e.mask) == e.key]
            if len(hits) > 1:
                raise RoutingError(f"key {int(key):#010x} of core {src.core_id} matches {len(hits)} entries")
            got = set(hits[0].destinations) if hits else set()
            if got != want:
                raise RoutingError(f"key {int(key):#010x} of core {src.core_id} ({src.slice.population}"
                                   f"[{src.slice.lo + int(key) - src.key_base}]) reaches cores {sorted(got)}; "
                                   f"expected {sorted(want)}")
    # Error keys about a slice's neurons reach exactly the core that owns it.
    for p in mapping.placements:
        if p.error_key_base is not None:
            keys = p.error_key_base + np.arange(p.slice.n, dtype=np.int64)
            hit = table.lookup(keys.astype(np.uint32))
            if (hit < 0).any() or any(table.entries[h].destinations != (p.core_id,) for h in set(hit.tolist())):
                raise RoutingError(f"error keys of core {p.core_id} do not all reach exactly core {p.core_id}")
    # A block that belongs to a slice that sends nothing is routed nowhere.
    for p in mapping.placements:
        if p.key_base is None:
            key = p.core_id << mapping.key_bits
            if key < 2 ** KEY_SPACE_BITS and table.lookup(np.array([key], np.uint32))[0] >= 0:
                raise RoutingError(f"key {key:#010x} of non-sending core {p.core_id} is routed")
    # Batch lookup agrees with the scalar walk above.
    for e in table.entries:
        idx = table.lookup(np.array([e.key], np.uint32))[0]
        if idx < 0 or table.entries[idx] is not e:
            raise RoutingError(f"lookup of entry key {e.key:#010x} does not return its own entry")


def check_router_routes(mapping: Mapping, tables: dict[int, RoutingTable] | None = None) -> None:
    """Assert that the per-router tables deliver like the machine's table.

    For every entry of the machine's table and every router that may send its
    keys, routing the entry's key through the sender's table (its own
    destinations, then one hop along each link into that router's table)
    reaches exactly the entry's destinations, each once, every reached core
    served by the router whose table delivered it.  Raises
    :class:`RoutingError` naming the key.
    """
    tables = mapping.router_tables() if tables is None else tables
    router = mapping.router_of()
    for i, e in enumerate(mapping.table.entries):
        key = np.array([e.key], np.uint32)
        if mapping.table.lookup(key)[0] != i:
            continue                    # shadowed by an earlier entry: never routes its own key
        sources = _entry_sources(mapping, e)
        senders = {router[s] for s in sources} if sources is not None else set(tables)
        for n in sorted(senders):
            hit = tables[n].lookup(key)[0]
            if hit < 0:
                raise RoutingError(f"key {e.key:#010x}: no entry on router {n}, which sends it")
            first = tables[n].entries[hit]
            reached = list(first.destinations)
            for link in first.links:
                h = tables[link].lookup(key)[0]
                if h < 0:
                    raise RoutingError(f"key {e.key:#010x}: router {n} links to router {link}, which has no entry")
                reached += list(tables[link].entries[h].destinations)
                if any(router[d] != link for d in tables[link].entries[h].destinations):
                    raise RoutingError(f"key {e.key:#010x}: router {link}'s entry names cores of other routers")
            if any(router[d] != n for d in first.destinations):
                raise RoutingError(f"key {e.key:#010x}: router {n}'s entry names cores of other routers")
            if sorted(reached) != list(e.destinations):
                raise RoutingError(f"key {e.key:#010x} sent from router {n} reaches cores {sorted(reached)}; "
                                   f"expected {list(e.destinations)}")
