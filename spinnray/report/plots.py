"""The figures of a run report, drawn on matplotlib's Agg canvas (no display, no global pyplot state;
matplotlib is imported on first use, so reading runs does not pay for it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spinnray.report.runs import RunData, fmt

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


def plot_learning(run: RunData, path: Path) -> Path:
    hist = run.metrics["history"]
    ep = [h.get("epoch", i + 1) for i, h in enumerate(hist)]
    fig = figure(9, 4)
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
    fig.suptitle(plot_title(run, "learning curves"))
    return save_png(fig, path)


def plot_raster(run: RunData, path: Path) -> Path:
    r = run.raster
    fig = figure(9, 5)
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
    ax.set_title(plot_title(run, f"spike raster of sample {r.sample} ({r.steps} steps of {fmt(r.dt_ms)} ms)"))
    return save_png(fig, path)


def plot_phases(run: RunData, rows: list[dict], path: Path) -> Path:
    fig = figure(max(6.0, 1.3 * len(rows) + 3), 4.8)
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
    ax.set_title(plot_title(run, "events per sample against dense (labels: ratio)"))
    return save_png(fig, path)


def plot_matrix(run: RunData, matrix: np.ndarray, names: list[str], path: Path) -> Path:
    from matplotlib.colors import LogNorm

    n = matrix.shape[0]
    fig = figure(7.5, 6.5)
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
    ax.set_title(plot_title(run, "router traffic, source -> destination core"), fontsize=10)
    return save_png(fig, path)


def plot_link_classes(run: RunData, classes: dict, path: Path) -> Path:
    fig = figure(7, 4)
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
        ax.axhline(budget / 1024, color="red", ls="--", label=f"budget {fmt(budget / 1024)} KiB")
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
    if capacity:
        ax.axhline(capacity, color="red", ls="--", label=f"capacity {capacity} per chip")
        for i, u in enumerate(used):
            ax.text(i, u * 1.1, f"{u} / {capacity}", ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(0.8, max(used + [capacity or 1]) * 3)
    ax.set_xticks(range(len(chips)), chips)
    ax.set(xlabel="chip", ylabel="routing entries (log scale)")
    ax.legend(fontsize="small", loc="upper right")
    ax.set_title(plot_title(run, "routing-table occupancy per chip"))
    return save_png(fig, path)
