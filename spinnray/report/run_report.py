"""The report of one run: ``report.md``, ``report.html`` and PNG plots written into its directory.

It opens with the answer (:func:`spinnray.report.headline.headline`: the command, the network, the
learning rule, accuracy, spikes sent and delivered against dense, error events against spikes,
bytes, the largest core against its budget, time) and a table of contents.  Sections: learning
curves, one sample (raster, input, readout traces), per-layer and per-phase events against the
dense equivalent, traffic between cores and by link class (needs ``cores.json`` and
``routers.json``), memory per core against the budget, routing-table occupancy per chip, the
configuration (``config.json``), the machine, and at the end every ``metrics.json`` key with its
unit.  Every number is read from ``metrics.json`` (the table says which key), or from
``config.json`` / ``cores.json`` / ``routers.json`` where the text says so; a ratio or sum computed
here is marked *(derived)*.  Human units (KiB, ms, %) to three significant digits; the key table
keeps every value exact."""

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
from spinnray.report.headline import headline, spikes_text
from spinnray.report.runs import (
    RASTER_FILE,
    SAMPLE_FILE,
    RunData,
    count,
    flatten,
    flatten_all,
    fmt,
    human_bytes,
    load_run,
    pct,
    readable,
    unit_of,
)

log = logging.getLogger("spinnray")

PHASES = (
    # (label, per-population key of events per sample, what it counts)
    ("forward spikes", "spike_events_per_sample", "spike events sent per sample (training and test samples)"),
    ("backward error events", "error_events_about_per_sample",
     "error events sent about this population's spikes by the cores above it, per training sample"),
    ("learning signals", "learning_signals_per_sample",
     "learning-signal events received by this population's cores, per training sample"),
)
#: what the dense equivalent of a phase counts (learning signals: one per neuron per sample is the most a
#: readout sends; comparing them with T x N would overstate their sparsity by a factor T)
DENSE_OF = {"forward spikes": "T x N", "backward error events": "T x N", "learning signals": "N"}


# --------------------------------------------------------------------------- the run report
def _population_sizes(m: dict) -> dict[str, int]:
    slices = m.get("mapping", {}).get("slices", {})
    return {name: max(hi for _, hi in s) for name, s in slices.items() if s}


def _silent_note(name: str, info: dict, d: dict) -> str:
    why = ("a non-spiking readout: it sends no spikes" if not info["spiking"] else
           "it has no outgoing projections, so its spikes stay on its cores (they are in the raster)")
    errs = d.get("error_events_sent_per_sample")
    return f"`{name}` ({info['model']}, {count(info['neurons'])} neurons) is {why}" + (
        f"; it sends {fmt(errs)} error events per training sample (`layers.{name}.error_events_sent_per_sample`)"
        if errs else "")


def _phase_rows(run: RunData) -> tuple[list[dict], str]:
    """Rows (population, phase, events, dense, dense_of, keys) and a note on where they come from.

    A population that sends nothing by design (a non-spiking readout, or one without outgoing
    projections) gets a sentence instead of a bar against a dense count it could never send; a
    source never receives error events; e-prop's learning signals are the same events as the
    error events about the hidden population, shown once, against one per neuron per sample."""
    m = run.metrics
    pops = m.get("mapping", {}).get("populations") or {}
    receives = {post for p in pops.values() for post in p.get("sends_to", [])}
    rows, notes = [], []
    if isinstance(m.get("layers"), dict):
        steps = m.get("steps") or 0
        for pop, d in m["layers"].items():
            info = pops.get(pop)
            if info is not None and (not info["spiking"] or not info["sends_to"]):
                notes.append(_silent_note(pop, info, d))
                continue
            for label, key, _ in PHASES:
                if key not in d or "dense_per_sample" not in d:
                    continue
                if label == "backward error events" and (
                        d.get("learning_signals_per_sample") == d[key] or (info is not None and pop not in receives)):
                    continue            # the learning signals' row shows the same events; a source learns nothing
                dense = d["dense_per_sample"] / steps if label == "learning signals" and steps else d["dense_per_sample"]
                rows.append({"population": pop, "phase": label, "events": d[key], "dense": dense,
                             "dense_of": DENSE_OF[label],
                             "keys": f"`layers.{pop}.{key}` / `layers.{pop}.dense_per_sample`"
                                     + (" / `steps`" if label == "learning signals" else "")})
        note = ("Events and dense equivalents are read from `metrics.json` `layers`; the ratio is *(derived)*. "
                + "; ".join(f"{label}: {what}" for label, _, what in PHASES) + ". Dense: T x N = steps x neurons "
                "per sample (a dense exchange sends every neuron's state every step); learning signals against N, "
                "one per neuron per sample (e-prop's readout sends them at the end of a sample).")
    elif run.cores is None or not isinstance(m.get("samples"), int) or not m["samples"] or "steps" not in m:
        return [], "This run records no `layers` block (and no `cores.json` with `samples` to derive it from)."
    else:
        sizes = _population_sizes(m)
        for pop, size in sizes.items():
            info = pops.get(pop)
            if info is not None and (not info["spiking"] or not info["sends_to"]):
                notes.append(_silent_note(pop, info, {}))
                continue
            sent = sum(c["counters"]["spike_events_sent"] for c in run.cores if c.get("population") == pop)
            errs = sum(c["counters"]["error_events_sent"] for c in run.cores if c.get("population") == pop)
            dense = m["steps"] * size
            rows.append({"population": pop, "phase": "forward spikes", "events": sent / m["samples"], "dense": dense,
                         "dense_of": "T x N",
                         "keys": "*(derived)* cores.json `spike_events_sent` / `samples`; `steps` x neurons"})
            if errs:
                rows.append({"population": pop, "phase": "error events sent", "events": errs / m["samples"],
                             "dense": dense, "dense_of": "T x N",
                             "keys": "*(derived)* cores.json `error_events_sent` / `samples`"})
        note = ("This run's `metrics.json` has no `layers` block, so events per sample are *(derived)*: the "
                "`spike_events_sent` counters of each population's cores in `cores.json`, divided by `samples`; "
                "dense = T x N = `steps` x neurons (neurons from `mapping.slices`).")
    return rows, note + "".join(f" {n}." for n in notes)


def build_report(run_dir, *, html_file: bool = True) -> dict[str, Path]:
    """Write ``report.md`` (and ``report.html``) and the PNGs into ``run_dir``.

    Returns ``{file name: path}`` of everything written.  Raises
    :class:`DataError` (naming the path) when ``metrics.json`` is missing or
    corrupt, or a present ``config.json`` / ``cores.json`` / ``routers.json`` /
    ``raster.npz`` / ``sample.npz`` is.
    """
    run = load_run(run_dir)
    out = run.path
    m = run.metrics
    written: dict[str, Path] = {}
    doc = Document()
    doc.h(1, f"Run report: {run.scenario} ({run.label})")
    doc.p(f"Run directory `{out.resolve()}`. Sizes in KiB and MiB (1 KiB = 1,024 bytes), times in ms and s, "
          "ratios in %, to three significant digits; the exact value of every number is under "
          "[All metrics.json keys](#all-metricsjson-keys). A ratio or sum the report computes is marked *(derived)*.")
    if m["schema_version"] != SCHEMA_VERSION:
        doc.p(f"**Warning:** this report was written for schema version {SCHEMA_VERSION}; the run has "
              f"version {m['schema_version']}, so some keys may mean something else.")
    dense = m.get("backend") == "dense"          # one process: no cores, routers, raster or layers
    for name in ("cores", "routers"):
        if getattr(run, name) is None and not dense:
            doc.p(f"**Note:** no `{name}.json` in this run directory; the sections that need it are left out.")

    doc.h(2, "Summary")
    doc.table(["", "result", "read from"], [[what, text, src] for what, text, src in headline(m, run.config)])
    doc.h(2, "Contents")
    doc.toc()

    if isinstance(m.get("history"), list) and m["history"]:
        doc.h(2, "Learning")
        cols = ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "val_loss", "val_accuracy", "lr"]
        cols = [k for k in cols if any(k in h for h in m["history"])] + sorted(
            {k for h in m["history"] for k in h if k not in cols and not isinstance(h[k], (dict, list))})
        doc.p("Per epoch, from `metrics.json` `history` (accuracies are fractions; the plot shows %; "
              "empty = not measured in that epoch).")
        doc.table(cols, [[h[k] if k in h else "" for k in cols] for h in m["history"]])
        written["learning_curves.png"] = plot_learning(run, out / "learning_curves.png")
        doc.img("learning_curves.png", "loss and accuracy per epoch")

    if dense:
        _dense_memory_section(run, doc)
    else:
        _chip_sections(run, doc, written)
    _configuration_sections(run, doc)

    doc.h(2, "All metrics.json keys")
    doc.p("Every scalar of `metrics.json` with its unit (lists and the blocks that have their own table above "
          "are left out), exactly as written; the last column says it in human units.")
    doc.table(["metrics.json key", "value", "unit", "readable"],
              [[f"`{k}`", v, unit_of(k), readable(k, v)] for k, v in flatten(m)])

    (out / "report.md").write_text(doc.markdown())
    written["report.md"] = out / "report.md"
    if html_file:
        (out / "report.html").write_text(doc.html(f"{run.scenario} | {run.label}", out))
        written["report.html"] = out / "report.html"
    return written


def _chip_sections(run: RunData, doc: Document, written: dict) -> None:
    """What a run on emulated cores adds: one sample, events against dense, traffic, memory, routing."""
    m, out = run.metrics, run.path
    _sample_section(run, doc, written)

    doc.h(2, "Events per sample against the dense equivalent")
    rows, note = _phase_rows(run)
    doc.p(note)
    if rows:
        doc.table(["population", "phase", "events per sample", "dense per sample", "dense counts",
                   "% of dense (derived)", "source"],
                  [[r["population"], r["phase"], r["events"], r["dense"], r["dense_of"],
                    pct(r["events"] / r["dense"]) if r["dense"] else "n/a", r["keys"]] for r in rows])
        written["events_per_sample.png"] = plot_phases(run, rows, out / "events_per_sample.png")
        doc.img("events_per_sample.png", "events per sample against dense, log scale")
    doc.p("Whole run: " + spikes_text(m) + ".")

    if run.cores is not None and run.routers is not None:
        _traffic_section(run, doc, written)
    _memory_section(run, doc, written)
    _routing_section(run, doc, written)


def _dense_memory_section(run: RunData, doc: Document) -> None:
    m = run.metrics
    doc.h(2, "Training memory")
    cats = m["memory"].get("by_category_bytes") or {}
    doc.p(f"A dense run trains in one process, on no emulated cores: what one training update holds, "
          f"`training_memory_bytes` = {human_bytes(m.get('training_memory_bytes', 0))}, by category "
          "(`memory.by_category_bytes`; the stored activations grow with the steps per sample).")
    total = sum(cats.values())
    doc.table(["category", "bytes", "", "share (derived)"],
              [[k, v, human_bytes(v), pct(v / total) if total else "n/a"] for k, v in cats.items()])


def _configuration_sections(run: RunData, doc: Document) -> None:
    m = run.metrics
    if run.config is not None:
        doc.h(2, "Configuration")
        doc.p("From `config.json`: every setting of the run as typed and checked, defaults filled in "
              "(the machine's are under [Machine](#machine)).")
        doc.table(["setting", "value"], [[f"`{k}`", v] for k, v in flatten_all(
            {k: v for k, v in run.config.items() if k not in ("command", "overrides", "machine")})])
    if isinstance(m.get("machine"), dict):
        doc.h(2, "Machine")
        doc.table(["metrics.json key", "value"], [[f"`machine.{k}`", v] for k, v in m["machine"].items()])


def _sample_section(run: RunData, doc: Document, written: dict) -> None:
    """One sample: the spikes of every spiking population and, for a training run, the input and
    the readouts' traces (``sample.npz``)."""
    doc.h(2, "One sample")
    r, s = run.raster, run.sample
    if r is None:
        doc.p(f"No `{RASTER_FILE}` in this run directory (see `spinnray.report.runs.save_raster`).")
        return
    what = (f"Test sample {r.sample} after the last epoch" if "test_accuracy" in run.metrics
            else f"Sample {r.sample} of the first epoch")
    extra = []
    if s is not None and s.input_name not in r.spikes:
        extra.append("its input")
    if s is not None and s.readouts:
        extra.append(f"the traces of the non-spiking {', '.join(s.readouts)}")
    if s is not None:
        extra.append("label and prediction")
    doc.p(f"{what}: {r.steps} steps of {fmt(r.dt_ms)} ms; spikes from `{RASTER_FILE}`"
          + (f", {', '.join(extra)} from `{SAMPLE_FILE}`" if s is not None else "") + "."
          + (f" Label: {_class(s, s.label)}; predicted: {_class(s, s.pred)}." if s is not None else ""))
    doc.table(["population", "neurons", "spikes in this sample"],
              [[name, r.sizes[name], int(t.size)] for name, (t, _) in r.spikes.items()])
    written["raster.png"] = plot_raster(run, run.path / "raster.png")
    doc.img("raster.png", "spike raster of one sample, with its input and readout")


def _class(s, k) -> str:
    if k is None:
        return "not recorded"
    return f"{s.classes[k]} (class {k})" if 0 <= k < len(s.classes) else f"class {k}"


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
                  [[f"{s} ({names[s]})", f"{d} ({names[d]})", count(e), human_bytes(b), link_class(by_id[s], by_id[d])]
                   for s, d, e, b in top])
    try:
        classes = m["traffic"]["by_link_class"]
        source = "`metrics.json` `traffic.by_link_class`"
    except KeyError:
        classes = bytes_by_link_class(run.routers, run.cores)
        source = ("*(derived)*: `routers.json` `links` summed by class with `spinnray.machine.counters.link_class` on the "
                  "`chip` and `node` of each core in `cores.json` (no `node` = the one node of this run)")
    doc.h(3, "Bytes per link class")
    total = sum(c["bytes"] for c in classes.values())
    doc.p(f"From {source}. Classes: same core (a core's events routed back to it), same chip, same node "
          f"(another chip), across nodes. Their total, {count(total)} bytes, "
          + ("equals" if total == m["traffic"].get("bytes") else "**differs from**")
          + f" `traffic.bytes` = {fmt(m['traffic'].get('bytes'))}.")
    doc.table(["link class", "events", "bytes", "", "share of bytes (derived)"],
              [[k, v["events"], v["bytes"], human_bytes(v["bytes"]), pct(v["bytes"] / total) if total else "n/a"]
               for k, v in classes.items()])
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
    doc.p(f"Bytes per core from `memory.per_core_bytes`, against the budget `memory.budget_bytes_per_core` = "
          f"{human_bytes(budget) if budget else 'none'}; the largest core holds "
          f"{human_bytes(mem.get('per_core_max_bytes', 0))}"
          + (f" ({pct(mem['max_utilisation'])} of it, `memory.max_utilisation`)" if mem.get("max_utilisation") else "")
          + ". Categories per core (in KiB) are from `cores.json` `memory`; the % column is *(derived)*: bytes / "
          "budget.")
    mismatch = [i for i, (t, pc) in enumerate(zip(totals, per_core)) if run.cores is not None and sum(pc.values()) != t]
    if mismatch:
        doc.p(f"**Warning:** cores {mismatch} have category bytes in `cores.json` that do not sum to "
              "`memory.per_core_bytes`.")
    cats = []
    for pc in per_core:
        cats += [k for k in pc if k not in cats]
    doc.table(["core", "population", "bytes", "", "% of budget (derived)"] + [f"{k} (KiB)" for k in cats],
              [[i, names[i] if i < len(names) else "", t, human_bytes(t), pct(t / budget) if budget else "n/a"]
               + [f"{pc.get(k, 0) / 1024:.1f}" for k in cats] for i, (t, pc) in enumerate(zip(totals, per_core))])
    if isinstance(mem.get("by_category_bytes"), dict):
        doc.p("Summed over cores (`memory.by_category_bytes`):")
        doc.table(["category", "bytes", ""], [[k, v, human_bytes(v)] for k, v in mem["by_category_bytes"].items()])
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
              [[c, u, capacity, pct(u / capacity) if capacity else "n/a"] for c, u in zip(chips, used)])
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
