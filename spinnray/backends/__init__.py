"""Where cores run: ``local`` (every core and router in this process) or ``ray`` (every core a Ray
actor, one router actor per chip or per node, rounds over authenticated TCP streams).  Both carry the same
schedule (:mod:`spinnray.machine.schedule`) with identical results; :mod:`spinnray.backends.ray`
is the only module that imports Ray.  May import: ``errors``, ``checks``, ``config``, ``model``,
``machine``, ``mapping``, ``rules`` (a core spec names its rule's core class)."""

from __future__ import annotations

from spinnray.backends.local import LocalBackend
from spinnray.backends.ray import RayBackend, cluster_nodes, ensure_ray, resolve_nodes, surviving_cluster
from spinnray.errors import SpinnrayError
from spinnray.machine.core import CoreSpec
from spinnray.machine.router import RoutingTable

__all__ = ["LocalBackend", "RayBackend", "make_backend", "ensure_ray", "cluster_nodes", "resolve_nodes",
           "surviving_cluster"]


def make_backend(name: str, specs: list[CoreSpec], table: RoutingTable, strict: bool = True,
                 timeout_s: float = 120.0, *, node_of: dict[int, int] | None = None,
                 tables: dict[int, RoutingTable] | None = None, node_ids=None,
                 placement_timeout_s: float = 120.0, router_of: dict[int, int] | None = None,
                 copies: bool = True):
    """The ``local`` or ``ray`` backend for ``specs``; ``node_of`` spreads the cores over nodes,
    ``router_of``/``tables`` give them routers (default: one node, one router per node); ``copies``:
    ``local`` may step the copies of a slice together (lockstep runs: :mod:`spinnray.machine.copies`)."""
    if name == "local":
        return LocalBackend(specs, table, strict, node_of=node_of, tables=tables, router_of=router_of,
                            copies=copies)
    if name == "ray":
        return RayBackend(specs, table, strict, timeout_s, node_of=node_of, tables=tables, node_ids=node_ids,
                          placement_timeout_s=placement_timeout_s, router_of=router_of)
    raise SpinnrayError(f"backend = {name!r}: expected 'local' or 'ray'")
