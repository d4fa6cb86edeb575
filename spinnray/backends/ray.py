"""The ``ray`` backend: every core a Ray actor, one router actor per chip (or per node), rounds over TCP.

This is the only module that imports Ray.  A run is one Ray call per core (a Ray call costs
about 0.7 ms here, a round must cost far less); inside it each core actor runs its program
(:mod:`spinnray.machine.schedule`) and every round travels over a persistent TCP stream to its
router actor (:mod:`spinnray.backends.transport`): its chip's, or its node's with
``cluster.router_per = node``.  With several routers, they forward inter-chip and inter-node
events to each other once per round, over the same authenticated streams whether the peer router
is on this Ray node or another.  Every actor of node ``n`` (cores and routers) is pinned to Ray
node ``node_ids[n]`` (hard ``NodeAffinitySchedulingStrategy``).

Start-up.  A new actor is a new worker process (the raylet starts as many at once as the node has
CPUs: 152 took about 60 s on 2 CPUs, bench/RESULTS.md issue 25), so core actors come from this process's pool (:func:`core_pool`,
:mod:`spinnray.backends.pool`): all requested at once, started blank, then each loaded with its
spec and connected (progress on stderr when that takes a while); when the backend closes cleanly
they are emptied and pooled for the next backend of the process, and a failed backend kills them.
``core_pool().drain()`` ends the idle ones.  Before any actor starts, :func:`admit` refuses a
mapping whose actors would not fit the node's memory.

Failures.  A core that raises, dies or hangs stops the run: the routers close their streams at
once, so every other core and router stops too, and the driver raises one error naming the
core (its chip and node), the round and step, and the phase, within ``timeout_s`` of a hang.
After that the backend refuses to run again.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import secrets
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from spinnray.backends.base import check_strict, process_memory, router_plan, with_links, with_nodes
from spinnray.backends.pool import ActorPool
from spinnray.backends.transport import CoreLink, RouterServer
from spinnray.errors import MappingError, SpinnrayError, TransportError
from spinnray.machine.core import CoreSpec, build_core, invoke
from spinnray.machine.router import Router, RoutingTable
from spinnray.machine.schedule import TrainStep, backward_program, run_program

__all__ = ["RayBackend", "ensure_ray", "cluster_nodes", "resolve_nodes", "surviving_cluster", "admit", "ACTOR_BYTES",
           "core_pool"]

log = logging.getLogger(__name__)


#: Ray's own periodic reporting, which spinnray never reads (metrics, task events, usage stats), off for
#: the embedded local Ray only (a cluster keeps its operator's settings); a variable already set wins.
#: With 152 idle core actors on 2 CPUs it cut their CPU from 57-65 % to 48-53 % of a core and each
#: actor's USS by 0.35 MB in three interleaved pairs; start-up time did not change beyond the noise
#: (bench/RESULTS.md, issue 25).
QUIET_RAY = {"RAY_enable_metrics_collection": "0", "RAY_USAGE_STATS_ENABLED": "0",
             "RAY_task_events_report_interval_ms": "0", "RAY_metrics_report_interval_ms": "600000",
             "RAY_event_stats": "0"}


def ensure_ray(address: str | None = None, num_cpus: int | None = None, *, ship_code: bool = False) -> None:
    """Start (or join) Ray once per process.

    ``address=None`` starts an embedded local instance; ``"auto"``,
    ``"host:port"`` or ``"ray://host:port"`` join an existing cluster (with
    Ray 2.60's token authentication the process needs ``RAY_AUTH_MODE=token``
    and the cluster's token, see docs/cluster.md).  ``ship_code``: upload this
    process's ``spinnray`` package with the job (Ray ``runtime_env``
    ``py_modules``), so the other nodes need only the dependencies (numpy,
    msgpack, ray) and run exactly this code.  The embedded instance starts with
    Ray's own reporting off (:data:`QUIET_RAY`).
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address is None:
        for key, value in QUIET_RAY.items():        # the processes this starts inherit them
            os.environ.setdefault(key, value)
    kwargs = dict(include_dashboard=False, log_to_driver=True, configure_logging=False)
    if ship_code:
        kwargs["runtime_env"] = {"py_modules": [str(Path(__file__).resolve().parents[1])]}   # this spinnray package
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
    else:
        ray.init(address=address, **kwargs)


def cluster_nodes() -> list[dict]:
    """The alive nodes of the Ray cluster in spinnray's default order: the
    driver's node first (the head node when the driver's node is unknown),
    then the others by node id.  Each ``{"node_id", "address", "head"}``."""
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


#: private memory (USS) of one core actor process of a forward run, rounded up: 56-59 MB measured by
#: bench/bench_actor_memory.py (bench/RESULTS.md, issue 21), ~102 MB RSS with the pages actors share
ACTOR_BYTES = 64 * 2**20


def _node_memory(node_id: str) -> float | None:
    """Bytes of memory Ray reports for the node (its ``memory`` resource), or None if unknown."""
    for n in ray.nodes():
        if n.get("NodeID") == node_id and n.get("Alive"):
            return n.get("Resources", {}).get("memory")
    return None


def admit(node_of: dict[int, int], ray_node_ids: list[str], router_node: list[int] | None = None) -> None:
    """Refuse, before any actor starts, a mapping whose core actors (and routers: ``router_node``
    gives each router's node; None: one per node) would not fit the memory Ray reports for their
    node: MappingError with the numbers, instead of a placement timeout or the machine running out
    of memory."""
    for n, node_id in enumerate(ray_node_ids):
        routers = 1 if router_node is None else sum(1 for v in router_node if v == n)
        actors = sum(1 for v in node_of.values() if v == n) + routers      # the cores and the node's routers
        have = _node_memory(node_id)
        need = actors * ACTOR_BYTES
        if have is not None and need > have:
            raise MappingError(
                f"the mapping puts {actors - routers} core actors and "
                f"{'a router' if routers == 1 else f'{routers} routers'} on node {n} (Ray node {node_id[:12]}): at "
                f"about {ACTOR_BYTES / 2**20:.0f} MB each they need {need / 2**30:.1f} GB, but Ray reports "
                f"{have / 2**30:.1f} GB of memory there (about {int(have // ACTOR_BYTES) - routers} cores fit); "
                "use fewer cores (parallel.cores_per_population, machine.neurons_per_core), more nodes "
                "(cluster.nodes) or backend=local")


_CORE_ACTOR = None
_POOL: ActorPool | None = None


def _core_actor_class():
    """The core actor's Ray class, made once per process (the pool's actors are all of it)."""
    global _CORE_ACTOR
    if _CORE_ACTOR is not None:
        return _CORE_ACTOR

    @ray.remote(num_cpus=0)
    class CoreActor:
        """One emulated PE in its own process.  Started blank (:mod:`spinnray.backends.pool`),
        loaded with a spec and connected to its router by :meth:`load`, emptied by :meth:`reset`
        when its backend closes cleanly, then loaded again by the next backend."""

        def __init__(self):
            self.core = None
            self.link: CoreLink | None = None

        def load(self, spec: CoreSpec, address, timeout_s: float, secret: bytes, router: int = 0) -> str:
            """Build the core of ``spec`` and connect it to its router; returns the Ray node id."""
            self.core = build_core(spec)
            self.link = CoreLink(self.core.id, tuple(address), timeout_s, secret=secret, router=router)
            return ray.get_runtime_context().get_node_id()

        def reset(self) -> None:
            """Drop the core and close its stream: nothing of this run is left for the next."""
            if self.link is not None:
                self.link.close()
            self.core = self.link = None
            gc.collect()
            _release_free_memory()

        def held(self) -> list[str]:
            """The names of what the actor holds (empty when blank or reset)."""
            return sorted(k for k, v in vars(self).items() if v is not None)

        def run(self, steps, k, batch, inputs, record, layer=None, train=None):
            """A forward run; ``layer``: (level, number of levels) of the layered schedule;
            ``train`` (:class:`TrainStep`): then the reverse pass and Adam, in the same call."""
            return self._drive(run_program(self.core, steps, k, batch, inputs, record, layer, train))

        def backward(self, steps, scale, layer=None, k=1):
            return self._drive(backward_program(self.core, steps, scale, layer, k))

        def _drive(self, program):
            """Run one core's program over its stream: send a round's frames, do the round's
            deferred work while the router routes (core.flush), take the reply."""
            frames, step = next(program)
            while True:
                self.link.send(frames, step)
                self.core.flush()
                incoming = self.link.receive(step)
                try:
                    frames, step = program.send(incoming)
                except StopIteration as done:
                    return done.value

        def call(self, method, args):
            return invoke(self.core, method, args)

        def report(self) -> dict:
            """The core's report and this process's memory (``process``)."""
            return {**self.core.report(), "process": process_memory()}

        def pid(self) -> int:
            return os.getpid()

        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    _CORE_ACTOR = CoreActor
    return CoreActor


def _release_free_memory() -> None:
    """Hand freed heap back to the system (glibc's malloc_trim), so an idle actor's RSS shows what
    it holds, not its last run's peak; a no-op on other C libraries."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def core_pool() -> ActorPool:
    """This process's pool of core actors (made on first use)."""
    global _POOL
    if _POOL is None:
        cls = _core_actor_class()
        _POOL = ActorPool(lambda node_id: cls.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(), ray.kill)
    return _POOL


class StderrProgress:
    """The default start-up progress: ``spinnray: cores up 37/152 (12 s)`` on stderr every 5 s once
    start-up has taken 2 s (quick starts stay quiet), and the last count when it printed any."""

    def __init__(self):
        self.last = None

    def __call__(self, done: int, total: int, elapsed_s: float) -> None:
        due = elapsed_s >= 2.0 and (self.last is None or elapsed_s - self.last >= 5.0)
        if due or (done == total and self.last is not None):
            self.last = elapsed_s
            print(f"spinnray: cores up {done}/{total} ({elapsed_s:.0f} s)", file=sys.stderr, flush=True)


def _actor_classes():
    @ray.remote(num_cpus=0)
    class RouterActor:
        """The multicast router of one chip (or node); its TCP server thread runs the rounds.
        ``router_of`` (core -> router) and ``router_node`` (router -> node): None with one router."""

        def __init__(self, table: RoutingTable, cores: list[int], timeout_s: float, router: int, routers: int,
                     router_of: dict[int, int] | None, router_node: list[int] | None, secret: bytes):
            self.router = r = Router(table, cores, max_offset=0, n_batch=1, router_id=router,
                                     node=router_node[router] if router_node else 0, router_of=router_of,
                                     router_node=router_node)
            host = ray.util.get_node_ip_address()

            def rejected(reason: str) -> None:      # a stranger's connection: counted, never a problem
                r.counters.rejected_connections += 1

            if routers == 1:
                self.server = RouterServer(r.route, cores, host, timeout_s, secret=secret, on_reject=rejected)
            else:
                self.server = RouterServer(r.route_local, cores, host, timeout_s, secret=secret, router=router,
                                           routers=routers, router_node=router_node, on_reject=rejected,
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
                        "connection_reasons": list(self.server.rejections), "process": process_memory()}

        def state(self) -> tuple[str | None, str, int | None]:
            """(error or None, the round it is at, the core it failed waiting for or None): cheap, for
            failure reports."""
            return self.server.error, self.server.where(self.server.rounds), self.server.late_core

    return RouterActor


class RayBackend:
    """Each core a Ray actor, one router actor per chip (or per node), rounds over TCP.

    ``node_of``/``router_of``/``tables`` as for :class:`LocalBackend`.  Node
    index ``n`` is the Ray node ``node_ids[n]`` (default: :func:`resolve_nodes`);
    every actor of node ``n`` (its cores and routers) is pinned there with a hard
    ``NodeAffinitySchedulingStrategy`` (actors take ``num_cpus=0``, so no
    resources need reserving).  Raises :class:`MappingError` when the cluster
    has too few alive nodes, a named node is not alive, or the actors are not
    all up within ``placement_timeout_s``; never waits longer.  Core actors come
    from :func:`core_pool` and go back to it on a clean :meth:`close`;
    ``progress(done, total, elapsed_s)`` is called as they come up (default
    :class:`StderrProgress`); ``startup_s`` is how long they took.
    """

    name = "ray"

    def __init__(self, specs: list[CoreSpec], table: RoutingTable, strict: bool = True,
                 timeout_s: float = 120.0, *, node_of: dict[int, int] | None = None,
                 tables: dict[int, RoutingTable] | None = None, node_ids=None,
                 placement_timeout_s: float = 120.0, router_of: dict[int, int] | None = None, progress=None):
        if not ray.is_initialized():
            raise SpinnrayError("backend 'ray' needs Ray started: call spinnray.backends.ensure_ray() "
                                "or ray.init() first")
        self._ray = ray
        RouterActor = _actor_classes()
        self.strict = strict
        self.timeout_s = timeout_s
        self.failed: str | None = None
        self._busy = False              # a call to the cores is under way (close then kills, never pools)
        self.specs = {s.core_id: s for s in specs}
        self.core_ids = [s.core_id for s in specs]
        self._events: dict[int, int] = {}
        self.plan = plan = router_plan(self.core_ids, table, node_of, tables, router_of)
        self.node_of, self.n_nodes = plan.node_of, plan.n_nodes
        self.chips = plan.chips({s.core_id: s.chip for s in specs})
        self.ray_node_ids = resolve_nodes(self.n_nodes, node_ids)
        admit(self.node_of, self.ray_node_ids, plan.router_node)
        self.pool = core_pool()
        self.actors: dict = {}
        self.routers: list = []

        def pin(n):
            return NodeAffinitySchedulingStrategy(self.ray_node_ids[n], soft=False)

        # This run's key for the router streams (transport module docstring): it reaches the
        # actors only as call arguments, never a socket, file or environment variable.
        secret = secrets.token_bytes(32)
        t0 = time.monotonic()
        try:
            several = plan.n_routers > 1
            self.routers = [RouterActor.options(scheduling_strategy=pin(plan.router_node[r])).remote(
                plan.tables[r], plan.cores[r], timeout_s, r, plan.n_routers,
                plan.router_of if several else None, plan.router_node if several else None, secret)
                for r in range(plan.n_routers)]
            self.router = self.routers[0]
            # pooled core actors, else new blank ones, all requested at once (a process each: the slow part)
            taken, self._reused = {}, set()
            for n in range(self.n_nodes):
                cids = [c for c in self.core_ids if self.node_of[c] == n]
                actors, reused = self.pool.take(self.ray_node_ids[n], len(cids))
                taken.update(zip(cids, actors))
                self._reused.update(cids[:reused])
            self.actors = {cid: taken[cid] for cid in self.core_ids}
            deadline = t0 + placement_timeout_s
            addresses = self._place([r.address.remote() for r in self.routers], placement_timeout_s,
                                    "start the routers")
            if several:
                self._place([r.start.remote({m: addresses[m] for m in range(plan.n_routers) if m != n})
                             for n, r in enumerate(self.routers)], max(0.0, deadline - time.monotonic()),
                            "start the routers")
            self.actual_nodes = self._load(addresses, secret, placement_timeout_s, t0,
                                           StderrProgress() if progress is None else progress)
            router_nodes = self._place([r.node.remote() for r in self.routers],
                                       max(1.0, deadline - time.monotonic()), "locate the routers")
        except BaseException:
            self.failed = self.failed or "start-up failed"
            self.close()
            raise
        self.startup_s = time.monotonic() - t0
        wrong = [f"core {cid} runs on Ray node {got}, not on its node {self.node_of[cid]} = "
                 f"{self.ray_node_ids[self.node_of[cid]]}" for cid, got in self.actual_nodes.items()
                 if got != self.ray_node_ids[self.node_of[cid]]]
        wrong += [f"router {r} runs on Ray node {got}, not on {self.ray_node_ids[plan.router_node[r]]}"
                  for r, got in enumerate(router_nodes) if got != self.ray_node_ids[plan.router_node[r]]]
        if wrong:       # hard node affinity makes this impossible; checked, not assumed
            self.failed = wrong[0]
            self.close()
            raise MappingError(wrong[0])

    def _load(self, addresses: list, secret: bytes, timeout_s: float, t0: float, progress) -> dict[int, str]:
        """Load every core actor with its spec and connect it to its router, reporting
        progress as they come up; the Ray node of each core.  A pooled actor that died while idle is
        replaced by a new one, once; anything else, or ``timeout_s`` from ``t0``, is a MappingError."""
        ray = self._ray
        total = len(self.actors)

        def load(cid):
            r = self.plan.router_of[cid]
            return self.actors[cid].load.remote(self.specs[cid], addresses[r], self.timeout_s, secret, r)

        refs = {load(cid): cid for cid in self.core_ids}
        out: dict[int, str] = {}
        replaced: set[int] = set()
        pending = list(refs)
        progress(0, total, time.monotonic() - t0)
        while pending:
            left = t0 + timeout_s - time.monotonic()
            if left <= 0:
                raise MappingError(
                    f"only {len(out)} of {total} core actors were up and connected within "
                    f"cluster.placement_timeout_s = {timeout_s} s on the nodes asked for ({self.n_nodes}: "
                    f"{self.ray_node_ids}); alive: {_describe_nodes(cluster_nodes())}")
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=min(1.0, left))
            for ref in done:
                cid = refs.pop(ref)
                try:
                    out[cid] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    if not isinstance(e, ray.exceptions.RayActorError) or cid not in self._reused or cid in replaced:
                        raise self._start_error(e, "start and connect the cores") from None
                    # an idle pooled actor died (its process was killed, or its node restarted): a new one
                    replaced.add(cid)
                    self._reused.discard(cid)
                    self.pool.kill([self.actors[cid]])
                    self.actors[cid] = self.pool.start_new(self.ray_node_ids[self.node_of[cid]])
                    ref = load(cid)
                    refs[ref] = cid
                    pending.append(ref)
            progress(len(out), total, time.monotonic() - t0)
        return {cid: out[cid] for cid in self.core_ids}

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
            raise self._start_error(e, what) from None

    def _start_error(self, e: Exception, what: str) -> SpinnrayError:
        """A failed start-up call: the spinnray error inside it (a core over its budget), else a
        MappingError naming the nodes."""
        cause = _unwrap(e)
        if isinstance(cause, SpinnrayError):
            return cause
        return MappingError(f"could not {what} on the nodes asked for ({self.n_nodes}: {self.ray_node_ids}): "
                            f"{_first_line(e)}; alive: {_describe_nodes(cluster_nodes())}")

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

    def run_backward(self, steps: int, batch: int, scale: float, levels: dict[int, int] | None = None,
                     k: int = 1) -> None:
        self._check_alive()
        layers = self._layers(levels)
        self._configure(steps if levels is not None else k, batch, steps, True, levels is not None)
        out = self._gather({a.backward.remote(steps, scale, layers.get(cid), k): cid
                            for cid, a in self.actors.items()}, "backward run")
        self._events.update({cid: ev for cid, (_, ev) in out.items()})
        self._strict(sum(p for p, _ in out.values()))

    def events_sent(self) -> int:
        """Spike and error events the cores have sent so far, as of the last run
        (returned by the runs themselves: no extra Ray call)."""
        return sum(self._events.values())

    def _strict(self, core_problems: int) -> None:
        """Fetch the full reports only when a core or a router saw a problem."""
        if self.strict and core_problems + sum(self._ray.get([r.problems.remote() for r in self.routers])):
            check_strict(*self.reports())

    def call(self, method, args: dict[int, tuple] | None = None, cores=None) -> dict:
        """``method(core, *args[core])`` inside each core actor (all, or ``cores``): results by
        core id.  ``method`` is a function of the core's class, e.g. ``LearningCore.gradients``."""
        self._check_alive()
        ids = self.core_ids if cores is None else list(cores)
        return self._gather({self.actors[cid].call.remote(method, (args or {}).get(cid, ())): cid for cid in ids},
                            f"call {getattr(method, '__qualname__', method)}()")

    def _check_alive(self) -> None:
        if self.failed:
            raise TransportError(f"the ray backend failed earlier and cannot run again (build a new Simulator): "
                                 f"{self.failed}")

    def _gather(self, refs: dict, what: str) -> dict:
        """Results by core id; the first failure stops every router and is raised."""
        ray = self._ray
        out, pending = {}, list(refs)
        self._busy = True
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                out[refs[done[0]]] = ray.get(done[0])
            except ray.exceptions.RayError as e:
                raise self._failure(refs, done[0], e, pending, what) from None
        self._busy = False
        return out

    def _where(self, cid: int) -> str:
        n = self.node_of[cid]
        return (f"chip {self.specs[cid].chip}, router {self.plan.router_of[cid]}, node {n} = "
                f"Ray node {self.ray_node_ids[n][:12]}")

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
            at = states[self.plan.router_of[died[0]]][1] or next((a for _, a, _ in states if a), None)
            msg = (f"core {died[0]} ({self._where(died[0])}) died during the {what}"
                   f"{f', at {at}' if at else ''}"
                   f"{f' (cores {died[1:]} too)' if len(died) > 1 else ''}: {_first_line(errors[died[0]])}")
        elif any(late is not None for _, _, late in states):
            # a core that is alive but sent nothing (hung or stopped): its router waited for it and
            # names it; the cores waiting behind it failed only because the router gave up
            n, (_, at, cid) = next((n, s) for n, s in enumerate(states) if s[2] is not None)
            msg = (f"core {cid} ({self._where(cid)}) sent nothing to router {n} within "
                   f"cluster.round_timeout_s = {self.timeout_s} s during the {what}, at {at}: the core hangs or "
                   "its process is stopped")
        else:
            cid = min(causes)
            msg = f"core {cid} ({self._where(cid)}) in the {what}: {causes[cid]}"
        # The routers' own errors, not the echoes of our abort: a router that
        # was aborted closed its streams, and its peers saw that as a lost router.
        aborted = [n for n, (e, _, _) in enumerate(states) if e and "aborted:" in e]
        for e, _, _ in states:
            if e and "aborted:" not in e and not any(f"lost {self._router_name(n)}" in e for n in aborted):
                msg += f"; {e}"
        self.failed = msg
        return TransportError(msg)

    def _abort_routers(self, reason: str) -> None:
        refs = [r.abort.remote(reason) for r in self.routers]
        self._ray.wait(refs, num_returns=len(refs), timeout=5.0)

    def _router_states(self) -> list[tuple[str | None, str | None, int | None]]:
        """``(error, round it is at, late core)`` of each router; a dead or silent router
        is an error of its own."""
        ray = self._ray
        refs = [r.state.remote() for r in self.routers]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=5.0)
        out = []
        for n, ref in enumerate(refs):
            if ref not in done:
                out.append((f"{self._router_name(n)} did not answer within 5 s", None, None))
                continue
            try:
                out.append(tuple(ray.get(ref)))
            except ray.exceptions.RayError as e:
                out.append((f"{self._router_name(n)} is dead: {_first_line(e)}", None, None))
        return out

    def _router_name(self, r: int) -> str:
        return f"router {r} (node {self.plan.router_node[r]})"

    def _router_errors(self) -> list[str]:
        return [e for e, _, _ in self._router_states() if e]

    def reports(self) -> tuple[list[dict], list[dict]]:
        """Per-core reports (with ``node`` and ``ray_node_id``), one report per router."""
        ray = self._ray
        cores = with_nodes(ray.get([self.actors[c].report.remote() for c in self.core_ids]), self.node_of,
                            self.ray_node_ids, self.actual_nodes)
        routers = ray.get([r.report.remote() for r in self.routers])
        return cores, with_links(routers, cores, self.chips)

    def close(self) -> None:
        """End the routers; the core actors go back to the pool emptied (:meth:`CoreActor.reset`
        runs before any later load, as an actor runs its calls in order), or, when this backend
        failed or a call was cut short, are killed."""
        for r in self.routers:
            try:
                self._ray.kill(r)
            except Exception:   # an actor that died already is fine to skip
                pass
        if self.failed is None and not self._busy:
            for n in range(self.n_nodes):
                mine = [a for cid, a in self.actors.items() if self.node_of[cid] == n]
                for a in mine:
                    a.reset.remote()
                self.pool.give_back(self.ray_node_ids[n], mine)
        else:
            self.pool.kill(self.actors.values())
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


