"""Counters of every packet, and the summary a run writes to ``metrics.json``.

Counters live on the cores and routers that do the work; the summary is
built from them, never re-derived.  ``SCHEMA_VERSION`` changes whenever a
key of ``metrics.json`` changes meaning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

__all__ = ["CoreCounters", "RouterCounters", "SCHEMA_VERSION", "traffic_summary", "memory_summary"]

SCHEMA_VERSION = 1


@dataclass
class CoreCounters:
    """What one core sent and received (events are counted per destination)."""

    packets_sent: int = 0
    spike_events_sent: int = 0
    error_events_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    spike_events_received: int = 0
    error_events_received: int = 0
    bytes_received: int = 0
    rejected: int = 0            # frames that failed strict decode at this core
    dropped: int = 0             # events whose key this core cannot resolve
    max_events_per_step: int = 0  # most events this core emitted in one step
    steps: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def add(self, other: "CoreCounters") -> None:
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, max(a, b) if f.name == "max_events_per_step" else a + b)


@dataclass
class RouterCounters:
    """What one router took in and multicast out; ``links`` is the traffic
    matrix ``(src core, dst core) -> [events, bytes]``."""

    packets_in: int = 0
    bytes_in: int = 0
    spike_events_in: int = 0
    error_events_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    spike_events_out: int = 0
    error_events_out: int = 0
    dropped: int = 0             # events with no matching entry
    rejected: int = 0            # frames that failed strict decode
    links: dict = field(default_factory=dict)

    def add_link(self, src: int, dst: int, events: int, nbytes: int) -> None:
        cell = self.links.setdefault((src, dst), [0, 0])
        cell[0] += events
        cell[1] += nbytes

    def as_dict(self) -> dict:
        d = asdict(self)
        d["links"] = {f"{s}->{t}": list(v) for (s, t), v in sorted(self.links.items())}
        return d


def traffic_summary(routers: list[dict], cores: list[dict], dense_equivalent_events: int) -> dict:
    """The ``traffic`` block of ``metrics.json`` from router and core counters.

    Events are counted as delivered (once per destination core), bytes as
    they leave the routers; ``dense_equivalent_events`` is what a dense
    exchange would have sent (steps x sending neurons x samples).
    """
    def total(key, rows):
        return sum(r[key] for r in rows)

    return {
        "spike_events": total("spike_events_out", routers),
        "error_events": total("error_events_out", routers),
        "spike_events_sent": total("spike_events_sent", cores),
        "error_events_sent": total("error_events_sent", cores),
        "packets": total("packets_out", routers),
        "bytes": total("bytes_out", routers),
        "dense_equivalent_events": dense_equivalent_events,
        "sparsity": (total("spike_events_sent", cores) / dense_equivalent_events
                     if dense_equivalent_events else 0.0),
        "dropped": total("dropped", routers) + total("dropped", cores),
        "rejected": total("rejected", routers) + total("rejected", cores),
        "max_events_per_step": max((r["max_events_per_step"] for r in cores), default=0),
    }


def memory_summary(per_core: list[dict[str, int]], budget: int) -> dict:
    """The ``memory`` block of ``metrics.json``: bytes per core by category."""
    totals = [sum(m.values()) for m in per_core]
    by_category: dict[str, int] = {}
    for m in per_core:
        for k, v in m.items():
            by_category[k] = by_category.get(k, 0) + v
    return {
        "per_core_max_bytes": max(totals, default=0),
        "total_bytes": sum(totals),
        "budget_bytes_per_core": budget,
        "max_utilisation": max(totals, default=0) / budget if budget else 0.0,
        "by_category_bytes": by_category,
        "per_core_bytes": totals,
    }
