"""The report of one run: ``report.md``, ``report.html`` and PNG plots written into its directory.

Sections: key figures, learning curves, per-layer and per-phase events against the dense equivalent,
traffic between cores and by link class (needs ``cores.json`` and ``routers.json``), memory per core
against the budget, routing-table occupancy per chip, and a spike raster when ``raster.npz`` is present.
Every number is read from ``metrics.json`` (the table says which key), or from ``cores.json`` /
``routers.json`` where the text says so; a ratio or sum computed here is marked *(derived)*.  Floats
are shown to 6 significant digits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from spinnray.errors import DataError
from spinnray.machine.counters import SCHEMA_VERSION, bytes_by_link_class, link_class
from spinnray.report.document import Document
from spinnray.report.plots import (
    plot_learning,
    plot_link_classes,
    plot_matrix,
    plot_memory,
    plot_phases,
    plot_raster,
    plot_routing,
)
from spinnray.report.runs import RASTER_FILE, RunData, flatten, fmt, load_run, unit_of

log = logging.getLogger("spinnray")

PHASES = (
    # (label, per-population key of events per sample, what it counts)
    ("forward spikes", "spike_events_per_sample", "spike events sent per sample"),
    ("backward error events", "error_events_about_per_sample",
     "error events sent about this population's spikes, per training sample"),
    ("learning signals", "learning_signals_per_sample",
     "learning-signal events received by this population's cores, per training sample"),
)

# --------------------------------------------------------------------------- the run report
def _population_sizes(m: dict) -> dict[str, int]:
    slices = m.get("mapping", {}).get("slices", {})
    return {name: max(hi for _, hi in s) for name, s in slices.items() if s}


def _phase_rows(run: RunData) -> tuple[list[dict], str]:
    """Rows (population, phase, events, dense, keys) and a note on where they come from."""
    m = run.metrics
    rows = []
    if isinstance(m.get("layers"), dict):
        for pop, d in m["layers"].items():
            for label, key, _ in PHASES:
                if key in d and "dense_per_sample" in d:
                    rows.append({"population": pop, "phase": label, "events": d[key], "dense": d["dense_per_sample"],
                                 "keys": f"`layers.{pop}.{key}` / `layers.{pop}.dense_per_sample`"})
        return rows, ("Events and dense equivalents are read from `metrics.json` `layers`; the ratio is "
                      "*(derived)*: events / dense. " + "; ".join(f"{label}: {what}" for label, _, what in PHASES))
    if run.cores is None or not isinstance(m.get("samples"), int) or not m["samples"] or "steps" not in m:
        return [], "This run records no `layers` block (and no `cores.json` with `samples` to derive it from)."
    sizes = _population_sizes(m)
    for pop, size in sizes.items():
        sent = sum(c["counters"]["spike_events_sent"] for c in run.cores if c.get("population") == pop)
        errs = sum(c["counters"]["error_events_sent"] for c in run.cores if c.get("population") == pop)
        dense = m["steps"] * size
        rows.append({"population": pop, "phase": "forward spikes", "events": sent / m["samples"], "dense": dense,
                     "keys": "*(derived)* cores.json `spike_events_sent` / `samples`; `steps` x neurons"})
        if errs:
            rows.append({"population": pop, "phase": "error events sent", "events": errs / m["samples"],
                         "dense": dense, "keys": "*(derived)* cores.json `error_events_sent` / `samples`"})
    return rows, ("This run's `metrics.json` has no `layers` block, so events per sample are *(derived)*: the "
                  "`spike_events_sent` counters of each population's cores in `cores.json`, divided by `samples`; "
                  "dense = `steps` x neurons (neurons from `mapping.slices`). A population without outgoing "
                  "projections sends no events.")


def build_report(run_dir, *, html_file: bool = True) -> dict[str, Path]:
    """Write ``report.md`` (and ``report.html``) and the PNGs into ``run_dir``.

    Returns ``{file name: path}`` of everything written.  Raises
    :class:`DataError` (naming the path) when ``metrics.json`` is missing or
    corrupt, or a present ``cores.json`` / ``routers.json`` / ``raster.npz`` is.
    """
    run = load_run(run_dir)
    out = run.path
    m = run.metrics
    written: dict[str, Path] = {}
    doc = Document()
    doc.h(1, f"Run report: {run.scenario} ({run.label})")
    doc.p(f"Run directory `{out.resolve()}`; `metrics.json` schema version {m['schema_version']}. Every number "
          "below is read from `metrics.json` (the table names the key) or from `cores.json` / `routers.json` "
          "where the text says so; ratios and sums computed by the report are marked *(derived)*. Floats are "
          "shown to 6 significant digits.")
    if m["schema_version"] != SCHEMA_VERSION:
        doc.p(f"**Warning:** this report was written for schema version {SCHEMA_VERSION}; the run has "
              f"version {m['schema_version']}, so some keys may mean something else.")
    for name in ("cores", "routers"):
        if getattr(run, name) is None:
            doc.p(f"**Note:** no `{name}.json` in this run directory; the sections that need it are left out.")

    doc.h(2, "Key figures")
    doc.table(["metrics.json key", "value", "unit"], [[f"`{k}`", v, unit_of(k)] for k, v in flatten(m)])

    if isinstance(m.get("history"), list) and m["history"]:
        doc.h(2, "Learning")
        cols = ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"]
        cols = [k for k in cols if any(k in h for h in m["history"])] + sorted(
            {k for h in m["history"] for k in h if k not in cols and not isinstance(h[k], (dict, list))})
        doc.p("Per epoch, from `metrics.json` `history` (accuracies are fractions; the plot shows %; "
              "empty = not measured in that epoch).")
        doc.table(cols, [[h[k] if k in h else "" for k in cols] for h in m["history"]])
        written["learning_curves.png"] = plot_learning(run, out / "learning_curves.png")
        doc.img("learning_curves.png", "loss and accuracy per epoch")

    doc.h(2, "Spike raster")
    if run.raster is not None:
        r = run.raster
        doc.p(f"Sample {r.sample} from `{RASTER_FILE}`: {r.steps} steps of {fmt(r.dt_ms)} ms.")
        doc.table(["population", "neurons", "spikes in this sample"],
                  [[name, r.sizes[name], int(t.size)] for name, (t, _) in r.spikes.items()])
        written["raster.png"] = plot_raster(run, out / "raster.png")
        doc.img("raster.png", "spike raster of one sample")
    else:
        doc.p(f"No `{RASTER_FILE}` in this run directory (see `spinnray.report.runs.save_raster`).")

    doc.h(2, "Events per sample against the dense equivalent")
    rows, note = _phase_rows(run)
    doc.p(note)
    if rows:
        doc.table(["population", "phase", "events per sample", "dense per sample (T x neurons)",
                   "ratio (derived)", "source"],
                  [[r["population"], r["phase"], r["events"], r["dense"],
                    fmt(r["events"] / r["dense"]) if r["dense"] else "n/a", r["keys"]] for r in rows])
        written["events_per_sample.png"] = plot_phases(run, rows, out / "events_per_sample.png")
        doc.img("events_per_sample.png", "events per sample against dense, log scale")
    t = m["traffic"]
    doc.p(f"Whole run: `traffic.spike_events_sent` = {fmt(t.get('spike_events_sent'))} against "
          f"`traffic.dense_equivalent_events` = {fmt(t.get('dense_equivalent_events'))}, "
          f"`traffic.sparsity` = {fmt(t.get('sparsity'))}.")

    if run.cores is not None and run.routers is not None:
        _traffic_section(run, doc, written)
    _memory_section(run, doc, written)
    _routing_section(run, doc, written)

    if isinstance(m.get("machine"), dict):
        doc.h(2, "Machine")
        doc.table(["metrics.json key", "value"], [[f"`machine.{k}`", v] for k, v in m["machine"].items()])

    (out / "report.md").write_text(doc.markdown())
    written["report.md"] = out / "report.md"
    if html_file:
        (out / "report.html").write_text(doc.html(f"{run.scenario} | {run.label}", out))
        written["report.html"] = out / "report.html"
    return written


def _core_names(run: RunData) -> tuple[int, list[str]]:
    n = max([c["core_id"] for c in run.cores or []] + [len(run.metrics["memory"].get("per_core_bytes", [])) - 1]) + 1
    names = [""] * n
    for c in run.cores or []:
        names[c["core_id"]] = str(c.get("population", ""))
    return n, names


def _traffic_section(run: RunData, doc: Document, written: dict) -> None:
    m, out = run.metrics, run.path
    n, names = _core_names(run)
    by_id = {c["core_id"]: c for c in run.cores}
    matrix = np.zeros((n, n))
    links = []
    for r in run.routers:
        for name, (events, nbytes) in r["counters"].get("links", {}).items():
            s, d = (int(x) for x in name.split("->"))
            if max(s, d) >= n:
                raise DataError(f"{out / 'routers.json'}: link {name!r} names a core beyond the {n} cores "
                                "of cores.json")
            matrix[s, d] += nbytes
            links.append((s, d, events, nbytes))
    doc.h(2, "Traffic between cores")
    doc.p(f"From `routers.json` `links` ({len(run.routers)} router(s)): bytes the router sent from each source "
          "core's packets to each destination core.")
    if links:
        written["traffic_matrix.png"] = plot_matrix(run, matrix, names, out / "traffic_matrix.png")
        doc.img("traffic_matrix.png", "traffic matrix, bytes per source and destination core")
        top = sorted(links, key=lambda x: -x[3])[:10]
        doc.p(f"The {len(top)} busiest of {len(links)} links (from `routers.json`):")
        doc.table(["source core", "destination core", "events", "bytes", "link class"],
                  [[f"{s} ({names[s]})", f"{d} ({names[d]})", e, b, link_class(by_id[s], by_id[d])]
                   for s, d, e, b in top])
    try:
        classes = m["traffic"]["bytes_by_link_class"]
        source = "`metrics.json` `traffic.bytes_by_link_class`"
    except KeyError:
        classes = bytes_by_link_class(run.routers, run.cores)
        source = ("*(derived)*: `routers.json` `links` summed by class with `spinnray.machine.counters.link_class` on the "
                  "`chip` and `node` of each core in `cores.json` (no `node` = the one node of this run)")
    doc.h(3, "Bytes per link class")
    total = sum(c["bytes"] for c in classes.values())
    doc.p(f"From {source}. Classes: same core (a core's events routed back to it), same chip, same node "
          f"(another chip), across nodes. Their total, {fmt(total)} bytes, "
          + ("equals" if total == m["traffic"].get("bytes") else "**differs from**")
          + f" `traffic.bytes` = {fmt(m['traffic'].get('bytes'))}.")
    doc.table(["link class", "events", "bytes", "share of bytes (derived)"],
              [[k, v["events"], v["bytes"], fmt(v["bytes"] / total) if total else "n/a"] for k, v in classes.items()])
    written["link_classes.png"] = plot_link_classes(run, classes, out / "link_classes.png")
    doc.img("link_classes.png", "bytes per link class")


def _memory_section(run: RunData, doc: Document, written: dict) -> None:
    mem, out = run.metrics["memory"], run.path
    totals = mem.get("per_core_bytes")
    budget = mem.get("budget_bytes_per_core")
    doc.h(2, "Memory per core")
    if not isinstance(totals, list) or not totals:
        doc.p("This run's `metrics.json` has no `memory.per_core_bytes`.")
        return
    _, names = _core_names(run)
    per_core = [{} for _ in totals]
    for c in run.cores or []:
        if c["core_id"] < len(per_core):
            per_core[c["core_id"]] = dict(c.get("memory", {}))
    if run.cores is None:
        per_core = [{"total": v} for v in totals]
    doc.p(f"Bytes per core from `memory.per_core_bytes`, against `memory.budget_bytes_per_core` = {fmt(budget)}; "
          f"largest `memory.per_core_max_bytes` = {fmt(mem.get('per_core_max_bytes'))}, "
          f"`memory.max_utilisation` = {fmt(mem.get('max_utilisation'))}. Categories per core are from "
          "`cores.json` `memory`; the utilisation column is *(derived)*: bytes / budget.")
    mismatch = [i for i, (t, pc) in enumerate(zip(totals, per_core)) if run.cores is not None and sum(pc.values()) != t]
    if mismatch:
        doc.p(f"**Warning:** cores {mismatch} have category bytes in `cores.json` that do not sum to "
              "`memory.per_core_bytes`.")
    cats = []
    for pc in per_core:
        cats += [k for k in pc if k not in cats]
    doc.table(["core", "population", "bytes", "utilisation (derived)"] + cats,
              [[i, names[i] if i < len(names) else "", t, fmt(t / budget) if budget else "n/a"]
               + [pc.get(k, 0) for k in cats] for i, (t, pc) in enumerate(zip(totals, per_core))])
    if isinstance(mem.get("by_category_bytes"), dict):
        doc.p("Summed over cores (`memory.by_category_bytes`):")
        doc.table(["category", "bytes"], [[k, v] for k, v in mem["by_category_bytes"].items()])
    written["memory_per_core.png"] = plot_memory(run, per_core, totals, names, budget, out / "memory_per_core.png")
    doc.img("memory_per_core.png", "memory per core by category against the budget")


def _routing_section(run: RunData, doc: Document, written: dict) -> None:
    m, out = run.metrics, run.path
    per_chip = m.get("mapping", {}).get("routing_entries_per_chip")
    capacity = m.get("machine", {}).get("routing_entries_per_chip")
    doc.h(2, "Routing-table occupancy per chip")
    if not isinstance(per_chip, dict) or not per_chip:
        doc.p("This run's `metrics.json` has no `mapping.routing_entries_per_chip`.")
        return
    chips = sorted(per_chip, key=lambda c: int(c) if str(c).isdigit() else c)
    used = [per_chip[c] for c in chips]
    doc.p(f"Entries used per chip from `mapping.routing_entries_per_chip`, capacity "
          f"`machine.routing_entries_per_chip` = {fmt(capacity)}; the occupancy column is *(derived)*. "
          f"Whole table: `mapping.routing_entries` = {fmt(m['mapping'].get('routing_entries'))}.")
    doc.table(["chip", "entries used", "capacity", "occupancy (derived)"],
              [[c, u, capacity, fmt(u / capacity) if capacity else "n/a"] for c, u in zip(chips, used)])
    written["routing_occupancy.png"] = plot_routing(run, chips, used, capacity, out / "routing_occupancy.png")
    doc.img("routing_occupancy.png", "routing entries used per chip against capacity")


def report_after_run(out_dir) -> None:
    """Build the report of a run that just wrote ``metrics.json``; a failure is
    logged as an error (the run's data is already on disk), never raised."""
    try:
        files = build_report(out_dir)
        log.info("wrote %s (%d files)", Path(out_dir) / "report.md", len(files))
    except Exception:                     # the run itself succeeded: log, never raise
        log.exception("the report of %s failed; metrics.json is written: rerun "
                      "`python -m spinnray.report %s`", out_dir, out_dir)
