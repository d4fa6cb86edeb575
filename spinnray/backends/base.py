"""What the two backends share: the strictness check, router plans, the reports' node fields, and
a process's own memory (each core actor's, in its report)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from spinnray.errors import PacketError, RoutingError, SpinnrayError
from spinnray.machine.counters import bytes_by_link_class
from spinnray.machine.router import RoutingTable

__all__ = ["check_strict", "with_nodes", "with_links", "router_plan", "RouterPlan", "process_memory",
           "parse_smaps_rollup"]


def check_strict(core_reports: list[dict], router_reports: list[dict]) -> None:
    """Raise on anything dropped or rejected (it was counted either way)."""
    reasons = [r for rep in router_reports + core_reports for r in rep["reasons"]]
    dropped = sum(rep["counters"]["dropped"] for rep in router_reports + core_reports)
    rejected = sum(rep["counters"]["rejected"] for rep in router_reports + core_reports)
    if rejected:
        raise PacketError(f"{rejected} frame(s) rejected; first: {reasons[0] if reasons else '?'}")
    if dropped:
        raise RoutingError(f"{dropped} event(s) dropped; first: {reasons[0] if reasons else '?'}")


def with_nodes(core_reports: list[dict], node_of: dict[int, int], ray_ids: list[str] | None = None,
                actual: dict[int, str] | None = None) -> list[dict]:
    """Core reports with ``node`` (index), ``process`` (None where the report has none: on
    ``local`` every core shares the driver's process) and, on Ray, ``ray_node_id``."""
    for rep in core_reports:
        rep["node"] = node_of[rep["core_id"]]
        rep.setdefault("process", None)
        if actual is not None:
            rep["ray_node_id"] = actual.get(rep["core_id"], ray_ids[rep["node"]] if ray_ids else None)
    return core_reports


@dataclass(frozen=True)
class RouterPlan:
    """Which router serves which core, and where the routers are: ``node_of`` core -> node,
    ``router_of`` core -> router index, ``router_node`` router -> node, ``tables`` router ->
    routing table, ``cores`` router -> the cores it serves (ascending)."""

    node_of: dict[int, int]
    router_of: dict[int, int]
    router_node: list[int]
    tables: dict[int, RoutingTable]
    cores: list[list[int]]

    @property
    def n_routers(self) -> int:
        return len(self.router_node)

    @property
    def n_nodes(self) -> int:
        return max(self.router_node) + 1

    def chips(self, chip_of: dict[int, int]) -> list[list[int]]:
        """The chips each router serves (ascending)."""
        return [sorted({chip_of[c] for c in cores}) for cores in self.cores]


def with_links(routers: list[dict], cores: list[dict], chips: list[list[int]]) -> list[dict]:
    """Router reports with ``chips`` (the chips each serves) and ``by_link_class`` (its links)."""
    for rep in routers:
        rep["chips"] = chips[rep["router_id"]]
        rep["by_link_class"] = bytes_by_link_class([rep], cores)
    return routers


def router_plan(core_ids: list[int], table: RoutingTable, node_of: dict[int, int] | None,
                tables: dict[int, RoutingTable] | None, router_of: dict[int, int] | None = None) -> RouterPlan:
    """Check and complete how the cores are spread: ``node_of`` (None: one node), ``router_of``
    (None: one router per node) and one routing table per router (``tables``;
    :func:`spinnray.mapping.place.router_tables`; None with one router: ``table``)."""
    node_of = dict(node_of) if node_of is not None else {c: 0 for c in core_ids}
    router_of = dict(router_of) if router_of is not None else dict(node_of)
    n_nodes = max(node_of.values(), default=0) + 1
    n_routers = max(router_of.values(), default=0) + 1
    tables = tables if tables is not None else ({0: table} if n_routers == 1 else None)
    if tables is None or sorted(tables) != list(range(n_routers)):
        raise SpinnrayError(f"{n_routers} routers need one routing table each (spinnray.mapping.place.router_tables); "
                            f"got tables for routers {sorted(tables or {})}")
    empty = [n for n in range(n_nodes) if n not in set(node_of.values())]
    if empty:
        raise SpinnrayError(f"nodes {empty} hold no core; every node index in 0..{n_nodes - 1} needs a core")
    cores: list[list[int]] = [[] for _ in range(n_routers)]
    router_node: list[int | None] = [None] * n_routers
    for c in sorted(core_ids):
        r = router_of[c]
        cores[r].append(c)
        if router_node[r] not in (None, node_of[c]):
            raise SpinnrayError(f"router {r} serves cores on nodes {router_node[r]} and {node_of[c]} (core {c}); "
                                "a router serves the cores of one node only")
        router_node[r] = node_of[c]
    idle = [r for r, n in enumerate(router_node) if n is None]
    if idle:
        raise SpinnrayError(f"routers {idle} serve no core; every router index in 0..{n_routers - 1} needs a core")
    return RouterPlan(node_of, router_of, router_node, tables, cores)


def parse_smaps_rollup(text: str) -> dict[str, int | None]:
    """``rss_bytes`` and ``uss_bytes`` from the text of ``/proc/PID/smaps_rollup`` (kB lines)."""
    kb = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            kb[parts[0][:-1]] = int(parts[1])
    if "Rss" not in kb:
        return {"rss_bytes": None, "uss_bytes": None}
    private = ("Private_Clean", "Private_Dirty")
    uss = sum(kb[k] for k in private) * 1024 if all(k in kb for k in private) else None
    return {"rss_bytes": kb["Rss"] * 1024, "uss_bytes": uss}


def process_memory(proc: Path = Path("/proc/self")) -> dict:
    """This process's memory: ``pid``, ``rss_bytes`` (resident, shared pages included) and
    ``uss_bytes`` (its private pages: what the process adds to the machine), from
    ``smaps_rollup`` (Linux 4.14+).  Where that is missing, RSS from ``statm`` and USS None;
    with no ``/proc`` at all, both None."""
    out = {"pid": os.getpid()}
    try:
        return {**out, **parse_smaps_rollup((proc / "smaps_rollup").read_text())}
    except OSError:
        pass
    try:
        pages = int((proc / "statm").read_text().split()[1])
        return {**out, "rss_bytes": pages * os.sysconf("SC_PAGE_SIZE"), "uss_bytes": None}
    except (OSError, ValueError, IndexError):
        return {**out, "rss_bytes": None, "uss_bytes": None}
