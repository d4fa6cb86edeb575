"""Run cores and routers in-process (``local``) or as Ray actors (``ray``).

This is the only module that imports Ray.  Both backends drive the same
:class:`~spinnray.machine.core.Core` and :class:`~spinnray.machine.router.Router` objects
through the same rounds; only the carrier differs:

* ``local``: one process; each round calls every core's ``run_block``, the
  routers' ``route`` and every core's ``deliver`` in turn.
* ``ray``: every core is a Ray actor (``num_cpus=0``, so any number fit on
  two CPUs) and so is each node's router.  A run is one Ray call per core;
  inside it the rounds travel over persistent TCP streams through the router
  actors (:mod:`spinnray.backends.transport`), because a Ray call per message costs
  about 0.7 ms here and a round must cost far less (DESIGN.md section 4).

Schedules.  By default a run is ``ceil(T / K)`` rounds of K steps (and a
reverse pass one round per step).  Given ``levels`` (core id -> the level of
its population in a feed-forward network, :meth:`Network.levels`), a run is
*layered*: one round per level, in which the cores of that level step through
the whole run and every core takes what it was sent (reverse: the highest
level first, each core's whole reverse pass in its round).  Same results,
far fewer rounds: see :mod:`spinnray.machine.core`.

Nodes.  The mapping's chips may be spread over cluster nodes
(:func:`spinnray.mapping.place.assign_nodes`); then there is one router per node
with its own table (:func:`spinnray.mapping.place.node_tables`), cores talk to
their node's router, and routers forward inter-node events to each other once
per round.  On ``ray`` every actor of node ``n`` is pinned to Ray node
``node_ids[n]`` (hard ``NodeAffinitySchedulingStrategy``); ``local`` runs the
same routers in-process, so results and counters are identical.

Failures.  A core that raises, dies or hangs stops the run: the routers close
their streams at once, so every other core and router stops too, and the
driver raises one error naming the core (its chip and node), the round and
step, and the phase, within ``timeout_s`` of a hang.  After that the backend
refuses to run again.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import NamedTuple

import numpy as np

from spinnray.machine.core import CoreSpec, make_core
from spinnray.errors import MappingError, PacketError, RoutingError, SpinnrayError, TransportError
from spinnray.machine.counters import bytes_by_link_class
from spinnray.machine.router import Router, RoutingTable
from spinnray.backends.transport import CoreLink, RouterServer

__all__ = ["LocalBackend", "RayBackend", "TrainStep", "make_backend", "ensure_ray", "rounds", "cluster_nodes",
           "resolve_nodes"]

log = logging.getLogger(__name__)


def rounds(steps: int, k: int):
    """``(t0, length)`` of each exchange round of a run of ``steps`` steps."""
    for t0 in range(0, steps, k):
        yield t0, min(k, steps - t0)


class TrainStep(NamedTuple):
    """What follows a forward run in the same call to every core (one Ray call per
    core for a whole training step): the reverse pass with loss scale ``scale``
    over ``rounds`` rounds (None: one per step of the run; e-prop's learning
    signals need 1), then, with ``lr``, every core's Adam step on its own gradient
    (when nothing needs reducing: one replica, or model-parallel e-prop)."""

    scale: float
    rounds: int | None = None
    lr: float | None = None


def layered_forward(core, steps: int, level: int, n_levels: int, exchange) -> None:
    """The layered forward run of one core: round r steps the cores of level r
    through the whole run; ``exchange(frames)`` returns what was routed to it."""
    for r in range(n_levels):
        core.deliver(exchange(core.run_block(0, steps) if r == level else []), 0, steps)


def layered_backward(core, steps: int, level: int, n_levels: int, exchange) -> None:
    """The layered reverse pass of one core: the highest level first."""
    for r in range(n_levels):
        core.deliver_errors(exchange(core.backward_layer(steps) if n_levels - 1 - r == level else []), 0, steps)


def _check_strict(core_reports: list[dict], router_reports: list[dict]) -> None:
    """Raise on anything dropped or rejected (it was counted either way)."""
    reasons = [r for rep in router_reports + core_reports for r in rep["reasons"]]
    dropped = sum(rep["counters"]["dropped"] for rep in router_reports + core_reports)
    rejected = sum(rep["counters"]["rejected"] for rep in router_reports + core_reports)
    if rejected:
        raise PacketError(f"{rejected} frame(s) rejected; first: {reasons[0] if reasons else '?'}")
    if dropped:
        raise RoutingError(f"{dropped} event(s) dropped; first: {reasons[0] if reasons else '?'}")


def _with_nodes(core_reports: list[dict], node_of: dict[int, int], ray_ids: list[str] | None = None,
                actual: dict[int, str] | None = None) -> list[dict]:
    """Core reports with ``node`` (index) and, on Ray, ``ray_node_id``."""
    for rep in core_reports:
        rep["node"] = node_of[rep["core_id"]]
        if actual is not None:
            rep["ray_node_id"] = actual.get(rep["core_id"], ray_ids[rep["node"]] if ray_ids else None)
    return core_reports


def _node_plan(core_ids: list[int], table: RoutingTable, node_of: dict[int, int] | None,
               tables: dict[int, RoutingTable] | None) -> tuple[dict[int, int], dict[int, RoutingTable], int]:
    node_of = dict(node_of) if node_of is not None else {c: 0 for c in core_ids}
    n_nodes = max(node_of.values(), default=0) + 1
    tables = tables if tables is not None else ({0: table} if n_nodes == 1 else None)
    if tables is None or sorted(tables) != list(range(n_nodes)):
        raise SpinnrayError(f"{n_nodes} nodes need one routing table each (spinnray.mapping.place.node_tables); "
                            f"got tables for nodes {sorted(tables or {})}")
    empty = [n for n in range(n_nodes) if n not in set(node_of.values())]
    if empty:
        raise SpinnrayError(f"nodes {empty} hold no core; every node index in 0..{n_nodes - 1} needs a core")
    return node_of, tables, n_nodes


class LocalBackend:
    """All cores and routers in this process, stepped round by round.

    ``node_of`` (core -> node index) and ``tables`` (node -> routing table,
    :func:`spinnray.mapping.place.node_tables`) emulate one router per node exactly
    as the ray backend runs them; by default everything is on one node.
    """

    name = "local"

    def __init__(self, specs: list[CoreSpec], table: RoutingTable, strict: bool = True, *,
                 node_of: dict[int, int] | None = None, tables: dict[int, RoutingTable] | None = None):
        self.cores = [make_core(s) for s in specs]
        self.node_of, tables, self.n_nodes = _node_plan([s.core_id for s in specs], table, node_of, tables)
        self.routers = [Router(tables[n], [c.id for c in self.cores if self.node_of[c.id] == n], max_offset=0,
                               n_batch=1, router_id=n, node=n,
                               node_of=self.node_of if self.n_nodes > 1 else None)
                        for n in range(self.n_nodes)]
        self.router = self.routers[0]
        self.strict = strict

    def _route(self, inbox: dict[int, list[bytes]]) -> dict[int, list[bytes]]:
        """One round through every node's router (two phases with several)."""
        if self.n_nodes == 1:
            return self.router.route(inbox)
        phase1 = [r.route_local({c: inbox[c] for c in r.cores}) for r in self.routers]
        out = {}
        for n, r in enumerate(self.routers):
            forwarded = {m: phase1[m][1].get(n, []) for m in range(self.n_nodes) if m != n}
            out.update(r.deliver(phase1[n][0], r.route_forwarded(forwarded)))
        return out

    def _configure(self, max_offset: int, n_batch: int) -> None:
        for r in self.routers:
            r.configure(max_offset=max_offset, n_batch=n_batch)

    def run(self, steps: int, k: int, batch: dict[int, int], inputs: dict[int, np.ndarray],
            record: tuple[str, ...], levels: dict[int, int] | None = None,
            train: TrainStep | None = None) -> dict[int, dict[str, np.ndarray]]:
        """One forward run; ``batch`` gives each core's number of samples;
        ``levels``: the layered schedule (module docstring); ``train``: then the
        reverse pass (:meth:`run_backward`) and Adam (:class:`TrainStep`)."""
        for c in self.cores:
            c.layered = levels is not None
            c.reset(steps, batch[c.id], inputs.get(c.id), record)
        if levels is not None:
            self._configure(steps - 1, max(batch.values()))
            n = max(levels.values()) + 1
            for r in range(n):
                out = self._route({c.id: c.run_block(0, steps) if levels[c.id] == r else [] for c in self.cores})
                for c in self.cores:
                    c.deliver(out[c.id], 0, steps)
        else:
            self._configure(k - 1, max(batch.values()))
            for t0, kk in rounds(steps, k):
                inbox = {c.id: c.run_block(t0, kk) for c in self.cores}
                out = self._route(inbox)
                for c in self.cores:
                    c.deliver(out[c.id], t0, kk)
        for c in self.cores:
            c.finish()
        if train is not None:                   # run_backward checks strictness too
            self.run_backward(steps if train.rounds is None else train.rounds, max(batch.values()), train.scale,
                              levels)
            if train.lr is not None:
                for c in self.cores:
                    c.apply_own(train.lr)
        elif self.strict:
            _check_strict(*self.reports())
        return {c.id: c.recorded for c in self.cores}

    def run_backward(self, steps: int, batch: int, scale: float, levels: dict[int, int] | None = None) -> None:
        """Reverse rounds i = steps-1 .. 0 carrying error events (EventProp);
        ``levels``: one round per level instead, the highest first."""
        for c in self.cores:
            c.begin_backward(steps, scale)
        if levels is not None:
            self._configure(steps - 1, batch)
            top = max(levels.values())
            for r in range(top + 1):
                out = self._route({c.id: c.backward_layer(steps) if levels[c.id] == top - r else []
                                   for c in self.cores})
                for c in self.cores:
                    c.deliver_errors(out[c.id], 0, steps)
            if self.strict:
                _check_strict(*self.reports())
            return
        self._configure(0, batch)
        for i in reversed(range(steps)):
            inbox = {c.id: c.backward_block(i) for c in self.cores}
            out = self._route(inbox)
            for c in self.cores:
                c.deliver_errors(out[c.id], i)
        if self.strict:
            _check_strict(*self.reports())

    def events_sent(self) -> int:
        """Spike and error events the cores have sent so far."""
        return sum(c.events_sent() for c in self.cores)

    def call(self, method: str, args: dict[int, tuple] | None = None, cores=None) -> dict:
        """``method(*args[core])`` on each core (all, or ``cores``); results by core id."""
        ids = [c.id for c in self.cores] if cores is None else list(cores)
        by_id = {c.id: c for c in self.cores}
        return {cid: getattr(by_id[cid], method)(*(args or {}).get(cid, ())) for cid in ids}

    def reports(self) -> tuple[list[dict], list[dict]]:
        """Per-core reports (with ``node``) and one report per router."""
        cores = _with_nodes([c.report() for c in self.cores], self.node_of)
        routers = [{"router_id": r.router_id, "node": r.node, "counters": r.counters.as_dict(),
                    "reasons": list(r.reasons)} for r in self.routers]
        for rep in routers:
            rep["by_link_class"] = bytes_by_link_class([rep], cores)
        return cores, routers

    def close(self) -> None:
        pass


def ensure_ray(address: str | None = None, num_cpus: int | None = None, *, ship_code: bool = False) -> None:
    """Start (or join) Ray once per process.

    ``address=None`` starts an embedded local instance; ``"auto"``,
    ``"host:port"`` or ``"ray://host:port"`` join an existing cluster (with
    Ray 2.60's token authentication the process needs ``RAY_AUTH_MODE=token``
    and the cluster's token, see README).  ``ship_code``: upload this
    process's ``spinnray`` package with the job (Ray ``runtime_env``
    ``py_modules``), so the other nodes need only the dependencies (numpy,
    msgpack, ray) and run exactly this code.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs = dict(include_dashboard=False, log_to_driver=True, configure_logging=False)
    if ship_code:
        import spinnray

        kwargs["runtime_env"] = {"py_modules": [spinnray]}
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
    else:
        ray.init(address=address, **kwargs)


def cluster_nodes() -> list[dict]:
    """The alive nodes of the Ray cluster in spinnray's default order: the
    driver's node first (the head node when the driver's node is unknown),
    then the others by node id.  Each ``{"node_id", "address", "head"}``."""
    import ray

    try:
        here = ray.get_runtime_context().get_node_id()
    except Exception:      # a Ray Client driver has no node of its own
        here = None
    alive = [{"node_id": n["NodeID"], "address": n.get("NodeManagerAddress", "?"),
              "head": "node:__internal_head__" in n.get("Resources", {})}
             for n in ray.nodes() if n.get("Alive")]
    first = here if any(a["node_id"] == here for a in alive) else next(
        (a["node_id"] for a in alive if a["head"]), None)
    return sorted(alive, key=lambda a: (a["node_id"] != first, a["node_id"]))


def surviving_cluster(cluster):
    """``cluster`` (a ClusterConfig) re-spread over the Ray nodes still alive,
    for a restart after a node was lost: ``node_ids`` keeps the named nodes
    that are alive (in order), ``nodes`` becomes what is left (at most the
    nodes asked for), ``chips_per_node`` is cleared so the chips spread evenly.
    The placement changes; the results do not (any node count computes the
    same, bit for bit).  MappingError when no node is alive.
    """
    from dataclasses import replace

    alive = [a["node_id"] for a in cluster_nodes()]
    if not alive:
        raise MappingError("no alive node left in the Ray cluster to continue on")
    kept = None if cluster.node_ids is None else tuple(n for n in cluster.node_ids if n in alive) or None
    n = len(kept) if kept else len(alive)
    if cluster.nodes is not None:
        n = min(n, cluster.nodes)
    return replace(cluster, nodes=n, chips_per_node=None, node_ids=kept)


def _describe_nodes(nodes: list[dict]) -> str:
    return ", ".join(f"{a['node_id']} ({a['address']}{', head' if a['head'] else ''})" for a in nodes) or "none"


def resolve_nodes(n_nodes: int, node_ids=None) -> list[str]:
    """Ray node ids for node indices ``0..n_nodes-1``.

    ``node_ids``: the ids to use, in node order (the first ``n_nodes`` are
    used); None: the alive nodes in :func:`cluster_nodes` order.  Raises
    :class:`MappingError` naming what was asked and what the cluster has when
    there are too few alive nodes, or a named node is not alive.
    """
    alive = cluster_nodes()
    if node_ids is None:
        if n_nodes > len(alive):
            raise MappingError(f"the machine is spread over {n_nodes} nodes (cluster.nodes / cluster.chips_per_node); "
                               f"the Ray cluster has {len(alive)} alive node(s): {_describe_nodes(alive)}")
        return [a["node_id"] for a in alive[:n_nodes]]
    node_ids = [str(i) for i in node_ids]
    if len(node_ids) < n_nodes:
        raise MappingError(f"the machine is spread over {n_nodes} nodes but cluster.node_ids names {len(node_ids)}: "
                           f"{node_ids}")
    chosen = node_ids[:n_nodes]
    ids = {a["node_id"] for a in alive}
    for i, nid in enumerate(chosen):
        if nid not in ids:
            raise MappingError(f"cluster.node_ids[{i}] = {nid!r} is not an alive node of the Ray cluster; "
                               f"alive nodes: {_describe_nodes(alive)}")
    if len(set(chosen)) != len(chosen):
        raise MappingError(f"cluster.node_ids = {chosen}: a node is named twice; expected distinct node ids")
    return chosen


def _actor_classes():
    import ray

    @ray.remote(num_cpus=0)
    class CoreActor:
        """One emulated PE in its own process."""

        def __init__(self, spec: CoreSpec):
            self.core = make_core(spec)
            self.link: CoreLink | None = None

        def connect(self, address, timeout_s: float, secret: bytes, router_node: int = 0) -> None:
            self.link = CoreLink(self.core.id, tuple(address), timeout_s, secret=secret, router_node=router_node)

        def run(self, steps, k, batch, inputs, record, layer=None, train=None):
            """A forward run; ``layer``: (level, number of levels) of the layered schedule;
            ``train`` (:class:`TrainStep`): then the reverse pass and Adam, in the same call."""
            core = self.core
            core.layered = layer is not None
            core.reset(steps, batch, inputs, record)
            if layer is not None:
                layered_forward(core, steps, *layer, lambda frames: self.link.exchange(frames, 0))
            else:
                for t0, kk in rounds(steps, k):
                    self.link.send(core.run_block(t0, kk), t0)
                    core.flush()            # e.g. e-prop's last trace update, while the router routes
                    core.deliver(self.link.receive(t0), t0, kk)
            core.finish()
            if train is not None:
                self.backward(steps if train.rounds is None else train.rounds, train.scale, layer)
                if train.lr is not None:
                    core.apply_own(train.lr)
            return core.recorded, core.problems(), core.events_sent()

        def backward(self, steps, scale, layer=None):
            core = self.core
            core.begin_backward(steps, scale)
            if layer is not None:
                layered_backward(core, steps, *layer, lambda frames: self.link.exchange(frames, 0))
            else:
                for i in reversed(range(steps)):
                    core.deliver_errors(self.link.exchange(core.backward_block(i), i), i)
            return core.problems(), core.events_sent()

        def call(self, method, args):
            return getattr(self.core, method)(*args)

        def report(self) -> dict:
            return self.core.report()

        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    @ray.remote(num_cpus=0)
    class RouterActor:
        """The multicast router of one node; its TCP server thread runs the rounds."""

        def __init__(self, table: RoutingTable, cores: list[int], timeout_s: float, node: int, nodes: int,
                     node_of: dict[int, int] | None, secret: bytes):
            self.router = r = Router(table, cores, max_offset=0, n_batch=1, router_id=node, node=node,
                                     node_of=node_of)
            host = ray.util.get_node_ip_address()

            def rejected(reason: str) -> None:      # a stranger's connection: counted, never a problem
                r.counters.rejected_connections += 1

            if nodes == 1:
                self.server = RouterServer(r.route, cores, host, timeout_s, secret=secret, on_reject=rejected)
            else:
                self.server = RouterServer(r.route_local, cores, host, timeout_s, secret=secret, node=node,
                                           nodes=nodes, on_reject=rejected,
                                           finish=lambda local, fwd: r.deliver(local, r.route_forwarded(fwd)))

        def address(self):
            return self.server.address

        def start(self, peers: dict) -> None:
            self.server.start(peers)

        def configure(self, k: int, batch: int, steps: int | None = None, backward: bool = False,
                      layered: bool = False, forward_rounds: int | None = None) -> None:
            with self.server.lock:
                self.router.configure(max_offset=k - 1, n_batch=batch)
                if steps is not None:
                    self.server.begin_run(k, steps, backward, layered, forward_rounds)

        def abort(self, reason: str) -> None:
            self.server.close(f"aborted: {reason}")

        def problems(self) -> int:
            c = self.router.counters
            return c.dropped + c.rejected + (1 if self.server.error else 0)

        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

        def report(self) -> dict:
            with self.server.lock:
                return {"router_id": self.router.router_id, "node": self.router.node,
                        "ray_node_id": ray.get_runtime_context().get_node_id(),
                        "counters": self.router.counters.as_dict(),
                        "reasons": list(self.router.reasons), "error": self.server.error,
                        "connection_reasons": list(self.server.rejections)}

        def state(self) -> tuple[str | None, str]:
            """(error or None, the round it is at): cheap, for failure reports."""
            return self.server.error, self.server.where(self.server.rounds)

    return CoreActor, RouterActor


class RayBackend:
    """Each core a Ray actor, one router actor per node, rounds over TCP.

    ``node_of``/``tables`` as for :class:`LocalBackend`.  Node index ``n``
    is the Ray node ``node_ids[n]`` (default: :func:`resolve_nodes`); every
    actor of node ``n`` is pinned there with a hard
    ``NodeAffinitySchedulingStrategy`` (actors take ``num_cpus=0``, so no
    resources need reserving).  Raises :class:`MappingError` when the cluster
    has too few alive nodes, a named node is not alive, or the actors are not
    all up within ``placement_timeout_s``; never waits longer.
    """

    name = "ray"

    def __init__(self, specs: list[CoreSpec], table: RoutingTable, strict: bool = True,
                 timeout_s: float = 120.0, *, node_of: dict[int, int] | None = None,
                 tables: dict[int, RoutingTable] | None = None, node_ids=None,
                 placement_timeout_s: float = 120.0):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if not ray.is_initialized():
            raise SpinnrayError("backend 'ray' needs Ray started: call spinnray.backends.backend.ensure_ray() "
                                "or ray.init() first")
        self._ray = ray
        CoreActor, RouterActor = _actor_classes()
        self.strict = strict
        self.timeout_s = timeout_s
        self.failed: str | None = None
        self.specs = {s.core_id: s for s in specs}
        self.core_ids = [s.core_id for s in specs]
        self._events: dict[int, int] = {}
        self.node_of, tables, self.n_nodes = _node_plan(self.core_ids, table, node_of, tables)
        self.ray_node_ids = resolve_nodes(self.n_nodes, node_ids)
        self.actors: dict = {}
        self.routers: list = []

        def pin(n):
            return NodeAffinitySchedulingStrategy(self.ray_node_ids[n], soft=False)

        # This run's key for the router streams (transport module docstring): it reaches the
        # actors only as call arguments, never a socket, file or environment variable.
        secret = secrets.token_bytes(32)
        try:
            self.routers = [RouterActor.options(scheduling_strategy=pin(n)).remote(
                tables[n], [c for c in self.core_ids if self.node_of[c] == n], timeout_s, n, self.n_nodes,
                self.node_of if self.n_nodes > 1 else None, secret) for n in range(self.n_nodes)]
            self.router = self.routers[0]
            self.actors = {s.core_id: CoreActor.options(scheduling_strategy=pin(self.node_of[s.core_id])).remote(s)
                           for s in specs}
            addresses = self._place([r.address.remote() for r in self.routers], placement_timeout_s,
                                    "start the routers")
            if self.n_nodes > 1:
                self._place([r.start.remote({m: addresses[m] for m in range(self.n_nodes) if m != n})
                             for n, r in enumerate(self.routers)], placement_timeout_s, "start the routers")
            self._place([a.connect.remote(addresses[self.node_of[cid]], timeout_s, secret, self.node_of[cid])
                         for cid, a in self.actors.items()], placement_timeout_s, "start and connect the cores")
            nodes = self._place([a.node.remote() for a in self.actors.values()]
                                + [r.node.remote() for r in self.routers], placement_timeout_s, "locate the actors")
        except BaseException:
            self.close()
            raise
        self.actual_nodes = dict(zip(self.actors, nodes))
        wrong = [f"core {cid} runs on Ray node {got}, not on its node {self.node_of[cid]} = "
                 f"{self.ray_node_ids[self.node_of[cid]]}" for cid, got in self.actual_nodes.items()
                 if got != self.ray_node_ids[self.node_of[cid]]]
        wrong += [f"router {n} runs on Ray node {got}, not on {self.ray_node_ids[n]}"
                  for n, got in enumerate(nodes[len(self.actors):]) if got != self.ray_node_ids[n]]
        if wrong:       # hard node affinity makes this impossible; checked, not assumed
            self.close()
            raise MappingError(wrong[0])

    def _place(self, refs: list, timeout_s: float, what: str) -> list:
        """``ray.get`` during start-up: a failure or ``timeout_s`` becomes a MappingError."""
        ray = self._ray
        try:
            return ray.get(refs, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise MappingError(
                f"could not {what} within cluster.placement_timeout_s = {timeout_s} s on the nodes asked for "
                f"({self.n_nodes}: {self.ray_node_ids}); alive: {_describe_nodes(cluster_nodes())}") from None
        except ray.exceptions.RayError as e:
            cause = _unwrap(e)
            if isinstance(cause, SpinnrayError):
                raise cause from None
            raise MappingError(f"could not {what} on the nodes asked for ({self.n_nodes}: {self.ray_node_ids}): "
                               f"{_first_line(e)}; alive: {_describe_nodes(cluster_nodes())}") from None

    def _configure(self, k: int, batch: int, steps: int, backward: bool, layered: bool = False,
                   forward_rounds: int | None = None) -> None:
        ray = self._ray
        try:
            ray.get([r.configure.remote(k, batch, steps, backward, layered, forward_rounds) for r in self.routers],
                    timeout=self.timeout_s)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
            self.failed = f"a router did not answer before the run: {_first_line(e)}"
            raise TransportError(self.failed + "; " + "; ".join(self._router_errors())) from None

    @staticmethod
    def _layers(levels: dict[int, int] | None) -> dict[int, tuple | None]:
        """Each core's (level, number of levels) of the layered schedule, or None."""
        if levels is None:
            return {}
        n = max(levels.values()) + 1
        return {cid: (lv, n) for cid, lv in levels.items()}

    def run(self, steps: int, k: int, batch: dict[int, int], inputs: dict[int, np.ndarray],
            record: tuple[str, ...], levels: dict[int, int] | None = None,
            train: TrainStep | None = None) -> dict[int, dict[str, np.ndarray]]:
        """As :meth:`LocalBackend.run`; with ``train`` the reverse pass (and Adam) run
        in the same Ray call to each core (the routers are configured once for both:
        offsets up to the forward's, and every core still checks its own)."""
        self._check_alive()
        layers = self._layers(levels)
        n_fwd = (max(levels.values()) + 1) if levels is not None else -(-steps // k)
        self._configure(steps if levels is not None else k, max(batch.values()), steps, False, levels is not None,
                        n_fwd if train is not None else None)
        refs = {a.run.remote(steps, k, batch[cid], inputs.get(cid), tuple(record), layers.get(cid), train): cid
                for cid, a in self.actors.items()}
        out = self._gather(refs, "forward run" if train is None else "training step (forward, backward, Adam)")
        self._events.update({cid: ev for cid, (_, _, ev) in out.items()})
        self._strict(sum(p for _, p, _ in out.values()))
        return {cid: rec for cid, (rec, _, _) in out.items()}

    def run_backward(self, steps: int, batch: int, scale: float, levels: dict[int, int] | None = None) -> None:
        self._check_alive()
        layers = self._layers(levels)
        self._configure(steps if levels is not None else 1, batch, steps, True, levels is not None)
        out = self._gather({a.backward.remote(steps, scale, layers.get(cid)): cid for cid, a in self.actors.items()},
                           "backward run")
        self._events.update({cid: ev for cid, (_, ev) in out.items()})
        self._strict(sum(p for p, _ in out.values()))

    def events_sent(self) -> int:
        """Spike and error events the cores have sent so far, as of the last run
        (returned by the runs themselves: no extra Ray call)."""
        return sum(self._events.values())

    def _strict(self, core_problems: int) -> None:
        """Fetch the full reports only when a core or a router saw a problem."""
        if self.strict and core_problems + sum(self._ray.get([r.problems.remote() for r in self.routers])):
            _check_strict(*self.reports())

    def call(self, method: str, args: dict[int, tuple] | None = None, cores=None) -> dict:
        self._check_alive()
        ids = self.core_ids if cores is None else list(cores)
        return self._gather({self.actors[cid].call.remote(method, (args or {}).get(cid, ())): cid for cid in ids},
                            f"call {method}()")

    def _check_alive(self) -> None:
        if self.failed:
            raise TransportError(f"the ray backend failed earlier and cannot run again (build a new Simulator): "
                                 f"{self.failed}")

    def _gather(self, refs: dict, what: str) -> dict:
        """Results by core id; the first failure stops every router and is raised."""
        ray = self._ray
        out, pending = {}, list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                out[refs[done[0]]] = ray.get(done[0])
            except ray.exceptions.RayError as e:
                raise self._failure(refs, done[0], e, pending, what) from None
        return out

    def _where(self, cid: int) -> str:
        n = self.node_of[cid]
        return f"chip {self.specs[cid].chip}, node {n} = Ray node {self.ray_node_ids[n][:12]}"

    def _failure(self, refs: dict, first, error, pending: list, what: str) -> Exception:
        """The error to raise for a failed call, after stopping the machine.

        One core failed (or died): the others would wait for its round until
        the timeout, so every router's streams are closed at once.  The other
        calls then end within moments; their errors and the routers' say what
        happened first: a core's own error wins, then a bug, then a dead core
        (named with the round and step its node's router was at), then the
        transport errors; the routers' own errors are appended (they name the
        core or router, the round and step, and the phase).
        """
        ray = self._ray
        self.failed = f"core {refs[first]}: {_first_line(error)} during the {what}"
        self._abort_routers(self.failed)
        errors = {refs[first]: error}
        if pending:
            done, _ = ray.wait(pending, num_returns=len(pending), timeout=min(self.timeout_s, 10.0))
            for ref in done:
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as e:
                    errors[refs[ref]] = e
        causes = {cid: _unwrap(e) for cid, e in errors.items()}
        own = sorted(cid for cid, c in causes.items()
                     if isinstance(c, SpinnrayError) and not isinstance(c, TransportError))
        if own:
            self.failed = f"core {own[0]}: {causes[own[0]]}"
            return causes[own[0]]
        bugs = sorted(cid for cid, c in causes.items()
                      if not isinstance(c, (SpinnrayError, ray.exceptions.RayActorError)))
        died = sorted(cid for cid, e in errors.items() if isinstance(e, ray.exceptions.RayActorError))
        states = self._router_states()
        if bugs:
            msg = f"core {bugs[0]} ({self._where(bugs[0])}) failed in the {what}: {_first_line(errors[bugs[0]])}"
        elif died:
            # the round its node's router was at (another router's if that one is gone too:
            # rounds run in lockstep, so they are at most one apart)
            at = states[self.node_of[died[0]]][1] or next((a for _, a in states if a), None)
            msg = (f"core {died[0]} ({self._where(died[0])}) died during the {what}"
                   f"{f', at {at}' if at else ''}"
                   f"{f' (cores {died[1:]} too)' if len(died) > 1 else ''}: {_first_line(errors[died[0]])}")
        else:
            cid = min(causes)
            msg = f"core {cid} ({self._where(cid)}) in the {what}: {causes[cid]}"
        # The routers' own errors, not the echoes of our abort: a router that
        # was aborted closed its streams, and its peers saw that as a lost router.
        aborted = [n for n, (e, _) in enumerate(states) if e and "aborted:" in e]
        for e, _ in states:
            if e and "aborted:" not in e and not any(f"lost router {n} (node {n})" in e for n in aborted):
                msg += f"; {e}"
        self.failed = msg
        return TransportError(msg)

    def _abort_routers(self, reason: str) -> None:
        refs = [r.abort.remote(reason) for r in self.routers]
        self._ray.wait(refs, num_returns=len(refs), timeout=5.0)

    def _router_states(self) -> list[tuple[str | None, str | None]]:
        """``(error, round it is at)`` of each router; a dead or silent router
        is an error of its own."""
        ray = self._ray
        refs = [r.state.remote() for r in self.routers]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=5.0)
        out = []
        for n, ref in enumerate(refs):
            if ref not in done:
                out.append((f"router {n} (node {n}) did not answer within 5 s", None))
                continue
            try:
                out.append(tuple(ray.get(ref)))
            except ray.exceptions.RayError as e:
                out.append((f"router {n} (node {n}) is dead: {_first_line(e)}", None))
        return out

    def _router_errors(self) -> list[str]:
        return [e for e, _ in self._router_states() if e]

    def reports(self) -> tuple[list[dict], list[dict]]:
        """Per-core reports (with ``node`` and ``ray_node_id``), one report per router."""
        ray = self._ray
        cores = _with_nodes(ray.get([self.actors[c].report.remote() for c in self.core_ids]), self.node_of,
                            self.ray_node_ids, self.actual_nodes)
        routers = ray.get([r.report.remote() for r in self.routers])
        for rep in routers:
            rep["by_link_class"] = bytes_by_link_class([rep], cores)
        return cores, routers

    def close(self) -> None:
        for a in list(self.actors.values()) + list(self.routers):
            try:
                self._ray.kill(a)
            except Exception:   # an actor that died already is fine to skip
                pass
        self.actors = {}
        self.routers = []


def _first_line(e: Exception) -> str:
    """A Ray error's message without its traceback."""
    text = str(_unwrap(e)).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return f"{type(_unwrap(e)).__name__}: {lines[0] if lines else ''}"[:500]


def _unwrap(e: Exception) -> Exception:
    """The spinnray error inside a RayTaskError, if there is one."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, SpinnrayError) else e


def make_backend(name: str, specs: list[CoreSpec], table: RoutingTable, strict: bool = True,
                 timeout_s: float = 120.0, *, node_of: dict[int, int] | None = None,
                 tables: dict[int, RoutingTable] | None = None, node_ids=None,
                 placement_timeout_s: float = 120.0):
    """The ``local`` or ``ray`` backend for ``specs``; ``node_of``/``tables``
    spread the cores over nodes with one router each (default: one node)."""
    if name == "local":
        return LocalBackend(specs, table, strict, node_of=node_of, tables=tables)
    if name == "ray":
        return RayBackend(specs, table, strict, timeout_s, node_of=node_of, tables=tables, node_ids=node_ids,
                          placement_timeout_s=placement_timeout_s)
    raise SpinnrayError(f"backend = {name!r}: expected 'local' or 'ray'")
