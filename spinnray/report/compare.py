"""Comparisons across runs: one row per run (or Hydra multirun job, ``0/``, ``1/``, ... each with
``metrics.json`` and ``.hydra/overrides.yaml``), the overrides as columns, then the key metrics
(:data:`COMPARE_COLUMNS`); written as ``comparison.csv``, ``comparison.md`` and
``comparison_<metric>_vs_<param>.png``.  :func:`sweep_callback` does this when a Hydra sweep ends."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np

from spinnray.errors import DataError, SpinnrayError
from spinnray.report.document import Document
from spinnray.report.plots import byte_unit, figure, integer_ticks, save_png
from spinnray.report.runs import (
    fmt,
    load_metrics,
    load_plan,
    lookup,
    read_overrides,
    run_label,
    unit_of,
)

log = logging.getLogger("spinnray")

# Comparison columns: (column name, dotted metrics.json key or None for derived, unit).
COMPARE_COLUMNS = (
    ("test_accuracy", "test_accuracy", "fraction"),
    ("best_test_accuracy", "best_test_accuracy", "fraction"),
    ("test_loss", "test_loss", "mean per sample"),
    ("ms_per_step", "ms_per_step", "ms"),
    ("train_samples_per_s", "train_samples_per_s", "samples/s"),
    ("wall_s", "wall_s", "s"),
    ("cores", "cores", "cores"),
    ("mapping.chips_used", "mapping.chips_used", "chips"),
    ("spike_events_per_sample", None, "events per sample"),
    ("error_events_per_sample", None, "events per training sample"),
    ("traffic.spike_events_sent", "traffic.spike_events_sent", "events"),
    ("traffic.error_events_sent", "traffic.error_events_sent", "events"),
    ("traffic.sparsity", "traffic.sparsity", "sent / dense"),
    ("traffic.bytes", "traffic.bytes", "bytes"),
    ("training_memory_bytes", None, "bytes"),
    ("memory.per_core_max_bytes", "memory.per_core_max_bytes", "bytes"),
    ("memory.max_utilisation", "memory.max_utilisation", "fraction of budget"),
)

_COLUMN_NAMES = {c[0] for c in COMPARE_COLUMNS}
# Plotted against each swept parameter unless --metric says otherwise (those that some run has).
DEFAULT_PLOTS = ("test_accuracy", "ms_per_step", "train_samples_per_s", "traffic.bytes", "training_memory_bytes",
                 "memory.per_core_max_bytes")

_DERIVED_NOTE = {
    "training_memory_bytes": "the memory one training update holds, to compare rules: dense BPTT and truncated "
                             "local BPTT runs: `training_memory_bytes` (weights, gradients, Adam, stored "
                             "activations, inputs, state); e-prop runs: `training_state_bytes` (weights, "
                             "accumulators, gradients, Adam, traces, learning signals, feedback over all cores); "
                             "empty for other kinds",
    "spike_events_per_sample": "forward runs: `traffic.spike_events_sent / samples`; training runs: the sum over "
                               "populations of `layers.P.spike_events_per_sample`",
    "error_events_per_sample": "forward runs: `traffic.error_events_sent / samples`; training runs: the sum over "
                               "populations of `layers.P.error_events_sent_per_sample`",
}

# --------------------------------------------------------------------------- sweeps
def find_jobs(multirun_dir) -> list[Path]:
    """Job directories of a Hydra multirun: numbered subdirectories, in number
    order, that hold ``metrics.json`` or ``.hydra/``; :class:`DataError` if none."""
    root = Path(multirun_dir)
    jobs = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()
                   and ((p / "metrics.json").exists() or (p / ".hydra").is_dir())), key=lambda p: int(p.name)) \
        if root.is_dir() else []
    if not jobs:
        raise DataError(f"{root}: no metrics.json and no multirun job directories (0/, 1/, ... with metrics.json "
                        "or .hydra/); expected a run directory or a Hydra multirun directory")
    return jobs


def _derived(m: dict, name: str):
    if name == "training_memory_bytes":
        v = m.get("training_memory_bytes", m.get("training_state_bytes"))
        return v if _number(v) else None
    layers = m.get("layers")
    key, per_layer = {"spike_events_per_sample": ("spike_events_sent", "spike_events_per_sample"),
                      "error_events_per_sample": ("error_events_sent", "error_events_sent_per_sample")}[name]
    if isinstance(layers, dict):
        vals = [d[per_layer] for d in layers.values() if per_layer in d]
        return sum(vals) if vals else None
    if isinstance(m.get("samples"), int) and m["samples"] and key in m["traffic"]:
        return m["traffic"][key] / m["samples"]
    return None


def _row_metrics(m: dict) -> dict:
    row = {}
    for name, key, _ in COMPARE_COLUMNS:
        if key is None:
            row[name] = _derived(m, name)
        else:
            try:
                row[name] = lookup(m, key)
            except KeyError:
                row[name] = None
    return row


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: a swept parameter that repeats a run rather than varying it: its values become error bars
REPEATS = ("seed",)


def _scale_of(metric: str, unit: str, values: list[float]) -> tuple[float, str]:
    """How a metric is drawn: fractions in %, bytes in KiB/MiB/GiB, else as it is."""
    if unit in ("fraction", "fraction of budget", "sent / dense"):
        return 100.0, "%"
    if unit == "bytes":
        f, u = byte_unit(max(values, default=1))
        return 1.0 / f, u
    return 1.0, unit


def _plot_sweep(title: str, rows: list[dict], param: str, metric: str, swept: list[str], path: Path) -> Path | None:
    """``metric`` against ``param``: one line per combination of the other swept parameters; runs
    that differ only in a repeat parameter (``seed``) are one point, their mean, with an error bar of
    one standard deviation (n in the legend).  The y axis starts at zero; integer parameters get
    integer ticks (a log2 axis when they span a factor of 8 or more)."""
    pts = [r for r in rows if r.get(metric) is not None and param in r and _number(r[metric])]
    if not pts:
        return None
    others = [p for p in swept if p != param and p not in REPEATS]
    repeats = [p for p in swept if p != param and p in REPEATS]
    numeric = all(_number(r[param]) for r in pts)
    cats = list(dict.fromkeys(fmt(r[param]) for r in pts))
    unit = dict((c[0], c[2]) for c in COMPARE_COLUMNS).get(metric) or unit_of(metric)
    scale, shown = _scale_of(metric, unit, [abs(r[metric]) for r in pts])
    groups: dict[tuple, dict] = {}
    for r in pts:
        g = groups.setdefault(tuple(fmt(r.get(o)) for o in others), {})
        g.setdefault(r[param] if numeric else fmt(r[param]), []).append(r[metric] * scale)
    fig = figure(7, 4.5)
    ax = fig.subplots()
    most = 1
    for g, by_x in groups.items():
        label = ", ".join(f"{o}={v}" for o, v in zip(others, g)) or None
        xs = sorted(by_x) if numeric else list(by_x)
        ys = [np.mean(by_x[x]) for x in xs]
        err = [np.std(by_x[x], ddof=1) if len(by_x[x]) > 1 else 0.0 for x in xs]
        most = max([most] + [len(by_x[x]) for x in xs])
        xpos = xs if numeric else [cats.index(x) for x in xs]
        ax.errorbar(xpos, ys, yerr=err if any(err) else None, fmt="o-" if numeric else "o", capsize=4, label=label)
    if not numeric:
        ax.set_xticks(range(len(cats)), cats)
        ax.set_xlim(-0.5, len(cats) - 0.5)
    elif all(isinstance(r[param], int) for r in pts):
        values = sorted({r[param] for r in pts})
        if values[0] > 0 and values[-1] >= 8 * values[0]:
            ax.set_xscale("log", base=2)
        if len(values) <= 12:
            ax.set_xticks(values, [str(v) for v in values])
            ax.minorticks_off()
        else:
            integer_ticks(ax.xaxis)
    if all(r[metric] >= 0 for r in pts):
        ax.set_ylim(bottom=0)
    ax.set(xlabel=f"{param} (swept override)", ylabel=f"{metric} ({shown})" if shown else metric)
    ax.grid(alpha=0.3)
    if others:
        ax.legend(fontsize="small")
    if most > 1:
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi + 0.12 * (hi - lo))          # room for the note above the points
        ax.text(0.01, 0.98, f"points: mean \u00b1 s.d. of up to {most} runs ({', '.join(repeats) or 'repeated'})",
                transform=ax.transAxes, va="top", fontsize=8)
    ax.set_title(f"{title}\n{metric} against {param}", fontsize=10)
    return save_png(fig, path)


def _plot_curves(title: str, rows: list[dict], metrics_by_job: dict, swept: list[str], path: Path) -> Path | None:
    """Test accuracy against epoch, one line per run: runs that differ only in a repeat parameter
    (``seed``) share a colour and one legend entry (with their count), so float32 against 4-bit over
    three seeds reads as two bundles.  None when no run was tested after two or more epochs."""
    curves = []
    for r in rows:
        hist = metrics_by_job.get(r["job"], {}).get("history")
        pts = [(h["epoch"], h["test_accuracy"]) for h in hist or [] if isinstance(h, dict)
               and _number(h.get("epoch")) and _number(h.get("test_accuracy"))]
        if pts:
            curves.append((r, sorted(pts)))
    if not any(len(pts) >= 2 for _, pts in curves):
        return None
    others = [p for p in swept if p not in REPEATS]
    groups: dict[tuple, list] = {}
    for r, pts in curves:
        groups.setdefault(tuple(fmt(r.get(o)) for o in others), []).append((r, pts))
    fig = figure(7, 4.5)
    ax = fig.subplots()
    colours = [f"C{i % 10}" for i in range(len(groups))]
    for colour, (g, members) in zip(colours, groups.items()):
        name = ", ".join(f"{o}={v}" for o, v in zip(others, g)) or "runs"
        for i, (r, pts) in enumerate(members):
            ax.plot([e for e, _ in pts], [100 * a for _, a in pts], "o-", color=colour, ms=3, lw=1.2, alpha=0.85,
                    label=(f"{name} ({len(members)} runs)" if len(members) > 1 else name) if i == 0 else None)
            last_epoch, last = pts[-1]
            ax.annotate(f"{100 * last:.1f}", (last_epoch, 100 * last), fontsize=7, color=colour, xytext=(3, 0),
                        textcoords="offset points", va="center")
    integer_ticks(ax.xaxis)
    ax.margins(x=0.08)                      # room for the last values
    ax.set(xlabel="epoch", ylabel="test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{title}\ntest accuracy per epoch (last value written at each line's end)", fontsize=10)
    return save_png(fig, path)


def compare_runs(run_dirs, out_dir, plot_metrics=None, title: str | None = None) -> dict[str, Path]:
    """Write ``comparison.csv``, ``comparison.md`` and comparison plots of the
    runs ``run_dirs`` into ``out_dir``; return ``{file name: path}``.

    One row per run (its ``metrics.json``, or the ``plan.json`` of a ``plan=true`` run, whose
    columns are then the cores, chips and memory): ``job`` (directory name), each override of
    ``.hydra/overrides.yaml`` as a column, the :data:`COMPARE_COLUMNS` any run
    has, and ``status`` (``ok``, or why the run has no usable ``metrics.json``;
    such a run is also logged as a warning).  A parameter is *swept* when its
    column takes more than one value; each ``plot_metrics`` entry (a column
    name or a dotted metrics.json key; default: those of :data:`DEFAULT_PLOTS`
    that some run has) is plotted against each swept parameter, and the runs tested after two or more
    epochs get their learning curves in one plot (``comparison_curves_test_accuracy.png``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, scenarios, metrics_by_job = [], [], {}
    for d in map(Path, run_dirs):
        row = {"job": d.name}
        try:
            row.update(read_overrides(d))
            planned = not (d / "metrics.json").exists() and (d / "plan.json").exists()
            m = load_plan(d / "plan.json") if planned else load_metrics(d / "metrics.json")
        except DataError as e:
            log.warning("comparison: %s", e)
            err = d / "error.txt"                  # written by run.py when a sweep job failed
            row["status"] = ("failed: " + err.read_text().strip()) if err.is_file() else str(e)
            rows.append(row)
            continue
        metrics_by_job[d.name] = m
        scenarios.append(str(m.get("scenario", "?")))
        row.update({k: v for k, v in _row_metrics(m).items() if v is not None})
        row["status"] = "ok"
        rows.append(row)
    if not metrics_by_job:
        raise DataError(f"{out_dir}: none of the {len(rows)} runs has a usable metrics.json: "
                        + "; ".join(r["status"] for r in rows))
    metric_cols = [c[0] for c in COMPARE_COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    plot_metrics = list(plot_metrics or [c for c in DEFAULT_PLOTS if c in metric_cols])
    for pm in plot_metrics:                      # a dotted key not among the columns becomes one
        if pm not in metric_cols:
            for r in rows:
                if r["job"] in metrics_by_job:
                    try:
                        r[pm] = lookup(metrics_by_job[r["job"]], pm)
                    except KeyError:
                        r[pm] = None
            metric_cols.append(pm)
    override_cols = []
    for r in rows:
        override_cols += [k for k in r if k not in override_cols and k not in metric_cols
                          and k not in _COLUMN_NAMES and k not in ("job", "status")]
    cols = ["job"] + override_cols + metric_cols + ["status"]
    swept = [k for k in override_cols if len({fmt(r.get(k)) for r in rows}) > 1]
    written = {}
    with open(out_dir / "comparison.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else fmt(r[c]) if isinstance(r[c], (bool, list, dict)) else r[c]
                        for c in cols])
    written["comparison.csv"] = out_dir / "comparison.csv"
    title = title or f"{'/'.join(dict.fromkeys(scenarios))} | {run_label(out_dir)}"
    doc = Document()
    doc.h(1, f"Comparison: {title}")
    doc.p(f"{len(rows)} runs in `{out_dir.resolve()}`; swept parameters: "
          + (", ".join(f"`{s}`" for s in swept) or "none") + ". Values are read from each run's `metrics.json` "
          "(or `plan.json` of a `plan=true` run; column = dotted key) and `.hydra/overrides.yaml`; floats to 6 "
          "significant digits (full precision in `comparison.csv`); empty = the run has no such key.")
    failed = [r["job"] for r in rows if r["status"] != "ok"]
    if failed:
        doc.p(f"**{len(failed)} of {len(rows)} runs failed** (jobs {', '.join(failed)}; the status column says why); "
              "the plots show the others.")
    doc.table(cols, [["" if r.get(c) is None else r[c] for c in cols] for r in rows])
    notes = [f"`{k}` *(derived)*: {v}" for k, v in _DERIVED_NOTE.items() if k in metric_cols]
    if notes:
        doc.p("Derived columns: " + "; ".join(notes) + ".")
    for metric in plot_metrics:
        for param in swept:
            if param in REPEATS and len(swept) > 1:
                continue                    # a repeat is the error bars of the other parameters' plots
            name = "comparison_" + re.sub(r"[^A-Za-z0-9]+", "_", f"{metric}_vs_{param}").strip("_") + ".png"
            p = _plot_sweep(title, rows, param, metric, swept, out_dir / name)
            if p is not None:
                written[name] = p
                doc.img(name, f"{metric} against {param}")
    if not swept:
        doc.p("No parameter takes more than one value, so there is nothing to plot against one.")
    curves = _plot_curves(title, rows, metrics_by_job, swept, out_dir / "comparison_curves_test_accuracy.png")
    if curves is not None:
        written[curves.name] = curves
        doc.img(curves.name, "test accuracy per epoch, one line per run")
    (out_dir / "comparison.md").write_text(doc.markdown())
    written["comparison.md"] = out_dir / "comparison.md"
    return written


def sweep_callback(metric=None):
    """A Hydra callback that compares the jobs when a multirun ends (if the
    composed config's ``report`` is true), as ``python -m spinnray.report
    SWEEP_DIR`` would.  Enable it in ``conf/config.yaml``::

        hydra:
          callbacks:
            report:
              _target_: spinnray.report.sweep_callback

    (or ``+hydra.callbacks.report._target_=spinnray.report.sweep_callback`` on the
    command line).  ``metric``: a list of columns to plot, as ``--metric``."""
    from hydra.experimental.callback import Callback

    class SweepReport(Callback):
        def on_multirun_end(self, config, **kwargs) -> None:
            if not config.get("report", True):
                return
            sweep = Path(config.hydra.sweep.dir)
            try:
                files = compare_runs(find_jobs(sweep), sweep, list(metric) if metric else None)
                log.info("compared the jobs of %s: %s", sweep, ", ".join(sorted(files)))
            except SpinnrayError as e:
                log.error("comparison of %s failed: %s", sweep, e)

    return SweepReport()
