"""Run reports: what a researcher reads after a run, and comparisons across a sweep.

``python -m spinnray.report.build RUN_DIR [RUN_DIR ...]`` writes into each run
directory (one holding ``metrics.json``; ``cores.json``, ``routers.json`` and
``raster.npz`` are used when present):

* ``report.md`` -- key figures, learning curves, per-layer and per-phase events
  against the dense equivalent, traffic between cores and by link class,
  memory per core against the budget, routing-table occupancy per chip;
* ``report.html`` -- the same, self-contained (PNGs embedded as base64);
* PNG plots: ``learning_curves.png`` (when ``history`` is present),
  ``raster.png`` (when ``raster.npz`` is present), ``events_per_sample.png``,
  ``traffic_matrix.png``, ``link_classes.png`` (both need ``cores.json`` and
  ``routers.json``), ``memory_per_core.png``, ``routing_occupancy.png``.

Pointed at a Hydra multirun directory (job subdirectories ``0/``, ``1/``, ...
each with ``metrics.json`` and ``.hydra/overrides.yaml``), it writes
``comparison.csv``, ``comparison.md`` and ``comparison_<metric>_vs_<param>.png``
into that directory: one row per job, the overrides as columns, then the key
metrics (:data:`COMPARE_COLUMNS`).  ``--compare OUT`` compares any list of run
directories into ``OUT``.

Every number of ``report.md`` is read from ``metrics.json`` (the table says
which key), or from ``cores.json`` / ``routers.json`` where the text says so;
a ratio or sum computed here is marked *(derived)*.  Floats are shown to 6
significant digits.  Figures are drawn with matplotlib's Agg canvas (no
display, no global pyplot state).

Errors: a run directory without ``metrics.json``, or with one that is not a
JSON object carrying ``schema_version``, raises :class:`DataError` naming
the path; so does a corrupt ``cores.json``, ``routers.json`` or ``raster.npz``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import logging
import math
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinnray.errors import DataError, SpinnrayError
from spinnray.machine.counters import SCHEMA_VERSION, bytes_by_link_class, link_class

__all__ = ["RASTER_FILE", "RASTER_VERSION", "Raster", "RunData", "COMPARE_COLUMNS", "save_raster",
           "load_raster", "load_run", "build_report", "report_after_run", "find_jobs", "compare_runs",
           "sweep_callback", "main"]

log = logging.getLogger("spinnray")

RASTER_FILE = "raster.npz"
RASTER_VERSION = 1

PHASES = (
    # (label, per-population key of events per sample, what it counts)
    ("forward spikes", "spike_events_per_sample", "spike events sent per sample"),
    ("backward error events", "error_events_about_per_sample",
     "error events sent about this population's spikes, per training sample"),
    ("learning signals", "learning_signals_per_sample",
     "learning-signal events received by this population's cores, per training sample"),
)

# Comparison columns: (column name, dotted metrics.json key or None for derived, unit).
COMPARE_COLUMNS = (
    ("test_accuracy", "test_accuracy", "fraction"),
    ("best_test_accuracy", "best_test_accuracy", "fraction"),
    ("test_loss", "test_loss", "mean per sample"),
    ("ms_per_step", "ms_per_step", "ms"),
    ("train_samples_per_s", "train_samples_per_s", "samples/s"),
    ("wall_s", "wall_s", "s"),
    ("cores", "cores", "cores"),
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

# Sections of metrics.json that have their own table (not repeated in "Key figures").
_OWN_TABLE = {"history", "layers", "machine", "memory.per_core_bytes", "memory.by_category_bytes",
              "mapping.slices", "mapping.routing_entries_per_chip", "traffic.bytes_by_link_class"}


# --------------------------------------------------------------------------- raster.npz
def save_raster(out_dir, spikes_by_population: dict, dt_ms: float, sample: int = 0) -> Path:
    """Write the spikes of one sample to ``out_dir/raster.npz``; return its path.

    ``spikes_by_population[name]``: bools ``(steps, n)`` or ``(steps, batch, n)``
    (then sample ``sample`` is taken); every population must have the same
    ``steps``.  The file (``numpy.savez_compressed``) holds:

    * ``format_version`` int (``RASTER_VERSION``), ``dt_ms`` float (ms per step),
      ``steps`` int (T), ``sample`` int (index of the sample in its batch);
    * ``populations`` (P,) str, ``sizes`` (P,) int64: names and neurons, in order;
    * ``step_<i>``, ``neuron_<i>`` (int32, same length): for population i, the
      step and the neuron index (0-based within the population) of each spike,
      in (step, neuron) order.

    Raises :class:`DataError` for a wrong shape, a sample out of range,
    differing step counts or a non-positive ``dt_ms``.
    """
    if not (isinstance(dt_ms, (int, float)) and math.isfinite(dt_ms) and dt_ms > 0):
        raise DataError(f"save_raster: dt_ms = {dt_ms!r}: expected a number > 0 (ms per step)")
    if not spikes_by_population:
        raise DataError("save_raster: no populations given: expected {name: (steps, n) or (steps, batch, n) bools}")
    arrays: dict[str, np.ndarray] = {}
    names, sizes, steps = [], [], None
    for i, (name, s) in enumerate(spikes_by_population.items()):
        s = np.asarray(s)
        if s.ndim == 3:
            if not 0 <= sample < s.shape[1]:
                raise DataError(f"save_raster: sample = {sample} but {name!r} has batch {s.shape[1]}")
            s = s[:, sample, :]
        if s.ndim != 2:
            raise DataError(f"save_raster: spikes of {name!r} have shape {s.shape}; expected (steps, n) "
                            "or (steps, batch, n)")
        if steps is not None and s.shape[0] != steps:
            raise DataError(f"save_raster: {name!r} has {s.shape[0]} steps, the others {steps}")
        steps = s.shape[0]
        t, n = np.nonzero(s)                       # row-major: (step, neuron) order
        arrays[f"step_{i}"], arrays[f"neuron_{i}"] = t.astype(np.int32), n.astype(np.int32)
        names.append(str(name))
        sizes.append(s.shape[1])
    path = Path(out_dir) / RASTER_FILE
    np.savez_compressed(path, format_version=np.int64(RASTER_VERSION), dt_ms=np.float64(dt_ms),
                        steps=np.int64(steps), sample=np.int64(sample), populations=np.array(names, dtype=str),
                        sizes=np.array(sizes, np.int64), **arrays)
    return path


@dataclass
class Raster:
    """A loaded ``raster.npz``: ``spikes[name] = (steps (k,), neurons (k,))``."""

    dt_ms: float
    steps: int
    sample: int
    sizes: dict[str, int]
    spikes: dict[str, tuple[np.ndarray, np.ndarray]]


def load_raster(path) -> Raster:
    """Read a ``raster.npz`` written by :func:`save_raster`; :class:`DataError` names the path and the fault."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["format_version"])
            if version != RASTER_VERSION:
                raise DataError(f"{path}: raster format_version {version}; this reader knows {RASTER_VERSION}")
            names = [str(x) for x in z["populations"]]
            sizes = [int(x) for x in z["sizes"]]
            r = Raster(float(z["dt_ms"]), int(z["steps"]), int(z["sample"]), dict(zip(names, sizes)), {})
            for i, name in enumerate(names):
                t, n = z[f"step_{i}"].astype(np.int64), z[f"neuron_{i}"].astype(np.int64)
                if t.shape != n.shape or (t.size and (t.min() < 0 or t.max() >= r.steps
                                                      or n.min() < 0 or n.max() >= sizes[i])):
                    raise DataError(f"{path}: spikes of {name!r} out of range (steps {r.steps}, neurons {sizes[i]})")
                r.spikes[name] = (t, n)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable raster.npz ({type(e).__name__}: {e})") from None
    return r


# --------------------------------------------------------------------------- loading a run
@dataclass
class RunData:
    """Everything a report reads from one run directory."""

    path: Path
    metrics: dict
    cores: list | None = None
    routers: list | None = None
    raster: Raster | None = None
    overrides: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return run_label(self.path)

    @property
    def scenario(self) -> str:
        return str(self.metrics.get("scenario", "?"))


def run_label(path: Path) -> str:
    """The run's directory name; a multirun job (``.../TIME/3``) is named ``TIME/3``."""
    path = Path(path).resolve()
    return f"{path.parent.name}/{path.name}" if path.name.isdigit() else path.name


def _read_json(path: Path, what: str):
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; expected the {what} a spinnray run writes") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                        f"expected the {what} a spinnray run writes") from None


def load_metrics(path) -> dict:
    """``metrics.json`` as a dict; :class:`DataError` naming ``path`` if it is
    missing, not JSON, not an object, or lacks ``schema_version``."""
    path = Path(path)
    m = _read_json(path, "metrics.json")
    if not isinstance(m, dict):
        raise DataError(f"{path}: holds a JSON {type(m).__name__}; expected an object with schema_version")
    if not isinstance(m.get("schema_version"), int):
        raise DataError(f"{path}: no integer schema_version; not a spinnray metrics.json")
    for key in ("traffic", "memory"):
        if not isinstance(m.get(key), dict):
            raise DataError(f"{path}: key {key!r} missing or not an object; expected the schema of "
                            f"spinnray.machine.counters (version {m['schema_version']})")
    return m


def read_overrides(run_dir) -> dict:
    """``{key: value}`` from ``RUN_DIR/.hydra/overrides.yaml`` (values parsed as
    YAML scalars; ``+``/``++``/``~`` prefixes dropped); ``{}`` if absent."""
    import yaml

    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    try:
        items = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a YAML list of key=value strings, got {type(items).__name__}")
    out = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise DataError(f"{path}: override {item!r} is not key=value")
        key, value = item.split("=", 1)
        key = key.lstrip("+~")
        try:
            out[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def load_run(run_dir) -> RunData:
    """Read a run directory (see the module docstring for what raises)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a directory; expected a run directory holding metrics.json")
    data = RunData(run_dir, load_metrics(run_dir / "metrics.json"))
    for name in ("cores", "routers"):
        p = run_dir / f"{name}.json"
        if p.exists():
            value = _read_json(p, f"{name}.json")
            if not isinstance(value, list):
                raise DataError(f"{p}: holds a JSON {type(value).__name__}; expected a list of {name[:-1]} reports")
            setattr(data, name, value)
    if (run_dir / RASTER_FILE).exists():
        data.raster = load_raster(run_dir / RASTER_FILE)
    data.overrides = read_overrides(run_dir)
    return data


# --------------------------------------------------------------------------- formatting
def fmt(v) -> str:
    """A value as the report prints it: ints exactly, floats to 6 significant digits."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return str(v)
        return f"{float(v):.6g}"
    if v is None:
        return "null"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v)
    return str(v)


def lookup(metrics: dict, dotted: str):
    """``metrics[a][b]...`` for ``"a.b..."``; KeyError if absent."""
    node = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key in _OWN_TABLE:
            continue
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        elif not isinstance(v, list):
            yield key, v


def unit_of(key: str) -> str:
    """The unit of a metrics.json key, from its name (README's table)."""
    last = key.rsplit(".", 1)[-1]
    if key.startswith("rates_hz."):
        return "Hz"
    table = {"ms_per_step": "ms per lockstep step", "realtime_factor": "emulated time / run time",
             "real_time_factor": "emulated time / training time", "hidden_cores": "cores", "inputs": "channels",
             "train_samples_per_s": "samples/s", "sparsity": "sent / dense", "max_utilisation": "fraction of budget",
             "test_accuracy": "fraction", "best_test_accuracy": "fraction", "test_loss": "mean per sample",
             "steps": "steps per sample", "samples": "samples", "epochs": "passes", "cores": "cores",
             "replicas": "replicas", "batch_size": "samples", "exchange_interval": "steps",
             "packets": "packets", "chips_used": "chips", "key_bits": "bits", "routing_entries": "entries",
             "guarded_spikes": "spikes", "max_events_per_step": "events per step per core",
             "dropped": "events", "rejected": "frames"}
    if last in table:
        return table[last]
    if last.endswith("_s"):
        return "s"
    if "bytes" in last:
        return "bytes"
    if "events" in last:
        return "events"
    if key.startswith("weight_bumps."):
        return "bumps"
    return ""


# --------------------------------------------------------------------------- document blocks
class _Doc:
    """Headings, paragraphs, tables and images, rendered to Markdown and HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list]):
        self.blocks.append(("table", header, [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]))

    def img(self, filename: str, alt: str):
        self.blocks.append(("img", filename, alt))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                line = lambda cells: "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"  # noqa: E731
                out.append("\n".join([line(b[1]), "|" + "---|" * len(b[1])] + [line(r) for r in b[2]]))
            else:
                out.append(f"![{b[2]}]({b[1]})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str, folder: Path) -> str:
        def inline(s: str) -> str:
            s = html.escape(s)
            s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
            s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
            return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", s)

        out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
               "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}img{max-width:100%}</style>",
               "</head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{inline(b[1])}</p>")
            elif b[0] == "table":
                out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in b[1]) + "</tr>"
                           + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in b[2])
                           + "</table>")
            else:
                data = base64.b64encode((folder / b[1]).read_bytes()).decode("ascii")
                out.append(f"<p><img alt='{html.escape(b[2])}' src='data:image/png;base64,{data}'></p>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- figures
def _figure(width: float = 8.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.canvas.print_png(path)          # the Agg canvas directly: half the time of savefig here
    return path


def _title(run: RunData, what: str) -> str:
    return f"{run.scenario} | {run.label}: {what}"


def _plot_learning(run: RunData, path: Path) -> Path:
    hist = run.metrics["history"]
    ep = [h.get("epoch", i + 1) for i, h in enumerate(hist)]
    fig = _figure(9, 4)
    ax1, ax2 = fig.subplots(1, 2)
    for ax, keys, scale in ((ax1, ("train_loss", "test_loss"), 1.0), (ax2, ("train_accuracy", "test_accuracy"), 100.0)):
        for key, style in zip(keys, ("o-", "s--")):
            pts = [(e, scale * h[key]) for e, h in zip(ep, hist) if h.get(key) is not None]   # epochs that have it
            if pts:
                ax.plot(*zip(*pts), style, label=key.replace("_", " "))
    ax1.set(xlabel="epoch", ylabel="loss (mean per sample, nats)", title="loss")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(_title(run, "learning curves"))
    return _save(fig, path)


def _plot_raster(run: RunData, path: Path) -> Path:
    r = run.raster
    fig = _figure(9, 5)
    ax = fig.subplots()
    offset, ticks, labels = 0, [], []
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for i, (name, (t, n)) in enumerate(r.spikes.items()):
        size = r.sizes[name]
        ax.plot(t * r.dt_ms, n + offset, "|", color=colors[i % len(colors)], markersize=3)
        ticks.append(offset + size / 2)
        labels.append(f"{name}\n{t.size} spikes")
        offset += size
        ax.axhline(offset - 0.5, color="0.8", lw=0.8)
    ax.set_xlim(0, r.steps * r.dt_ms)
    ax.set_ylim(-0.5, offset - 0.5)
    ax.set(xlabel="time (ms)", ylabel="neuron index (populations stacked)")
    sec = ax.secondary_yaxis("right")
    sec.set_yticks(ticks, labels, fontsize=8)
    ax.set_title(_title(run, f"spike raster of sample {r.sample} ({r.steps} steps of {fmt(r.dt_ms)} ms)"))
    return _save(fig, path)


def _plot_phases(run: RunData, rows: list[dict], path: Path) -> Path:
    fig = _figure(max(6.0, 1.3 * len(rows) + 3), 4.8)
    ax = fig.subplots()
    x = np.arange(len(rows))
    ev = np.array([r["events"] for r in rows], float)
    dense = np.array([r["dense"] for r in rows], float)
    ax.bar(x - 0.2, dense, 0.4, color="0.75", label="dense equivalent (T x neurons)")
    ax.bar(x + 0.2, np.where(ev > 0, ev, np.nan), 0.4, color="tab:blue", label="events")
    ax.set_yscale("log")
    lo = min([v for v in np.concatenate([ev, dense]) if v > 0], default=1.0)
    ax.set_ylim(lo / 3, dense.max() * 4 if dense.size else 10)
    for xi, e, d in zip(x, ev, dense):
        ax.text(xi + 0.2, e * 1.15 if e > 0 else lo / 2.5, f"{e / d:.2%}" if d and e > 0 else "0",
                ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"{r['population']}\n{r['phase']}" for r in rows], fontsize=8)
    ax.set(ylabel="events per sample (log scale)", xlabel="population and phase")
    ax.legend(fontsize="small")
    ax.set_title(_title(run, "events per sample against dense (labels: ratio)"))
    return _save(fig, path)


def _plot_matrix(run: RunData, matrix: np.ndarray, names: list[str], path: Path) -> Path:
    from matplotlib.colors import LogNorm

    n = matrix.shape[0]
    fig = _figure(7.5, 6.5)
    ax = fig.subplots()
    masked = np.ma.masked_less_equal(matrix, 0)
    vmax = max(float(matrix.max()), 1.0)
    im = ax.imshow(masked, cmap="viridis", norm=LogNorm(vmin=max(float(masked.min()) if masked.count() else 1, 1),
                                                          vmax=vmax), origin="upper", interpolation="nearest")
    step = max(1, n // 24)
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks, [f"{i} {names[i]}" for i in ticks], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [f"{i} {names[i]}" for i in ticks], fontsize=7)
    ax.set_facecolor("white")
    ax.set(xlabel="destination core (id, population)", ylabel="source core (id, population)")
    fig.colorbar(im, ax=ax, label="bytes sent by the router (log scale); blank = none")
    ax.set_title(_title(run, "router traffic, source -> destination core"), fontsize=10)
    return _save(fig, path)


def _plot_link_classes(run: RunData, classes: dict, path: Path) -> Path:
    fig = _figure(7, 4)
    ax = fig.subplots()
    names = list(classes)
    vals = [classes[k]["bytes"] for k in names]
    ax.bar(range(len(names)), vals, color=["tab:green", "tab:blue", "tab:orange", "tab:red"][:len(names)])
    for i, v in enumerate(vals):
        ax.text(i, v, fmt(v), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(names)), [k.replace("_", " ") for k in names])
    ax.ticklabel_format(axis="y", style="plain")
    ax.set(xlabel="link class (source and destination core)", ylabel="bytes")
    ax.set_ylim(0, max(vals + [1]) * 1.15)
    ax.set_title(_title(run, "bytes per link class"))
    return _save(fig, path)


def _plot_memory(run: RunData, per_core: list[dict], totals: list, names: list[str], budget, path: Path) -> Path:
    n = len(totals)
    fig = _figure(max(7.0, 0.35 * n + 4), 5)
    ax = fig.subplots()
    cats = []
    for m in per_core:
        cats += [k for k in m if k not in cats]
    bottom = np.zeros(n)
    cmap = __import__("matplotlib").colormaps["tab20"]
    for i, cat in enumerate(cats):
        v = np.array([m.get(cat, 0) for m in per_core], float) / 1024
        if v.any():
            ax.bar(range(n), v, bottom=bottom, color=cmap(i % 20), label=cat)
            bottom += v
    if budget:
        ax.axhline(budget / 1024, color="red", ls="--", label=f"budget {fmt(budget / 1024)} KiB")
    ax.set_xticks(range(n), [f"{i} {names[i]}" for i in range(n)], rotation=90 if n > 8 else 0, fontsize=7)
    ax.set(xlabel="core (id, population)", ylabel="memory (KiB)")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(_title(run, "memory per core by category"), fontsize=10)
    return _save(fig, path)


def _plot_routing(run: RunData, chips: list[str], used: list[int], capacity, path: Path) -> Path:
    fig = _figure(max(6.0, 0.5 * len(chips) + 3), 4)
    ax = fig.subplots()
    ax.bar(range(len(chips)), used, 0.5, color="tab:blue", label="entries used")
    ax.set_xlim(-0.75, len(chips) - 0.25)
    if capacity:
        ax.axhline(capacity, color="red", ls="--", label=f"capacity {capacity} per chip")
        for i, u in enumerate(used):
            ax.text(i, u * 1.1, f"{u} / {capacity}", ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(0.8, max(used + [capacity or 1]) * 3)
    ax.set_xticks(range(len(chips)), chips)
    ax.set(xlabel="chip", ylabel="routing entries (log scale)")
    ax.legend(fontsize="small", loc="upper right")
    ax.set_title(_title(run, "routing-table occupancy per chip"))
    return _save(fig, path)


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
    doc = _Doc()
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
    doc.table(["metrics.json key", "value", "unit"], [[f"`{k}`", v, unit_of(k)] for k, v in _flatten(m)])

    if isinstance(m.get("history"), list) and m["history"]:
        doc.h(2, "Learning")
        cols = ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"]
        cols = [k for k in cols if any(k in h for h in m["history"])] + sorted(
            {k for h in m["history"] for k in h if k not in cols and not isinstance(h[k], (dict, list))})
        doc.p("Per epoch, from `metrics.json` `history` (accuracies are fractions; the plot shows %; "
              "empty = not measured in that epoch).")
        doc.table(cols, [[h[k] if k in h else "" for k in cols] for h in m["history"]])
        written["learning_curves.png"] = _plot_learning(run, out / "learning_curves.png")
        doc.img("learning_curves.png", "loss and accuracy per epoch")

    doc.h(2, "Spike raster")
    if run.raster is not None:
        r = run.raster
        doc.p(f"Sample {r.sample} from `{RASTER_FILE}`: {r.steps} steps of {fmt(r.dt_ms)} ms.")
        doc.table(["population", "neurons", "spikes in this sample"],
                  [[name, r.sizes[name], int(t.size)] for name, (t, _) in r.spikes.items()])
        written["raster.png"] = _plot_raster(run, out / "raster.png")
        doc.img("raster.png", "spike raster of one sample")
    else:
        doc.p(f"No `{RASTER_FILE}` in this run directory (see `spinnray.report.build.save_raster`).")

    doc.h(2, "Events per sample against the dense equivalent")
    rows, note = _phase_rows(run)
    doc.p(note)
    if rows:
        doc.table(["population", "phase", "events per sample", "dense per sample (T x neurons)",
                   "ratio (derived)", "source"],
                  [[r["population"], r["phase"], r["events"], r["dense"],
                    fmt(r["events"] / r["dense"]) if r["dense"] else "n/a", r["keys"]] for r in rows])
        written["events_per_sample.png"] = _plot_phases(run, rows, out / "events_per_sample.png")
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


def _traffic_section(run: RunData, doc: _Doc, written: dict) -> None:
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
        written["traffic_matrix.png"] = _plot_matrix(run, matrix, names, out / "traffic_matrix.png")
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
    written["link_classes.png"] = _plot_link_classes(run, classes, out / "link_classes.png")
    doc.img("link_classes.png", "bytes per link class")


def _memory_section(run: RunData, doc: _Doc, written: dict) -> None:
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
    written["memory_per_core.png"] = _plot_memory(run, per_core, totals, names, budget, out / "memory_per_core.png")
    doc.img("memory_per_core.png", "memory per core by category against the budget")


def _routing_section(run: RunData, doc: _Doc, written: dict) -> None:
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
    written["routing_occupancy.png"] = _plot_routing(run, chips, used, capacity, out / "routing_occupancy.png")
    doc.img("routing_occupancy.png", "routing entries used per chip against capacity")


def report_after_run(out_dir) -> None:
    """Build the report of a run that just wrote ``metrics.json``; a failure is
    logged as an error (the run's data is already on disk), never raised."""
    try:
        files = build_report(out_dir)
        log.info("wrote %s (%d files)", Path(out_dir) / "report.md", len(files))
    except Exception:                     # the run itself succeeded: log, never raise
        log.exception("the report of %s failed; metrics.json is written: rerun "
                      "`python -m spinnray.report.build %s`", out_dir, out_dir)


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


def _plot_sweep(title: str, rows: list[dict], param: str, metric: str, swept: list[str], path: Path) -> Path | None:
    pts = [r for r in rows if r.get(metric) is not None and param in r and _number(r[metric])]
    if not pts:
        return None
    others = [p for p in swept if p != param]
    groups: dict[tuple, list[dict]] = {}
    for r in pts:
        groups.setdefault(tuple(fmt(r.get(o)) for o in others), []).append(r)
    numeric = all(_number(r[param]) for r in pts)
    cats = list(dict.fromkeys(fmt(r[param]) for r in pts))
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    for g, members in groups.items():
        label = ", ".join(f"{o}={v}" for o, v in zip(others, g)) or None
        if numeric:
            members = sorted(members, key=lambda r: r[param])
            ax.plot([r[param] for r in members], [r[metric] for r in members], "o-", label=label)
        else:
            ax.plot([cats.index(fmt(r[param])) for r in members], [r[metric] for r in members], "o", label=label)
    if not numeric:
        ax.set_xticks(range(len(cats)), cats)
    unit = dict((c[0], c[2]) for c in COMPARE_COLUMNS).get(metric) or unit_of(metric)
    ax.set(xlabel=f"{param} (swept override)", ylabel=f"{metric} ({unit})" if unit else metric)
    ax.grid(alpha=0.3)
    if others:
        ax.legend(fontsize="small")
    ax.set_title(f"{title}: {metric} against {param}", fontsize=10)
    return _save(fig, path)


def compare_runs(run_dirs, out_dir, plot_metrics=None, title: str | None = None) -> dict[str, Path]:
    """Write ``comparison.csv``, ``comparison.md`` and comparison plots of the
    runs ``run_dirs`` into ``out_dir``; return ``{file name: path}``.

    One row per run: ``job`` (directory name), each override of
    ``.hydra/overrides.yaml`` as a column, the :data:`COMPARE_COLUMNS` any run
    has, and ``status`` (``ok``, or why the run has no usable ``metrics.json``;
    such a run is also logged as a warning).  A parameter is *swept* when its
    column takes more than one value; each ``plot_metrics`` entry (a column
    name or a dotted metrics.json key; default: those of :data:`DEFAULT_PLOTS`
    that some run has) is plotted against each swept parameter.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, scenarios, metrics_by_job = [], [], {}
    for d in map(Path, run_dirs):
        row = {"job": d.name}
        try:
            row.update(read_overrides(d))
            m = load_metrics(d / "metrics.json")
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
    doc = _Doc()
    doc.h(1, f"Comparison: {title}")
    doc.p(f"{len(rows)} runs in `{out_dir.resolve()}`; swept parameters: "
          + (", ".join(f"`{s}`" for s in swept) or "none") + ". Values are read from each run's `metrics.json` "
          "(column = dotted key) and `.hydra/overrides.yaml`; floats to 6 significant digits (full precision in "
          "`comparison.csv`); empty = the run has no such key.")
    doc.table(cols, [["" if r.get(c) is None else r[c] for c in cols] for r in rows])
    notes = [f"`{k}` *(derived)*: {v}" for k, v in _DERIVED_NOTE.items() if k in metric_cols]
    if notes:
        doc.p("Derived columns: " + "; ".join(notes) + ".")
    for metric in plot_metrics:
        for param in swept:
            name = "comparison_" + re.sub(r"[^A-Za-z0-9]+", "_", f"{metric}_vs_{param}").strip("_") + ".png"
            p = _plot_sweep(title, rows, param, metric, swept, out_dir / name)
            if p is not None:
                written[name] = p
                doc.img(name, f"{metric} against {param}")
    if not swept:
        doc.p("No parameter takes more than one value, so there is nothing to plot.")
    (out_dir / "comparison.md").write_text(doc.markdown())
    written["comparison.md"] = out_dir / "comparison.md"
    return written


def sweep_callback(metric=None):
    """A Hydra callback that compares the jobs when a multirun ends (if the
    composed config's ``report`` is true), as ``python -m spinnray.report.build
    SWEEP_DIR`` would.  Enable it in ``conf/config.yaml``::

        hydra:
          callbacks:
            report:
              _target_: spinnray.report.build.sweep_callback

    (or ``+hydra.callbacks.report._target_=spinnray.report.build.sweep_callback`` on the
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


# --------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    """``python -m spinnray.report.build PATH [PATH ...]``; exit status 2 on a data error."""
    ap = argparse.ArgumentParser(prog="python -m spinnray.report.build", description=(
        "Write report.md, report.html and PNG plots into each run directory; for a Hydra multirun directory, "
        "write comparison.csv, comparison.md and comparison plots into it."))
    ap.add_argument("paths", nargs="+", type=Path, help="run directories and/or Hydra multirun directories")
    ap.add_argument("--metric", action="append", default=None,
                    help="column or dotted metrics.json key to plot against each swept parameter (repeatable; "
                         "default: accuracy, time per step or samples per second, bytes, peak memory per core)")
    ap.add_argument("--compare", type=Path, default=None, metavar="OUT",
                    help="also compare all given run directories, writing into OUT")
    ap.add_argument("--job-reports", action="store_true", help="also (re)build the report of every multirun job")
    ap.add_argument("--no-html", action="store_true", help="skip report.html")
    args = ap.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        runs = []
        for path in args.paths:
            if (path / "metrics.json").exists() or not path.is_dir():
                files = build_report(path, html_file=not args.no_html)
                runs.append(path)
                log.info("%s: wrote %s", path, ", ".join(sorted(files)))
            elif any(p.is_dir() and p.name.isdigit() for p in path.iterdir()):
                jobs = find_jobs(path)
                if args.job_reports:
                    for j in jobs:
                        if (j / "metrics.json").exists():
                            build_report(j, html_file=not args.no_html)
                files = compare_runs(jobs, path, args.metric)
                log.info("%s: compared %d jobs; wrote %s", path, len(jobs), ", ".join(sorted(files)))
            else:
                build_report(path)            # raises: names the missing metrics.json
        if args.compare is not None:
            files = compare_runs(runs, args.compare, args.metric)
            log.info("%s: compared %d runs; wrote %s", args.compare, len(runs), ", ".join(sorted(files)))
    except SpinnrayError as e:
        log.error("%s: %s", type(e).__name__, e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
