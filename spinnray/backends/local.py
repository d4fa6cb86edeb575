"""The ``local`` backend: every core and router in this process, stepped round by round.

Each round collects every core's frames (:func:`spinnray.machine.schedule.drive_lockstep`),
routes them through every router (one per chip or per node, as the ``ray`` backend runs them,
so results and counters are identical) and hands each core its frames.
"""

from __future__ import annotations

import numpy as np

from spinnray.backends.base import check_strict, router_plan, with_links, with_nodes
from spinnray.errors import SpinnrayError
from spinnray.machine.copies import fuse_copies, join_rows, split_rows
from spinnray.machine.core import Core, CoreSpec, build_core, invoke
from spinnray.machine.router import Router, RoutingTable
from spinnray.machine.schedule import TrainStep, backward_program, drive_lockstep, run_program

__all__ = ["LocalBackend"]


class LocalBackend:
    """All cores and routers in this process.

    ``node_of`` (core -> node index), ``router_of`` (core -> router index; None: one router
    per node) and ``tables`` (router -> routing table, :func:`spinnray.mapping.router_tables`)
    emulate the routers exactly as the ray backend runs them; by default everything is on one
    node with one router.  ``copies``: one core object steps every data-parallel copy of a slice
    (:mod:`spinnray.machine.copies`; lockstep runs; same results and reports as the copies apart).
    """

    name = "local"

    def __init__(self, specs: list[CoreSpec], table: RoutingTable, strict: bool = True, *,
                 node_of: dict[int, int] | None = None, tables: dict[int, RoutingTable] | None = None,
                 router_of: dict[int, int] | None = None, copies: bool = True):
        self.order = [s.core_id for s in specs]
        # the copies engine (spinnray.machine.copies): a replicated mapping whose every core class steps copies
        # (forward and e-prop cores; EventProp's step each copy apart)
        fuse = copies and any(s.replicas > 1 for s in specs) and all(
            (Core if s.learning is None else s.learning.core_class).steps_copies for s in specs)
        self.cores = [build_core(s) for s in (fuse_copies(specs) if fuse else specs)]
        self.by_id = {p.copy.core_id: c for c in self.cores for p in c.ports}
        self.ports = {c.id: [p.copy.core_id for p in c.ports] for c in self.cores if len(c.ports) > 1}
        self.port_index = {p.copy.core_id: r for c in self.cores for r, p in enumerate(c.ports)}
        self.plan = plan = router_plan(self.order, table, node_of, tables, router_of)
        self.node_of, self.n_nodes = plan.node_of, plan.n_nodes
        self.chips = plan.chips({s.core_id: s.chip for s in specs})
        several = plan.n_routers > 1
        self.routers = [Router(plan.tables[r], plan.cores[r], max_offset=0, n_batch=1, router_id=r,
                               node=plan.router_node[r], router_of=plan.router_of if several else None,
                               router_node=plan.router_node if several else None)
                        for r in range(plan.n_routers)]
        self.router = self.routers[0]
        self.strict = strict

    def _route(self, inbox: dict[int, list[bytes]]) -> dict[int, list[bytes]]:
        """One round through every router (two phases with several)."""
        if len(self.routers) == 1:
            return self.router.route(inbox)
        phase1 = [r.route_local({c: inbox[c] for c in r.cores}) for r in self.routers]
        out = {}
        for n, r in enumerate(self.routers):
            forwarded = {m: phase1[m][1][n] for m in range(len(self.routers)) if n in phase1[m][1]}
            out.update(r.deliver(phase1[n][0], r.route_forwarded(forwarded)))
        return out

    def _configure(self, max_offset: int, n_batch: int) -> None:
        for r in self.routers:
            r.configure(max_offset=max_offset, n_batch=n_batch)

    def _flush(self, ids: list[int]) -> None:
        for cid in ids:
            self.by_id[cid].flush()

    def run(self, steps: int, k: int, batch: dict[int, int], inputs: dict[int, np.ndarray],
            record: tuple[str, ...], levels: dict[int, int] | None = None,
            train: TrainStep | None = None) -> dict[int, dict[str, np.ndarray]]:
        """One forward run (:func:`spinnray.machine.schedule.run_program` on every core);
        ``batch`` gives each core's number of samples; ``levels`` (core -> level): the layered
        schedule; ``train``: then the reverse pass and the optimizer step."""
        n_levels = max(levels.values()) + 1 if levels is not None else 0
        if self.ports and levels is not None:
            raise SpinnrayError("the copies engine steps lockstep runs only (build LocalBackend with copies=False)")
        self._configure((steps if levels is not None else k) - 1, max(batch.values()))
        programs = {}
        for c in self.cores:
            ids = self.ports.get(c.id)
            b = batch[c.id] if ids is None else tuple(batch[i] for i in ids)
            x = inputs.get(c.id) if ids is None else join_rows([inputs.get(i) for i in ids])
            programs[c.id] = run_program(c, steps, k, b, x, record,
                                         (levels[c.id], n_levels) if levels is not None else None, train)
        results = drive_lockstep(programs, self._route, self._flush, self.ports)
        if self.strict:
            check_strict(*self.reports())
        out = {}
        for cid, (rec, _, _) in results.items():
            core = self.by_id[cid]
            for p in core.ports if cid in self.ports else ():
                out[p.copy.core_id] = split_rows(rec, p.lo, p.n)
            if cid not in self.ports:
                out[cid] = rec
        return out

    def run_backward(self, steps: int, batch: int, scale: float, levels: dict[int, int] | None = None,
                     k: int = 1) -> None:
        """The reverse pass of the last run (:func:`spinnray.machine.schedule.backward_program`),
        lockstep in rounds of ``k`` steps."""
        if self.ports and levels is not None:
            raise SpinnrayError("the copies engine steps lockstep runs only (build LocalBackend with copies=False)")
        n_levels = max(levels.values()) + 1 if levels is not None else 0
        self._configure(steps - 1 if levels is not None else k - 1, batch)
        programs = {c.id: backward_program(c, steps, scale, (levels[c.id], n_levels) if levels is not None else None,
                                           k)
                    for c in self.cores}
        drive_lockstep(programs, self._route, ports=self.ports)
        if self.strict:
            check_strict(*self.reports())

    def events_sent(self) -> int:
        """Spike and error events the cores have sent so far."""
        return sum(c.events_sent() for c in self.cores)

    def call(self, method, args: dict[int, tuple] | None = None, cores=None) -> dict:
        """``method(core, *args[core])`` on each core (all, or ``cores``): results by core id.
        ``method`` is a function of the core's class, e.g. ``LearningCore.gradients``."""
        ids = self.order if cores is None else list(cores)
        out = {}
        for cid in ids:
            core = self.by_id[cid]
            core.port = self.port_index[cid]
            out[cid] = invoke(core, method, (args or {}).get(cid, ()))
        return out

    def reports(self) -> tuple[list[dict], list[dict]]:
        """Per-core reports (with ``node``) and one report per router."""
        by_id = {rep["core_id"]: rep for c in self.cores for rep in c.port_reports()}
        cores = with_nodes([by_id[cid] for cid in self.order], self.node_of)
        routers = [{"router_id": r.router_id, "node": r.node, "counters": r.counters.as_dict(),
                    "reasons": list(r.reasons)} for r in self.routers]
        return cores, with_links(routers, cores, self.chips)

    def close(self) -> None:
        pass
