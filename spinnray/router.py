"""The multicast router: a key/mask table and the routing of frames (no Ray).

A :class:`RoutingTable` holds SpiNNaker-style entries ``(key, mask) ->
destination cores``; a 32-bit event key matches an entry when ``key_e & mask
== entry.key``, and the first matching entry in table order wins (as in the
chip's TCAM).  :class:`Router` routes one exchange round: it decodes every
frame strictly, looks its keys up, and multicasts each event to the
destination cores, forwarding a frame's bytes untouched when all its events
go to the same place and re-encoding the subset otherwise.  It counts
everything, and never raises on a bad frame: it counts and records the
reason, and the backend reports it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from . import packet
from .errors import PacketError, RoutingError
from .metrics import RouterCounters

__all__ = ["RoutingEntry", "RoutingTable", "Router"]

_MAX_REASONS = 20   # keep the first few reasons verbatim; counts are exact


@dataclass(frozen=True)
class RoutingEntry:
    """``(key, mask) -> destinations`` (global core ids, ascending)."""

    key: int
    mask: int
    destinations: tuple[int, ...]

    def __post_init__(self):
        for name in ("key", "mask"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v < 2 ** 32:
                raise RoutingError(f"RoutingEntry.{name} = {v!r}: expected a 32-bit unsigned int")
        if self.key & ~self.mask & 0xFFFFFFFF:
            raise RoutingError(f"RoutingEntry key {self.key:#010x} has bits outside mask {self.mask:#010x}")
        if not self.destinations or list(self.destinations) != sorted(set(self.destinations)):
            raise RoutingError(f"RoutingEntry {self.key:#010x}: destinations {self.destinations!r}; "
                               "expected a non-empty ascending tuple of distinct core ids")


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
    a round lie within K steps; batch indices within the batch).
    """

    def __init__(self, table: RoutingTable, cores: list[int], *, max_offset: int, n_batch: int,
                 router_id: int = 0):
        self.table = table
        self.cores = list(cores)
        self.max_offset = max_offset
        self.n_batch = n_batch
        self.router_id = router_id
        self.counters = RouterCounters()
        self.reasons: list[str] = []

    def configure(self, *, max_offset: int, n_batch: int) -> None:
        self.max_offset, self.n_batch = max_offset, n_batch

    def _note(self, reason: str) -> None:
        if len(self.reasons) < _MAX_REASONS:
            self.reasons.append(reason)

    def route(self, inbox: dict[int, list[bytes]]) -> dict[int, list[bytes]]:
        """Route one round: ``{src core: [frames]} -> {dst core: [frames]}``.

        Sources are processed in ascending core id, so every destination sees
        its frames in the same order on every backend.
        """
        c = self.counters
        out: dict[int, list[bytes]] = {core: [] for core in self.cores}
        for src in sorted(inbox):
            for frame in inbox[src]:
                c.packets_in += 1
                c.bytes_in += len(frame) if isinstance(frame, (bytes, bytearray, memoryview)) else 0
                try:
                    p = packet.decode(frame, max_offset=self.max_offset, n_batch=self.n_batch)
                    if p.src != src:
                        raise PacketError(f"frame claims source core {p.src} but arrived from core {src}")
                except PacketError as e:
                    c.rejected += 1
                    self._note(f"router {self.router_id}: rejected frame from core {src}: {e.reason}")
                    continue
                if p.kind == packet.Kind.ERROR:
                    c.error_events_in += p.n
                else:
                    c.spike_events_in += p.n
                if p.n == 0:
                    continue
                entry = self.table.lookup_frame(p.keys)
                lost = entry < 0
                if lost.any():
                    c.dropped += int(lost.sum())
                    self._note(f"router {self.router_id}: dropped {int(lost.sum())} event(s) from core {src} "
                               f"with no route, first key {int(p.keys[lost][0]):#010x}")
                groups: dict[int, np.ndarray] = {}
                if not lost.any() and entry[0] == entry[-1] and (entry == entry[0]).all():
                    everything = np.ones(p.n, bool)           # the usual case: one entry for the frame
                    groups = {d: everything for d in self.table.entries[entry[0]].destinations}
                else:
                    for e in np.unique(entry[~lost]):
                        sel = entry == e
                        for d in self.table.entries[e].destinations:
                            groups[d] = sel if d not in groups else (groups[d] | sel)
                for dst, sel in sorted(groups.items()):
                    if dst not in out:
                        c.dropped += int(sel.sum())
                        self._note(f"router {self.router_id}: destination core {dst} of core {src} "
                                   "is not served by this router")
                        continue
                    if sel.all():
                        data = bytes(frame)
                        n = p.n
                    else:
                        data = packet.encode_packet(packet.subset(p, sel))
                        n = int(sel.sum())
                    out[dst].append(data)
                    c.packets_out += 1
                    c.bytes_out += len(data)
                    if p.kind == packet.Kind.ERROR:
                        c.error_events_out += n
                    else:
                        c.spike_events_out += n
                    c.add_link(src, dst, n, len(data))
        return out
