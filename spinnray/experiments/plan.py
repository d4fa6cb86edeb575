"""``plan=true``: where a run would go on the chip, without running it.

The run is mapped exactly as it would be trained or run (:func:`spinnray.simulator.place`, with
the rule's cores and each replica's shard, :func:`spinnray.experiments.trainer.layout`): its cores,
copies, chips and nodes, each population's slices, and every core's memory by category against
``machine.sram_per_pe_bytes`` (a spike-source core's with the input spikes of one run, which it
holds once they arrive).  Nothing starts (no Ray, no core, no training); the data set is
loaded only for its shape.  A recipe that does not fit stops with the mapper's BudgetError, which
names the slice, its bytes by category and what to change.  ``plan.json`` holds the figures, the
log a table.  What grows with the data during a run is the mapper's allowance or missing: EventProp's
spike records (the plan holds the mapper's allowance; a core checks its real records after every
run) and a layered run's input events (not in the plan; a core checks them when they arrive).
"""

from __future__ import annotations

import logging
from pathlib import Path

from spinnray.errors import BudgetError, ConfigError
from spinnray.experiments.forward import forward_network
from spinnray.experiments.setup import Run
from spinnray.experiments.train import prepare
from spinnray.experiments.trainer import layout
from spinnray.machine.counters import memory_summary
from spinnray.model.neurons import SpikeSource
from spinnray.report.headline import CHIP_SRAM
from spinnray.report.runs import human_bytes
from spinnray.simulator import place

__all__ = ["run_plan", "plan_text"]

log = logging.getLogger("spinnray")


def run_plan(run: Run, out_dir: Path, scenario: str) -> dict:
    """The mapping of ``run`` as ``plan.json`` holds it (and logged as :func:`plan_text`)."""
    cfg = run.config
    if run.rule.runner == "dense":
        raise ConfigError(f"plan=true with learning.rule = {run.rule.name}: it trains in one process, on no emulated "
                          "cores; there is nothing to place (leave plan=false)")
    if run.rule.runner == "forward":
        net, parallel, learning = forward_network(run), cfg.parallel, None
        steps = run.network.steps
    else:
        data, learn, net = prepare(run)          # the data set is loaded for its shape only
        learning, parallel = layout(net, run.rule, learn, cfg.machine, cfg.parallel)
        steps = data.steps
    mapping = place(net, cfg.machine, parallel, cfg.cluster, learning)
    plan = describe(mapping, scenario, run, parallel.batch_size, with_inputs(mapping, steps, parallel.batch_size))
    for line in plan_text(plan).splitlines():
        log.info("%s", line)
    return plan


def with_inputs(mapping, steps: int, batch: int) -> list[dict[str, int]]:
    """Every core's memory as it runs: the mapper's figures plus, on a spike-source core, the
    input spikes of a run that the core holds (one byte per step, sample and neuron; the mapper
    does not know the run's length).  BudgetError for a core they would not fit, as the run
    would raise when the spikes arrive."""
    out = []
    for pl, mem in zip(mapping.placements, mapping.memory):
        if isinstance(mapping.network[pl.slice.population].model, SpikeSource):
            mem = {**mem, "input_spikes": steps * batch * pl.slice.n}
            used, budget = sum(mem.values()), mapping.machine.sram_per_pe_bytes
            if used > budget:
                raise BudgetError(f"population {pl.slice.population!r} slice [{pl.slice.lo}, {pl.slice.hi}) would hold "
                                  f"{used} bytes with the input spikes of {steps} steps x {batch} sample(s) "
                                  f"({', '.join(f'{k} {v}' for k, v in mem.items() if v)}); the budget is "
                                  f"machine.sram_per_pe_bytes = {budget} bytes per core: use more cores for "
                                  f"{pl.slice.population!r} (parallel.cores_per_population) or fewer samples per core")
        out.append(mem)
    return out


def describe(mapping, scenario: str, run: Run, batch: int, memory: list[dict[str, int]]) -> dict:
    """The plan's figures: totals, one entry per population (cores per copy, neurons per core,
    its largest core by category) and the largest core of all; ``memory`` per core."""
    machine, budget = mapping.machine, mapping.machine.sram_per_pe_bytes
    per_core = [sum(m.values()) for m in memory]
    populations = {}
    for name, info in mapping.populations().items():
        mine = [i for i, p in enumerate(mapping.placements) if p.slice.population == name]
        if not mine:                       # written by the host: no core
            populations[name] = info
            continue
        top = max(mine, key=lambda i: per_core[i])
        sizes = [mapping.placements[i].slice.n for i in mine if mapping.placements[i].replica == 0]
        populations[name] = {**info, "neurons_per_core": [min(sizes), max(sizes)],
                             "largest_core_bytes": per_core[top], "largest_core_by_category": memory[top]}
    top = max(range(len(per_core)), key=per_core.__getitem__)
    pl = mapping.placements[top]
    chips = sorted({p.chip for p in mapping.placements})
    entries = max(mapping.chip_entries.values(), default=0)
    return {
        "plan": True, "scenario": scenario, "kind": run.kind, "rule": run.rule.name,
        "cores": mapping.n_cores, "replicas": mapping.replicas, "cores_per_replica": mapping.n_cores // mapping.replicas,
        "samples_per_core": batch, "chips_used": len(chips), "pes_per_chip": machine.pes_per_chip,
        "nodes": mapping.nodes,
        "budget_bytes_per_core": budget, "chip_budget": budget == CHIP_SRAM,
        "largest_core": {"core_id": pl.core_id, "chip": pl.chip, "pe": pl.pe, "population": pl.slice.population,
                         "slice": [pl.slice.lo, pl.slice.hi], "bytes": per_core[top],
                         "utilisation": per_core[top] / budget, "by_category": memory[top]},
        "routing_entries_per_chip_max": entries, "routing_entries_per_chip_limit": machine.routing_entries_per_chip,
        "populations": populations,
        "memory": memory_summary(memory, budget),
        "mapping": mapping.summary(),        # as in metrics.json: a sweep of plans compares like one of runs
    }


def plan_text(plan: dict) -> str:
    """The plan as a few lines and a table, human units."""
    big, budget = plan["largest_core"], plan["budget_bytes_per_core"]
    copies = (f" = {plan['replicas']} copies x {plan['cores_per_replica']} cores" if plan["replicas"] > 1 else "")
    lines = [f"plan of {plan['scenario']} ({plan['rule']}): {plan['cores']} cores{copies} on {plan['chips_used']} "
             f"chip(s) of {plan['pes_per_chip']} PEs, {plan['nodes']} node(s); {plan['samples_per_core']} sample(s) "
             f"per core in lockstep",
             f"{'population':<14} {'model':<7} {'neurons':>8} {'cores/copy':>10} {'neurons/core':>12} "
             f"{'largest core':>13} {'of budget':>9}"]
    for name, p in plan["populations"].items():
        if not p["cores"]:
            lines.append(f"{name:<14} {p['model']:<7} {p['neurons']:>8} {'-':>10} {'(host)':>12} {'-':>13} {'-':>9}")
            continue
        lo, hi = p["neurons_per_core"]
        lines.append(f"{name:<14} {p['model']:<7} {p['neurons']:>8} {p['cores']:>10} "
                     f"{(str(lo) if lo == hi else f'{lo}-{hi}'):>12} {human_bytes(p['largest_core_bytes']):>13} "
                     f"{100 * p['largest_core_bytes'] / budget:>8.1f}%")
    cats = ", ".join(f"{k} {human_bytes(v)}" for k, v in sorted(big["by_category"].items(), key=lambda kv: -kv[1])
                     if v)
    lines.append(f"largest core: {big['population']}[{big['slice'][0]}, {big['slice'][1]}) on chip {big['chip']} "
                 f"PE {big['pe']}, {human_bytes(big['bytes'])} of {human_bytes(budget)} "
                 f"({100 * big['utilisation']:.1f} %): {cats}")
    if not plan["chip_budget"]:
        lines.append(f"machine.sram_per_pe_bytes = {budget} is not the chip's {human_bytes(CHIP_SRAM)}: "
                     "this plan is beyond SpiNNaker2")
    lines.append(f"routing entries: at most {plan['routing_entries_per_chip_max']} per chip of "
                 f"{plan['routing_entries_per_chip_limit']}")
    return "\n".join(lines)
