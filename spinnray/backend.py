"""Run cores and routers in-process (``local``) or as Ray actors (``ray``).

This is the only module that imports Ray.  Both backends drive the same
:class:`~spinnray.core.Core` and :class:`~spinnray.router.Router` objects
through the same rounds; only the carrier differs:

* ``local``: one process; each round calls every core's ``run_block``, the
  router's ``route`` and every core's ``deliver`` in turn.
* ``ray``: every core is a Ray actor (``num_cpus=0``, so any number fit on
  two CPUs) and so is the router.  A run is one Ray call per core; inside it
  the rounds travel over persistent TCP streams through the router actor
  (:mod:`spinnray.transport`), because a Ray call per message costs about
  0.7 ms here and a round must cost far less (DESIGN.md section 4).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from .core import CoreSpec, make_core
from .errors import PacketError, RoutingError, SpinnrayError, TransportError
from .router import Router, RoutingTable
from .transport import CoreLink, RouterServer

__all__ = ["LocalBackend", "RayBackend", "make_backend", "ensure_ray", "rounds"]

log = logging.getLogger(__name__)


def rounds(steps: int, k: int):
    """``(t0, length)`` of each exchange round of a run of ``steps`` steps."""
    for t0 in range(0, steps, k):
        yield t0, min(k, steps - t0)


def _check_strict(core_reports: list[dict], router_reports: list[dict]) -> None:
    """Raise on anything dropped or rejected (it was counted either way)."""
    reasons = [r for rep in router_reports + core_reports for r in rep["reasons"]]
    dropped = sum(rep["counters"]["dropped"] for rep in router_reports + core_reports)
    rejected = sum(rep["counters"]["rejected"] for rep in router_reports + core_reports)
    if rejected:
        raise PacketError(f"{rejected} frame(s) rejected; first: {reasons[0] if reasons else '?'}")
    if dropped:
        raise RoutingError(f"{dropped} event(s) dropped; first: {reasons[0] if reasons else '?'}")


class LocalBackend:
    """All cores and the router in this process, stepped round by round."""

    name = "local"

    def __init__(self, specs: list[CoreSpec], table: RoutingTable, strict: bool = True):
        self.cores = [make_core(s) for s in specs]
        self.router = Router(table, [c.id for c in self.cores], max_offset=0, n_batch=1)
        self.strict = strict

    def run(self, steps: int, k: int, batch: dict[int, int], inputs: dict[int, np.ndarray],
            record: tuple[str, ...]) -> dict[int, dict[str, np.ndarray]]:
        """One forward run; ``batch`` gives each core's number of samples."""
        for c in self.cores:
            c.reset(steps, batch[c.id], inputs.get(c.id), record)
        self.router.configure(max_offset=k - 1, n_batch=max(batch.values()))
        for t0, kk in rounds(steps, k):
            inbox = {c.id: c.run_block(t0, kk) for c in self.cores}
            out = self.router.route(inbox)
            for c in self.cores:
                c.deliver(out[c.id], t0, kk)
        for c in self.cores:
            c.finish()
        if self.strict:
            _check_strict(*self.reports())
        return {c.id: c.recorded for c in self.cores}

    def run_backward(self, steps: int, batch: int, scale: float) -> None:
        """Reverse rounds i = steps-1 .. 0 carrying error events (EventProp)."""
        for c in self.cores:
            c.begin_backward(steps, scale)
        self.router.configure(max_offset=0, n_batch=batch)
        for i in reversed(range(steps)):
            inbox = {c.id: c.backward_block(i) for c in self.cores}
            out = self.router.route(inbox)
            for c in self.cores:
                c.deliver_errors(out[c.id], i)
        if self.strict:
            _check_strict(*self.reports())

    def call(self, method: str, args: dict[int, tuple] | None = None, cores=None) -> dict:
        """``method(*args[core])`` on each core (all, or ``cores``); results by core id."""
        ids = [c.id for c in self.cores] if cores is None else list(cores)
        by_id = {c.id: c for c in self.cores}
        return {cid: getattr(by_id[cid], method)(*(args or {}).get(cid, ())) for cid in ids}

    def reports(self) -> tuple[list[dict], list[dict]]:
        cores = [c.report() for c in self.cores]
        router = {"router_id": 0, "node": "local", "counters": self.router.counters.as_dict(),
                  "reasons": list(self.router.reasons)}
        return cores, [router]

    def close(self) -> None:
        pass


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join) Ray once per process.

    ``address=None`` starts an embedded local instance; ``"auto"`` or
    ``"ray://host:port"`` join an existing cluster.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs = dict(include_dashboard=False, log_to_driver=True, configure_logging=False)
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
    else:
        ray.init(address=address, **kwargs)


def _actor_classes():
    import ray

    @ray.remote(num_cpus=0)
    class CoreActor:
        """One emulated PE in its own process."""

        def __init__(self, spec: CoreSpec):
            self.core = make_core(spec)
            self.link: CoreLink | None = None

        def connect(self, address, timeout_s: float) -> None:
            self.link = CoreLink(self.core.id, tuple(address), timeout_s)

        def run(self, steps, k, batch, inputs, record):
            core = self.core
            core.reset(steps, batch, inputs, record)
            for t0, kk in rounds(steps, k):
                frames = core.run_block(t0, kk)
                core.deliver(self.link.exchange(frames, t0), t0, kk)
            core.finish()
            return core.recorded, core.problems()

        def backward(self, steps, scale):
            core = self.core
            core.begin_backward(steps, scale)
            for i in reversed(range(steps)):
                core.deliver_errors(self.link.exchange(core.backward_block(i), i), i)
            return core.problems()

        def call(self, method, args):
            return getattr(self.core, method)(*args)

        def report(self) -> dict:
            return self.core.report()

        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    @ray.remote(num_cpus=0)
    class RouterActor:
        """The multicast router; its TCP server thread runs the rounds."""

        def __init__(self, table: RoutingTable, cores: list[int], timeout_s: float):
            self.router = Router(table, cores, max_offset=0, n_batch=1)
            host = ray.util.get_node_ip_address()
            self.server = RouterServer(self.router.route, cores, host, timeout_s)

        def address(self):
            return self.server.address

        def configure(self, k: int, batch: int) -> None:
            with self.server.lock:
                self.router.configure(max_offset=k - 1, n_batch=batch)

        def abort(self, reason: str) -> None:
            self.server.close(f"aborted: {reason}")

        def problems(self) -> int:
            c = self.router.counters
            return c.dropped + c.rejected + (1 if self.server.error else 0)

        def report(self) -> dict:
            with self.server.lock:
                return {"router_id": 0, "node": ray.get_runtime_context().get_node_id(),
                        "counters": self.router.counters.as_dict(),
                        "reasons": list(self.router.reasons), "error": self.server.error}

    return CoreActor, RouterActor


class RayBackend:
    """Each core a Ray actor, the router a Ray actor, rounds over TCP."""

    name = "ray"

    def __init__(self, specs: list[CoreSpec], table: RoutingTable, strict: bool = True,
                 timeout_s: float = 120.0):
        import ray

        if not ray.is_initialized():
            raise SpinnrayError("backend 'ray' needs Ray started: call spinnray.backend.ensure_ray() "
                                "or ray.init() first")
        self._ray = ray
        CoreActor, RouterActor = _actor_classes()
        self.strict = strict
        self.failed: str | None = None
        self.core_ids = [s.core_id for s in specs]
        self.router = RouterActor.remote(table, self.core_ids, timeout_s)
        self.actors = {s.core_id: CoreActor.remote(s) for s in specs}
        address = ray.get(self.router.address.remote())
        try:
            ray.get([a.connect.remote(address, timeout_s) for a in self.actors.values()])
        except ray.exceptions.RayTaskError as e:
            self.close()
            raise _unwrap(e) from None

    def run(self, steps: int, k: int, batch: dict[int, int], inputs: dict[int, np.ndarray],
            record: tuple[str, ...]) -> dict[int, dict[str, np.ndarray]]:
        ray = self._ray
        self._check_alive()
        ray.get(self.router.configure.remote(k, max(batch.values())))
        refs = {a.run.remote(steps, k, batch[cid], inputs.get(cid), tuple(record)): cid
                for cid, a in self.actors.items()}
        out = self._gather(refs)
        self._strict(sum(p for _, p in out.values()))
        return {cid: rec for cid, (rec, _) in out.items()}

    def run_backward(self, steps: int, batch: int, scale: float) -> None:
        ray = self._ray
        self._check_alive()
        ray.get(self.router.configure.remote(1, batch))
        out = self._gather({a.backward.remote(steps, scale): cid for cid, a in self.actors.items()})
        self._strict(sum(out.values()))

    def _strict(self, core_problems: int) -> None:
        """Fetch the full reports only when a core or the router saw a problem."""
        if self.strict and core_problems + self._ray.get(self.router.problems.remote()):
            _check_strict(*self.reports())

    def call(self, method: str, args: dict[int, tuple] | None = None, cores=None) -> dict:
        ids = self.core_ids if cores is None else list(cores)
        return self._gather({self.actors[cid].call.remote(method, (args or {}).get(cid, ())): cid for cid in ids})

    def _check_alive(self) -> None:
        if self.failed:
            raise TransportError(f"the ray backend failed earlier and cannot run again: {self.failed}")

    def _gather(self, refs: dict) -> dict:
        """Results by core id; the first failure aborts the router and is raised."""
        ray = self._ray
        out, pending = {}, list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                out[refs[done[0]]] = ray.get(done[0])
            except ray.exceptions.RayError as e:
                # One core failed: the others would wait for its round until the
                # timeout.  Close the router's streams so they stop at once.
                cause = _unwrap(e)
                self.failed = f"core {refs[done[0]]}: {cause}"
                ray.get(self.router.abort.remote(self.failed))
                raise (cause if isinstance(cause, SpinnrayError) else TransportError(self.failed)) from None
        return out

    def reports(self) -> tuple[list[dict], list[dict]]:
        ray = self._ray
        cores = ray.get([self.actors[c].report.remote() for c in self.core_ids])
        return cores, [ray.get(self.router.report.remote())]

    def close(self) -> None:
        for a in list(self.actors.values()) + [self.router]:
            try:
                self._ray.kill(a)
            except Exception:   # an actor that died already is fine to skip
                pass
        self.actors = {}


def _unwrap(e: Exception) -> Exception:
    """The spinnray error inside a RayTaskError, if there is one."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, SpinnrayError) else e


def make_backend(name: str, specs: list[CoreSpec], table: RoutingTable, strict: bool = True,
                 timeout_s: float = 120.0):
    if name == "local":
        return LocalBackend(specs, table, strict)
    if name == "ray":
        return RayBackend(specs, table, strict, timeout_s)
    raise SpinnrayError(f"backend = {name!r}: expected 'local' or 'ray'")
