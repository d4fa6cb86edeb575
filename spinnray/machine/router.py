"""The multicast router: a key/mask table and the routing of frames (no Ray).

A :class:`RoutingTable` holds SpiNNaker-style entries ``(key, mask) ->
destination cores (+ links)``; a 32-bit event key matches an entry when
``key_e & mask == entry.key``, and the first matching entry in table order
wins (as in the chip's TCAM).  :class:`Router` routes one exchange round: it
decodes every frame strictly, looks its keys up, and multicasts each event to
the destination cores, forwarding a frame's bytes untouched when all its
events go to the same place and re-encoding the subset otherwise.  It counts
everything, and never raises on a bad frame: it counts and records the
reason, and the backend reports it.

Several routers.  As on SpiNNaker2, every chip has its own router by
default (``cluster.router_per = "chip"``); a router may also serve a whole
cluster node (``"node"``).  Each router has its own table
(:func:`spinnray.mapping.place.router_tables`): an entry's ``destinations``
are the cores *this router serves*; its ``links`` are the other routers that
serve destinations (SpiNNaker's link bits of a route), on this node (another
chip: inter-chip traffic) or on another node (inter-node traffic).  A round
then has two phases:

1. :meth:`Router.route_local`: the frames of this router's cores are looked
   up; events for its own cores are kept, and every router in ``links`` gets
   one copy of the events bound for it (one frame per source frame and
   router, not per destination core).
2. :meth:`Router.route_forwarded`: the frames other routers forwarded here
   are looked up in this router's table and delivered to its cores only (one
   hop: the routers form a full mesh, so ``links`` of a forwarded frame are
   ignored).  The mesh is the emulator's choice: SpiNNaker2 chips relay
   multicast packets through their neighbours on a 2-D grid, copying them
   where a route branches; here each destination router gets its copy
   directly, so ``forwarded_*`` counts one copy per source frame and
   destination router, not per grid link.

:meth:`Router.deliver` merges both into each core's frames in ascending
source core (stable), which is exactly the order one router for the whole
machine gives, so results and per-core counters do not depend on the number
of routers or nodes.  The copies a router forwards are counted by the class
of the peer (:data:`~spinnray.machine.counters.ROUTER_LINK_CLASSES`: a router
of another chip on the same node, or one on another node).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from spinnray.machine import packet
from spinnray.errors import PacketError, RoutingError
from spinnray.machine.counters import RouterCounters

__all__ = ["RoutingEntry", "RoutingTable", "Router"]

_MAX_REASONS = 20   # keep the first few reasons verbatim; counts are exact


_FRAME_CACHE_SIZE = 1 << 16   # masked keys remembered by RoutingTable.frame_entry


@dataclass(frozen=True)
class RoutingEntry:
    """``(key, mask) -> destinations`` (global core ids, ascending) and
    ``links`` (router indices, ascending: those other routers get a copy).

    At least one of ``destinations`` and ``links`` is non-empty.
    """

    key: int
    mask: int
    destinations: tuple[int, ...]
    links: tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("key", "mask"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v < 2 ** 32:
                raise RoutingError(f"RoutingEntry.{name} = {v!r}: expected a 32-bit unsigned int")
        if self.key & ~self.mask & 0xFFFFFFFF:
            raise RoutingError(f"RoutingEntry key {self.key:#010x} has bits outside mask {self.mask:#010x}")
        if (not self.destinations and not self.links) or list(self.destinations) != sorted(set(self.destinations)):
            raise RoutingError(f"RoutingEntry {self.key:#010x}: destinations {self.destinations!r}; "
                               "expected a non-empty ascending tuple of distinct core ids")
        if list(self.links) != sorted(set(self.links)) or any(
                not isinstance(n, int) or n < 0 for n in self.links):
            raise RoutingError(f"RoutingEntry {self.key:#010x}: links {self.links!r}; "
                               "expected an ascending tuple of distinct router indices >= 0")


class RoutingTable:
    """Ordered entries with a vectorized lookup."""

    def __init__(self, entries: list[RoutingEntry]):
        seen = set()
        for e in entries:
            if (e.key, e.mask) in seen:
                raise RoutingError(f"duplicate routing entry key {e.key:#010x} mask {e.mask:#010x}")
            seen.add((e.key, e.mask))
        self.entries = list(entries)
        # Group by mask: within a group, keys are distinct, so a sorted array
        # and searchsorted find the (only) match in O(log n).
        groups: dict[int, list[int]] = defaultdict(list)
        for i, e in enumerate(self.entries):
            groups[e.mask].append(i)
        self._groups = []
        self._frame_cache: dict[int, int] = {}      # masked key -> entry (or -1), for frame_entry
        for mask, idx in groups.items():
            idx = np.array(idx, np.int64)
            keys = np.array([self.entries[i].key for i in idx], np.uint32)
            order = np.argsort(keys)
            self._groups.append((np.uint32(mask), keys[order], idx[order]))

    def __len__(self) -> int:
        return len(self.entries)

    def lookup_frame(self, keys: np.ndarray) -> np.ndarray:
        """:meth:`lookup`, with a shortcut for the common frame whose keys all
        fall in one block of a single-mask table (one lookup instead of n)."""
        if len(self._groups) == 1 and len(keys):
            mask = self._groups[0][0]
            masked = keys & mask
            if masked.min() == masked.max():
                return np.full(len(keys), self.lookup(keys[:1])[0], np.int64)
        return self.lookup(keys)

    def frame_entry(self, keys: np.ndarray) -> int | None:
        """The index of the one entry that routes every key of a frame, or None when the keys
        need :meth:`lookup` (several masks in the table, keys in several blocks, or no match).
        The usual frame (the spikes of one core's slice) takes this path: one comparison and a
        cached dictionary lookup per frame."""
        if len(self._groups) != 1 or not len(keys):
            return None
        masked = keys & self._groups[0][0]
        first = masked[0]
        if len(keys) > 1 and not (masked == first).all():
            return None
        first = int(first)
        hit = self._frame_cache.get(first)
        if hit is None:
            hit = int(self.lookup(keys[:1])[0])
            if len(self._frame_cache) < _FRAME_CACHE_SIZE:
                self._frame_cache[first] = hit
        return hit if hit >= 0 else None

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Index of the first matching entry for each key, or -1 (int64 (n,))."""
        keys = np.asarray(keys, np.uint32)
        best = np.full(len(keys), len(self.entries), np.int64)
        for mask, sorted_keys, idx in self._groups:
            m = keys & mask
            pos = np.minimum(np.searchsorted(sorted_keys, m), len(sorted_keys) - 1)
            hit = sorted_keys[pos] == m
            best = np.where(hit, np.minimum(best, idx[pos]), best)
        best[best == len(self.entries)] = -1
        return best


class Router:
    """Routes the frames of one exchange round; counts every packet and event.

    ``max_offset``/``n_batch`` bound the fields of incoming frames (events of
    a round lie within K steps; batch indices within the batch).  ``cores``
    are the cores this router serves (its chip's or its node's);
    ``router_id`` is its router index and ``node`` its node index;
    ``router_of`` maps every core of the machine to its router (None: one
    router), used to check that a forwarded frame's source is served by the
    router that forwarded it; ``router_node`` maps every router index to its
    node (None: every router on a node of its own), which classes the peers.

    Counters: ``packets_in``/``bytes_in``/``*_events_in`` count frames from
    this router's cores; ``packets_out``/``bytes_out``/``*_events_out`` and
    ``links`` count what this router delivers to its cores (so summed over
    the routers every delivery is counted once, whatever the number of
    routers); ``forwarded_*`` and ``peers`` count the copies sent to other
    routers, ``forwarded_by_class`` splits them into inter-chip (same node)
    and inter-node copies, ``from_routers_*`` and ``from_routers_by_class``
    what arrived from other routers.
    """

    def __init__(self, table: RoutingTable, cores: list[int], *, max_offset: int, n_batch: int,
                 router_id: int = 0, node: int = 0, router_of: dict[int, int] | None = None,
                 router_node: list[int] | None = None):
        self.table = table
        self.cores = list(cores)
        self._served = set(self.cores)
        self.max_offset = max_offset
        self.n_batch = n_batch
        self.router_id = router_id
        self.node = node
        self.router_of = router_of
        self.router_node = router_node
        self.counters = RouterCounters()
        self.reasons: list[str] = []

    def configure(self, *, max_offset: int, n_batch: int) -> None:
        self.max_offset, self.n_batch = max_offset, n_batch

    def _note(self, reason: str) -> None:
        if len(self.reasons) < _MAX_REASONS:
            self.reasons.append(reason)

    def _decode(self, frame, src: int | None, origin: str):
        """Strictly decoded packet, or None (counted as rejected, reason noted)."""
        try:
            p = packet.decode(frame, max_offset=self.max_offset, n_batch=self.n_batch)
            if src is not None and p.src != src:
                raise PacketError(f"frame claims source core {p.src} but arrived from core {src}")
        except PacketError as e:
            self.counters.rejected += 1
            self._note(f"router {self.router_id}: rejected frame from {origin}: {e.reason}")
            return None
        return p

    def _groups(self, p, entry: np.ndarray, lost: np.ndarray, *, links: bool):
        """``({dst core: event mask}, {router: event mask})`` of one frame."""
        entries = self.table.entries
        dests: dict[int, np.ndarray] = {}
        peers: dict[int, np.ndarray] = {}
        if not lost.any() and entry[0] == entry[-1] and (entry == entry[0]).all():
            everything = np.ones(p.n, bool)           # the usual case: one entry for the frame
            e = entries[entry[0]]
            dests = {d: everything for d in e.destinations}
            if links:
                peers = {n: everything for n in e.links}
            return dests, peers
        for i in np.unique(entry[~lost]):
            sel = entry == i
            e = entries[i]
            for d in e.destinations:
                dests[d] = sel if d not in dests else (dests[d] | sel)
            if links:
                for n in e.links:
                    peers[n] = sel if n not in peers else (peers[n] | sel)
        return dests, peers

    def peer_class(self, router: int) -> str:
        """The class of the link from this router to ``router``
        (:data:`~spinnray.machine.counters.ROUTER_LINK_CLASSES`)."""
        if self.router_node is None:
            return "across_nodes"
        return "same_node" if self.router_node[router] == self.node else "across_nodes"

    def route_local(self, inbox: dict[int, list[bytes]]):
        """Phase 1: ``{src core: [frames]}`` from this router's cores ->
        ``(local, remote)``: ``local`` is ``{dst core: [(src, frame, events,
        is_error)]}`` for :meth:`deliver`, ``remote`` is ``{router: [frames]}``
        to forward to other routers (only routers with frames appear).

        Sources are processed in ascending core id.
        """
        c = self.counters
        local: dict[int, list] = {}
        remote: dict[int, list[bytes]] = {}
        for src in sorted(inbox):
            for frame in inbox[src]:
                c.packets_in += 1
                c.bytes_in += packet.frame_nbytes(frame)
                p = self._decode(frame, src, f"core {src}")
                if p is None:
                    continue
                is_error = p.kind == packet.Kind.ERROR
                if is_error:
                    c.error_events_in += p.n
                else:
                    c.spike_events_in += p.n
                if p.n == 0:
                    continue
                one = self.table.frame_entry(p.keys)
                if one is not None:             # the usual frame: every event to one entry's targets
                    e = self.table.entries[one]
                    dests, peers = dict.fromkeys(e.destinations), dict.fromkeys(e.links)   # None: all events
                else:
                    entry = self.table.lookup_frame(p.keys)
                    lost = entry < 0
                    if lost.any():
                        c.dropped += int(lost.sum())
                        self._note(f"router {self.router_id}: dropped {int(lost.sum())} event(s) from core {src} "
                                   f"with no route, first key {int(p.keys[lost][0]):#010x}")
                    dests, peers = self._groups(p, entry, lost, links=True)
                self._keep(local, src, frame, p, dests, is_error)
                for router, sel in sorted(peers.items()):
                    if router == self.router_id:
                        c.dropped += p.n if sel is None else int(sel.sum())
                        self._note(f"router {self.router_id}: entry of core {src} links to this router")
                        continue
                    data, n = (bytes(frame), p.n) if sel is None or sel.all() else \
                        (packet.encode_packet(packet.subset(p, sel)), int(sel.sum()))
                    remote.setdefault(router, []).append(data)
                    c.add_forwarded(router, self.peer_class(router), n, len(data))
        return local, remote

    def route_forwarded(self, forwarded: dict[int, list[bytes]]) -> dict[int, list]:
        """Phase 2: ``{router: [frames]}`` forwarded by other routers ->
        ``{dst core: [(src, frame, events, is_error)]}`` for this router's cores
        (``links`` are not followed again)."""
        c = self.counters
        local: dict[int, list] = {}
        for router in sorted(forwarded):
            cls = self.peer_class(router)
            for frame in forwarded[router]:
                nbytes = packet.frame_nbytes(frame)
                c.add_from_router(cls, 1, 0, nbytes)
                p = self._decode(frame, None, f"router {router}")
                if p is None:
                    continue
                if self.router_of is not None and self.router_of.get(p.src) != router:
                    c.rejected += 1
                    self._note(f"router {self.router_id}: rejected frame of core {p.src} forwarded by router "
                               f"{router}; core {p.src} is served by router {self.router_of.get(p.src)}")
                    continue
                c.add_from_router(cls, 0, p.n, 0)
                if p.n == 0:
                    continue
                entry = self.table.lookup_frame(p.keys)
                lost = entry < 0
                dests, _ = self._groups(p, entry, lost, links=False)
                reached = np.zeros(p.n, bool)
                for sel in dests.values():
                    reached |= sel
                if not reached.all():
                    c.dropped += int((~reached).sum())
                    self._note(f"router {self.router_id}: dropped {int((~reached).sum())} event(s) of core {p.src} "
                               f"forwarded by router {router} with no local destination, first key "
                               f"{int(p.keys[~reached][0]):#010x}")
                self._keep(local, p.src, frame, p, dests, p.kind == packet.Kind.ERROR)
        return local

    def _keep(self, local: dict, src: int, frame, p, dests: dict, is_error: bool) -> None:
        """Queue ``frame`` (or the part of it a mask selects; a mask of None is every event) for
        each destination core in ``dests``."""
        full: dict[int, bool] = {}                  # id(mask) -> mask.all(): dests often share one mask
        for dst, sel in sorted(dests.items()):
            if dst not in self._served:
                self.counters.dropped += p.n if sel is None else int(sel.sum())
                self._note(f"router {self.router_id}: destination core {dst} of core {src} "
                           "is not served by this router")
                continue
            if sel is not None and id(sel) not in full:
                full[id(sel)] = bool(sel.all())
            if sel is None or full[id(sel)]:
                local.setdefault(dst, []).append((src, bytes(frame), p.n, is_error))
            else:
                local.setdefault(dst, []).append(
                    (src, packet.encode_packet(packet.subset(p, sel)), int(sel.sum()), is_error))

    def deliver(self, *parts: dict[int, list]) -> dict[int, list[bytes]]:
        """Merge :meth:`route_local`/:meth:`route_forwarded` results into
        ``{dst core: [frames]}`` (every served core present), frames in
        ascending source core, stably; counts what is delivered."""
        c = self.counters
        out: dict[int, list[bytes]] = {core: [] for core in self.cores}
        several = sum(1 for part in parts if part) > 1
        for dst in out:
            items = [it for part in parts for it in part.get(dst, ())]
            if several:
                items.sort(key=lambda it: it[0])      # stable: a source's frames keep their order
            frames = out[dst]
            links = c.links
            nbytes = spikes = errors = 0
            for src, data, n, is_error in items:
                frames.append(data)
                size = len(data)
                nbytes += size
                if is_error:
                    errors += n
                else:
                    spikes += n
                cell = links.get((src, dst))
                if cell is None:
                    links[(src, dst)] = [n, size]
                else:
                    cell[0] += n
                    cell[1] += size
            c.packets_out += len(items)
            c.bytes_out += nbytes
            c.spike_events_out += spikes
            c.error_events_out += errors
        return out

    def route(self, inbox: dict[int, list[bytes]]) -> dict[int, list[bytes]]:
        """Route one round of a router that serves the whole machine:
        ``{src core: [frames]} -> {dst core: [frames]}``.

        Sources are processed in ascending core id, so every destination sees
        its frames in the same order on every backend.  Raises
        :class:`RoutingError` if the table links to other routers (one of
        several routers runs :meth:`route_local`, :meth:`route_forwarded` and
        :meth:`deliver` instead).
        """
        local, remote = self.route_local(inbox)
        if remote:
            raise RoutingError(f"router {self.router_id}: the table links to routers {sorted(remote)}; "
                               "a router with peers routes with route_local/route_forwarded/deliver")
        return self.deliver(local)
