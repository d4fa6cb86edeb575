"""The figures of a run report, drawn on matplotlib's Agg canvas (no display, no global pyplot state;
matplotlib is imported on first use, so reading runs does not pay for it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spinnray.report.headline import CHIP_SRAM
from spinnray.report.runs import RunData, fmt, human_bytes, pct

# --------------------------------------------------------------------------- figures
def figure(width: float = 8.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.canvas.print_png(path)          # the Agg canvas directly: half the time of savefig here
    return path


def plot_title(run: RunData, what: str) -> str:
    return f"{run.scenario} | {run.label}: {what}"


def integer_ticks(axis) -> None:
    """Only whole numbers on ``axis`` (epochs, cores, batch sizes are never 0.5)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def epoch_ticks(ax, epochs: list) -> None:
    """Whole epochs on the x axis: every epoch when there are few (one epoch is not 0.96 to 1.04)."""
    if len(epochs) <= 12:
        ax.set_xticks(sorted(set(epochs)))
        lo, hi = min(epochs), max(epochs)
        ax.set_xlim(lo - 0.5, hi + 0.5) if lo == hi else ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    else:
        integer_ticks(ax.xaxis)


def plot_learning(run: RunData, path: Path) -> Path:
    hist = run.metrics["history"]
    ep = [h.get("epoch", i + 1) for i, h in enumerate(hist)]
    fig = figure(9, 4)
    ax1, ax2 = fig.subplots(1, 2)
    for ax, keys, scale in ((ax1, ("train_loss", "test_loss", "val_loss"), 1.0),
                            (ax2, ("train_accuracy", "test_accuracy", "val_accuracy"), 100.0)):
        for key, style in zip(keys, ("o-", "s--", "^:")):
            pts = [(e, scale * h[key]) for e, h in zip(ep, hist) if h.get(key) is not None]   # epochs that have it
            if pts:
                ax.plot(*zip(*pts), style, label=key.replace("_", " ").replace("val ", "validation "))
    classes = run.metrics.get("classes") or []
    if classes:
        ax2.axhline(100 / len(classes), color="0.5", lw=0.8, ls="--", label=f"chance ({100 / len(classes):.3g} %)")
    ax2.set_ylim(0, 100)
    ax1.set_ylim(bottom=0)                  # cross-entropy (and its regularisers) is never negative
    ax1.set(xlabel="epoch", ylabel="loss (mean per sample, nats)", title="loss")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        epoch_ticks(ax, ep)
    fig.suptitle(plot_title(run, "learning curves"))
    return save_png(fig, path)


def _raster_panel(ax, t, n, size: int, dt_ms: float, color: str, first_spike: bool) -> None:
    """Spikes of one population, one row per neuron; a small population gets tall marks and, when
    its first-spike times are the answer (``first_spike``), a triangle at each neuron's first."""
    mark = max(2.0, min(12.0, 160.0 / max(size, 1)))
    ax.plot(t * dt_ms, n, "|", color=color, markersize=mark, markeredgewidth=1.5 if size <= 32 else 1.0)
    if first_spike and t.size:
        for i in np.unique(n):
            first = t[n == i].min() * dt_ms
            ax.plot(first, i, ">", color="black", markersize=5)
            if size <= 12:
                ax.annotate(f"{fmt(first)} ms", (first, i), xytext=(-4, 0), textcoords="offset points",
                            ha="right", va="center", fontsize=7)
    ax.set_ylim(-0.5, size - 0.5)
    if size <= 12:
        ax.set_yticks(range(size))
    else:
        integer_ticks(ax.yaxis)


def plot_raster(run: RunData, path: Path) -> Path:
    """One sample in stacked panels, input at the bottom: the input (from ``sample.npz`` when the
    host writes it, spikes or values), every spiking population's spikes, then the readouts'
    traces with the loss window shaded and the label marked.  Each panel is at least a sixth of
    the figure, so a population of 3 or 5 neurons is as readable as one of 200."""
    r, s = run.raster, run.sample
    panels = []              # (kind, name, payload, size)
    if s is not None and s.input_name not in r.spikes:
        panels.append(("input", s.input_name, s.input, s.input.shape[1]))
    panels += [("spikes", name, r.spikes[name], r.sizes[name]) for name in r.spikes]
    if s is not None:
        panels += [("trace", name, v, v.shape[1]) for name, v in s.readouts.items()]
    panels = panels[::-1]                                 # top to bottom: readout ... input
    ratios, share = [p[3] for p in panels], 1 / max(6, len(panels))
    for _ in range(20):                     # each panel at least a sixth of all of them (a fixed point)
        ratios = [max(p[3], sum(ratios) * share) for p in panels]
    fig = figure(9, min(3.0 + 1.6 * len(panels), 11))
    axes = fig.subplots(len(panels), 1, sharex=True, gridspec_kw={"height_ratios": ratios})
    axes = np.atleast_1d(axes)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    classes = s.classes if s is not None else list(run.metrics.get("classes") or [])
    ttfs = run.metrics.get("rule") == "eventprop"          # the answer is the output's first-spike times
    for i, (ax, (kind, name, data, size)) in enumerate(zip(axes, panels)):
        color = colors[i % len(colors)]
        if kind == "spikes":
            t, n = data
            last = not r.sizes or name == list(r.sizes)[-1]
            _raster_panel(ax, t, n, size, r.dt_ms, color, ttfs and last)
            ax.set_ylabel(f"{name} (neuron)\n{size} neurons\n{t.size} spikes", fontsize=8)
            if ttfs and last and size == len(classes):
                ax.set_yticks(range(size), classes, fontsize=8)
                if s is not None and 0 <= s.label < size:
                    ax.get_yticklabels()[s.label].set_fontweight("bold")
        elif kind == "input":
            x = np.asarray(data)
            if x.dtype == bool or np.isin(np.unique(x), (0, 1)).all():
                t, n = np.nonzero(x)
                _raster_panel(ax, t, n, size, s.dt_ms, "0.2", False)
                ax.set_ylabel(f"{name} (channel)\n{size} channels\n{t.size} spikes", fontsize=8)
            else:
                ax.imshow(x.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                          extent=(0, x.shape[0] * s.dt_ms, -0.5, size - 0.5))
                ax.set_ylabel(f"{name} (channel)\n{size} channels\nvalue: colour", fontsize=8)
        else:
            steps = data.shape[0]
            tt = np.arange(steps) * s.dt_ms
            for k in range(size):
                lab = classes[k] if k < len(classes) and size == len(classes) else f"{name} {k}"
                ax.plot(tt, data[:, k], lw=2.2 if k == s.label else 1.0, label=lab + (" (label)" if k == s.label else ""))
            if s.loss_steps < steps:
                ax.axvspan((steps - s.loss_steps) * s.dt_ms, steps * s.dt_ms, color="0.9", zorder=0,
                           label="loss window")
            ax.set_ylabel(f"{name}\n(readout v)", fontsize=8)
            if size <= 4:
                ax.legend(fontsize=7, loc="upper left", ncol=size + 1)
            else:                            # many classes: beside the panel, not over the traces
                ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), ncol=1 + (size > 8))
        ax.grid(alpha=0.2)
    axes[-1].set_xlim(-0.5 * r.dt_ms, r.steps * r.dt_ms)      # a spike at step 0 is not hidden by the frame
    axes[-1].set_xlabel("time (ms)")
    what = f"sample {r.sample} ({r.steps} steps of {fmt(r.dt_ms)} ms)"
    if s is not None and s.label >= 0:
        what += f": label {classes[s.label] if s.label < len(classes) else s.label}"
        if s.pred is not None:
            what += f", predicted {classes[s.pred] if s.pred < len(classes) else s.pred}"
    fig.suptitle(plot_title(run, what), fontsize=11)
    return save_png(fig, path)


def plot_phases(run: RunData, rows: list[dict], path: Path) -> Path:
    """Each phase's events per sample beside its own dense equivalent (log scale), the ratio above."""
    fig = figure(max(7.5, 1.5 * len(rows) + 3), 4.8)
    ax = fig.subplots()
    x = np.arange(len(rows))
    ev = np.array([r["events"] for r in rows], float)
    dense = np.array([r["dense"] for r in rows], float)
    ax.bar(x - 0.2, dense, 0.4, color="0.75", label="dense equivalent (T x N, or N: see the labels)")
    ax.bar(x + 0.2, np.where(ev > 0, ev, np.nan), 0.4, color="tab:blue", label="events sent / received")
    ax.set_yscale("log")
    lo = min([v for v in np.concatenate([ev, dense]) if v > 0], default=1.0)
    ax.set_ylim(lo / 4, max(dense.max(), ev.max()) * 6 if dense.size else 10)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    for xi, e, d in zip(x, ev, dense):
        ax.text(xi + 0.2, e * 1.15 if e > 0 else lo / 3.5, pct(e / d) if d else "n/a", ha="center", va="bottom",
                fontsize=8)
    ax.set_xticks(x, [f"{r['population']}\n{r['phase']}\n(dense: {r['dense_of']})" for r in rows], fontsize=8)
    ax.set(ylabel="events per sample (log scale)", xlabel="population and phase")
    ax.legend(fontsize="small", loc="upper right")
    ax.set_title(plot_title(run, "events per sample against dense (labels: % of dense)"), fontsize=10)
    return save_png(fig, path)


def plot_matrix(run: RunData, matrix: np.ndarray, names: list[str], path: Path) -> Path:
    from matplotlib.colors import LogNorm

    n = matrix.shape[0]
    fig = figure(7.5, 6.5)
    ax = fig.subplots()
    matrix = matrix / 1024                              # KiB
    masked = np.ma.masked_less_equal(matrix, 0)
    vmax = max(float(matrix.max()), 1e-3)
    im = ax.imshow(masked, cmap="viridis", norm=LogNorm(vmin=float(masked.min()) if masked.count() else vmax / 10,
                                                          vmax=vmax), origin="upper", interpolation="nearest")
    step = max(1, n // 24)
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks, [f"{i} {names[i]}" for i in ticks], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [f"{i} {names[i]}" for i in ticks], fontsize=7)
    ax.set_facecolor("white")
    ax.set(xlabel="destination core (id, population)", ylabel="source core (id, population)")
    from matplotlib.ticker import FuncFormatter

    bar = fig.colorbar(im, ax=ax, label="KiB sent by the router (log scale); blank = none")
    plain = FuncFormatter(lambda v, _: f"{v:g}")            # 40, not 4 x 10^1
    bar.ax.yaxis.set_major_formatter(plain)
    bar.ax.yaxis.set_minor_formatter(plain)
    ax.set_title(plot_title(run, "router traffic, source -> destination core"), fontsize=10)
    return save_png(fig, path)


def byte_unit(top: float) -> tuple[int, str]:
    """The binary unit an axis reaching ``top`` bytes reads best in (at least 4 of it at the top)."""
    return next(((f, u) for f, u in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")) if top >= 4 * f), (1, "bytes"))


def plot_link_classes(run: RunData, classes: dict, path: Path) -> Path:
    fig = figure(7, 4)
    ax = fig.subplots()
    names = list(classes)
    vals = [classes[k]["bytes"] for k in names]
    scale, unit = byte_unit(max(vals + [1]))
    ax.bar(range(len(names)), [v / scale for v in vals],
           color=["tab:green", "tab:blue", "tab:orange", "tab:red"][:len(names)])
    total = sum(vals)
    for i, v in enumerate(vals):
        ax.text(i, v / scale, f"{human_bytes(v)}" + (f" ({pct(v / total)})" if total else ""), ha="center",
                va="bottom", fontsize=9)
    ax.set_xticks(range(len(names)), [k.replace("_", " ") for k in names])
    ax.set(xlabel="link class (source and destination core)", ylabel=f"data sent ({unit})")
    ax.set_ylim(0, max(vals + [1]) / scale * 1.15)
    ax.set_title(plot_title(run, "bytes per link class"))
    return save_png(fig, path)


def plot_memory(run: RunData, per_core: list[dict], totals: list, names: list[str], budget, path: Path) -> Path:
    n = len(totals)
    fig = figure(max(7.0, 0.35 * n + 4), 5)
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
        ax.axhline(budget / 1024, color="red", ls="--", label=f"budget {human_bytes(budget)}")
        if budget != CHIP_SRAM:          # a changed budget: the chip's own PE stays in sight
            ax.axhline(CHIP_SRAM / 1024, color="black", ls=":", label=f"a SpiNNaker2 PE: {human_bytes(CHIP_SRAM)}")
    ax.set_xticks(range(n), [f"{i} {names[i]}" for i in range(n)], rotation=90 if n > 8 else 0, fontsize=7)
    ax.set(xlabel="core (id, population)", ylabel="memory (KiB)")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(plot_title(run, "memory per core by category"), fontsize=10)
    return save_png(fig, path)


def plot_routing(run: RunData, chips: list[str], used: list[int], capacity, path: Path) -> Path:
    fig = figure(max(6.0, 0.5 * len(chips) + 3), 4)
    ax = fig.subplots()
    ax.bar(range(len(chips)), used, 0.5, color="tab:blue", label="entries used")
    ax.set_xlim(-0.75, len(chips) - 0.25)
    if capacity:                  # the line is labelled where it is drawn: no legend over the bars
        ax.axhline(capacity, color="red", ls="--")
        ax.text(len(chips) - 0.3, capacity * 1.15, f"capacity: {capacity} entries per chip", color="red",
                ha="right", va="bottom", fontsize=8)
        for i, u in enumerate(used):
            ax.text(i, u * 1.1, f"{u} / {capacity} ({pct(u / capacity)})", ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(0.8, max(used + [capacity or 1]) * 4)
    ax.set_xticks(range(len(chips)), chips)
    ax.set(xlabel="chip", ylabel="routing entries used (log scale)")
    ax.set_title(plot_title(run, "routing-table occupancy per chip"))
    return save_png(fig, path)
