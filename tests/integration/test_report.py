"""Run reports and sweep comparisons (spinnray.report), on tiny local runs.
(What needs no run: tests/unit/report/test_runs.py.)"""

import csv
import json
import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from spinnray.experiments.runner import run
from spinnray import report
from spinnray.report import runs

from helpers import composed, keep_figures

FORWARD_PNGS = {"raster.png", "events_per_sample.png", "traffic_matrix.png", "link_classes.png",
                "memory_per_core.png", "routing_occupancy.png"}


@pytest.fixture(scope="module")
def fwd(tmp_path_factory):
    """A forward run of 2 trials x 40 steps; run() builds the report."""
    out = tmp_path_factory.mktemp("fwd")
    run(composed("backend=local", "network.steps=40", "data.limit=2", "progress=false"), out, "forward")
    return out


@pytest.fixture(scope="module")
def ep(tmp_path_factory):
    """Two EventProp epochs on 64 Yin-Yang samples; run() builds the report."""
    out = tmp_path_factory.mktemp("ep")
    run(composed(*EP), out, "eventprop_yinyang", command="python run.py " + " ".join(EP), overrides=EP)
    return out


EP = ("scenario=eventprop_yinyang", "backend=local", "learning.epochs=2", "data.limit=64", "network.steps=40",
      "network.dt_ms=1.0", "progress=false")


@pytest.fixture(scope="module")
def eprop(tmp_path_factory):
    """One e-prop epoch on 8 short cue trials: a host-written input, a non-spiking readout, learning signals."""
    out = tmp_path_factory.mktemp("eprop")
    run(composed("scenario=eprop_cue", "backend=local", "data.train_size=8", "data.test_size=4", "data.n_cues=1",
                 "data.total_ms=400", "network.hidden=6", "learning.epochs=1", "learning.batch_size=4",
                 "parallel.cores_per_population=2", "parallel.replicas=2", "progress=false"), out, "eprop_cue")
    return out


def md_tables(text: str) -> dict[str, list[list[str]]]:
    """Markdown tables under each heading: {heading: [header, row, ...]} (first table under it)."""
    out, heading, rows = {}, None, []
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|"):
            if not re.fullmatch(r"\|(-+\|)+", line.strip()):          # not the separator row
                rows.append([c.strip() for c in line.strip()[1:-1].split(" | ")])
        elif rows:
            out.setdefault(heading, rows)
            rows = []
    return out


def get(metrics, dotted):
    node = metrics
    for part in dotted.split("."):
        node = node[part]
    return node


def same(text: str, value) -> bool:
    """The printed cell equals the metrics.json value (floats to the 6 digits printed)."""
    if value is None:
        return text == "null"                     # how the report prints JSON null
    if isinstance(value, (dict, list)):
        return json.loads(text) == value          # nested values (machine.pcm) are printed as JSON
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if isinstance(value, int):
        return text == str(value)
    if isinstance(value, float):
        return math.isclose(float(text), value, rel_tol=1e-5, abs_tol=1e-12)
    return text == str(value)


def check_png(path: Path) -> None:
    """PNG signature, a well-formed IHDR (length, CRC, size) and non-trivial pixels."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    length, ctype = struct.unpack(">I4s", data[8:16])
    assert (length, ctype) == (13, b"IHDR"), path
    body = data[16:29]
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(ctype + body), f"{path}: IHDR CRC"
    width, height, depth = struct.unpack(">IIB", body[:9])
    assert width >= 300 and height >= 200 and depth == 8, (path, width, height)
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (height, width)
    rgb = np.round(img[..., :3] * 255).astype(np.uint32)          # one integer per colour: fast unique
    colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
    assert len(colours) > 20, f"{path}: only {len(colours)} distinct colours"


def test_a_short_run_writes_every_file(fwd, ep):
    for out, pngs in ((fwd, FORWARD_PNGS), (ep, FORWARD_PNGS | {"learning_curves.png"})):
        assert (out / "report.md").exists() and (out / "report.html").exists()
        md = (out / "report.md").read_text()
        html = (out / "report.html").read_text()
        for name in pngs:
            assert (out / name).exists(), name
            assert f"]({name})" in md, name
            # Self-contained HTML: each PNG embedded byte for byte.
            import base64
            assert base64.b64encode((out / name).read_bytes()).decode() in html, name
        assert "src='data:image/png;base64," in html and ".png'" not in html
    assert (fwd / runs.RASTER_FILE).exists() and (ep / runs.RASTER_FILE).exists()


def test_every_png_is_a_valid_non_trivial_image(fwd, ep):
    pngs = sorted(fwd.glob("*.png")) + sorted(ep.glob("*.png"))
    assert len(pngs) == 2 * len(FORWARD_PNGS) + 1          # the training run adds its learning curves
    for p in pngs:
        check_png(p)


def test_every_figure_names_the_run_and_labels_its_axes(fwd, monkeypatch):
    figs = keep_figures(monkeypatch)
    report.build_report(fwd, html_file=False)
    assert len(figs) == len(FORWARD_PNGS)
    for fig in figs:
        titles = [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else ""]
        assert any("forward" in t and fwd.name in t for t in titles), titles
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>":
                assert ax.get_ylabel()
            elif ax.has_data():
                # stacked panels share their x axis: the bottom one names it
                assert any(a.get_xlabel() for a in ax.get_shared_x_axes().get_siblings(ax)) and ax.get_ylabel(), titles
                assert "(" in ax.get_ylabel() or ax.get_ylabel() == "bytes", ax.get_ylabel()   # a unit


def test_key_figures_are_the_numbers_of_metrics_json(fwd, ep):
    for out in (fwd, ep):
        m = json.loads((out / "metrics.json").read_text())
        tables = md_tables((out / "report.md").read_text())
        rows = tables["All metrics.json keys"][1:]
        keys = set()
        for key, value, _unit, _readable in rows:
            key = key.strip("`")
            keys.add(key)
            assert same(value, get(m, key)), (key, value, get(m, key))
        assert {"traffic.bytes", "traffic.sparsity", "traffic.spike_events_sent", "memory.per_core_max_bytes",
                "memory.max_utilisation", "cores", "wall_s"} <= keys
        for key, value in tables["Machine"][1:]:
            assert same(value, get(m, key.strip("`")))
    m = json.loads((ep / "metrics.json").read_text())
    keys = {r[0].strip("`") for r in md_tables((ep / "report.md").read_text())["All metrics.json keys"]}
    assert {"test_accuracy", "best_test_accuracy", "train_samples_per_s"} <= keys


def test_learning_and_layer_tables_are_the_numbers_of_metrics_json(ep):
    m = json.loads((ep / "metrics.json").read_text())
    tables = md_tables((ep / "report.md").read_text())
    header, *rows = tables["Learning"]
    assert len(rows) == len(m["history"]) == 2
    for row, h in zip(rows, m["history"]):
        assert set(header) == set(h)
        for col, cell in zip(header, row):
            assert same(cell, h[col]), (col, cell, h[col])
    header, *rows = tables["Events per sample against the dense equivalent"]
    checked = set()
    for pop, phase, events, dense, dense_of, ratio, source in rows:
        ev_key = source.split("`")[1]                     # layers.P.key
        assert ev_key.startswith(f"layers.{pop}.") and dense_of == "T x N"
        assert same(events, get(m, ev_key)) and same(dense, m["layers"][pop]["dense_per_sample"])
        assert math.isclose(float(ratio.rstrip(" %")) / 100, get(m, ev_key) / m["layers"][pop]["dense_per_sample"],
                            rel_tol=5e-3)                # a percentage to three significant digits
        checked.add((pop, phase))
    # the input is a source (no errors come back to it); the output has no outgoing projections
    assert checked == {("input", "forward spikes"), ("hidden", "forward spikes"), ("hidden", "backward error events")}


def test_memory_routing_and_link_tables(fwd):
    m = json.loads((fwd / "metrics.json").read_text())
    cores = json.loads((fwd / "cores.json").read_text())
    routers = json.loads((fwd / "routers.json").read_text())
    tables = md_tables((fwd / "report.md").read_text())
    header, *rows = tables["Memory per core"]
    assert [int(r[2]) for r in rows] == m["memory"]["per_core_bytes"]
    for r, c in zip(rows, cores):                       # categories from cores.json, per core
        assert r[1] == c["population"]
        for cat, v in c["memory"].items():
            assert float(r[header.index(f"{cat} (KiB)")]) == round(v / 1024, 1)
    header, *rows = tables["Routing-table occupancy per chip"]
    assert {r[0]: int(r[1]) for r in rows} == m["mapping"]["routing_entries_per_chip"]
    assert all(int(r[2]) == m["machine"]["routing_entries_per_chip"] for r in rows)
    # Link classes: a hand-written pass over routers.json (all cores on chip 0 of one node).
    want = {k: [0, 0] for k in ("same_core", "same_chip", "same_node", "across_nodes")}
    chip = {c["core_id"]: c["chip"] for c in cores}
    for r in routers:
        for name, (events, nbytes) in r["counters"]["links"].items():
            s, d = map(int, name.split("->"))
            k = "same_core" if s == d else ("same_chip" if chip[s] == chip[d] else "same_node")
            want[k][0] += events
            want[k][1] += nbytes
    header, *rows = tables["Bytes per link class"]
    assert {r[0]: [int(r[1]), int(r[2])] for r in rows} == want
    assert want["same_core"][1] > 0                     # recurrent hidden -> hidden traffic
    assert sum(v[1] for v in want.values()) == m["traffic"]["bytes"]


def test_forward_raster_is_the_first_sample(tmp_path):
    """With one trial, the raster holds every spike the run counted."""
    run(composed("backend=local", "network.steps=30", "data.limit=1", "progress=false", "report=false"),
        tmp_path, "forward")
    assert not (tmp_path / "report.md").exists()               # report=false
    m = json.loads((tmp_path / "metrics.json").read_text())
    cores = json.loads((tmp_path / "cores.json").read_text())
    r = report.load_raster(tmp_path / runs.RASTER_FILE)
    assert r.steps == 30 and r.dt_ms == 1.0 and set(r.spikes) == set(m["rates_hz"])
    for name, (t, _) in r.spikes.items():
        assert t.size == round(m["rates_hz"][name] * 30 * r.sizes[name] / 1000.0)
    sent = sum(c["counters"]["spike_events_sent"] for c in cores if c["population"] == "input")
    assert r.spikes["input"][0].size == sent > 0


def test_a_sweep_of_two_jobs(tmp_path):
    sweep = tmp_path / "multirun"
    for job, cpp in enumerate((4, 5)):
        d = sweep / str(job)
        overrides = ["backend=local", f"parallel.cores_per_population={cpp}", "network.steps=30",
                     "data.limit=2", "progress=false", "report=false"]
        run(composed(*overrides), d, "forward")
        (d / ".hydra").mkdir()
        (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    assert report.main([str(sweep), "--metric", "traffic.bytes"]) == 0
    with open(sweep / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert "test_accuracy" not in rows[0] and "status" in rows[0]       # no empty metric columns
    assert [r["progress"] for r in rows] == ["false", "false"]           # an unswept override is a column too
    assert [r["parallel.cores_per_population"] for r in rows] == ["4", "5"]
    for job, r in enumerate(rows):
        m = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert r["job"] == str(job) and r["status"] == "ok"
        assert int(r["cores"]) == m["cores"] and int(r["traffic.bytes"]) == m["traffic"]["bytes"]
        assert float(r["ms_per_step"]) == m["ms_per_step"]
        assert float(r["spike_events_per_sample"]) == m["traffic"]["spike_events_sent"] / m["samples"]
        assert int(r["memory.per_core_max_bytes"]) == m["memory"]["per_core_max_bytes"]
    assert int(rows[0]["cores"]) == 12 and int(rows[1]["cores"]) == 15
    md = (sweep / "comparison.md").read_text()
    assert "swept parameters: `parallel.cores_per_population`" in md
    table = md_tables(md)[next(iter(md_tables(md)))]
    assert len(table) == 3 and "parallel.cores_per_population" in table[0]
    plot = sweep / "comparison_traffic_bytes_vs_parallel_cores_per_population.png"
    check_png(plot)
    assert f"]({plot.name})" in md
    # The Hydra callback does the same when a multirun ends.
    (sweep / "comparison.csv").unlink()
    report.sweep_callback().on_multirun_end(OmegaConf.create({"report": True, "hydra": {"sweep": {"dir": str(sweep)}}}))
    with open(sweep / "comparison.csv") as f:
        assert [r["cores"] for r in csv.DictReader(f)] == ["12", "15"]


def test_a_sweep_over_rules_compares_training_memory(tmp_path):
    """One comparison column holds each rule's training memory: e-prop's training state over its
    cores, the dense runner's training memory; a job refused for a precision its kind does not
    model is listed with the reason (as run.py leaves it)."""
    sweep = tmp_path / "multirun"
    tiny = ["backend=local", "data.train_size=8", "data.test_size=4", "data.n_cues=1", "data.total_ms=400",
            "network.hidden=6", "learning.epochs=1", "progress=false", "report=false"]
    jobs = [("eprop_cue", ["parallel.cores_per_population=2", "parallel.replicas=2"]),
            ("tlbptt_cue", ["learning.window=50"]),
            ("tlbptt_cue", ["learning.window=50", "machine.weight_bits=4"])]
    for job, (scenario, extra) in enumerate(jobs):
        d = sweep / str(job)
        overrides = [f"scenario={scenario}", *tiny, *extra]
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        try:
            run(composed(*overrides), d, scenario)
        except Exception as e:                                  # what run.py does for a failed sweep job
            (d / "error.txt").write_text(f"{type(e).__name__}: {e}\n")
    assert report.main([str(sweep)]) == 0
    with open(sweep / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    eprop = json.loads((sweep / "0" / "metrics.json").read_text())
    dense = json.loads((sweep / "1" / "metrics.json").read_text())
    assert int(rows[0]["training_memory_bytes"]) == eprop["training_state_bytes"] > 0
    assert int(rows[1]["training_memory_bytes"]) == dense["training_memory_bytes"] > 0
    assert not (sweep / "2" / "metrics.json").exists() and rows[2]["training_memory_bytes"] == ""
    assert "machine.weight_bits = 4" in rows[2]["status"] and "kind bptt" in rows[2]["status"]
    check_png(sweep / "comparison_training_memory_bytes_vs_scenario.png")


def test_epochs_without_a_test_score_leave_blank_cells(ep, tmp_path):
    """e-prop evaluates every few epochs: history rows may lack test_* keys."""
    import shutil

    for name in ("metrics.json", "cores.json", "routers.json"):
        shutil.copy(ep / name, tmp_path / name)
    m = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss"):
        del m["history"][0][key]
    m["history"][1]["spikes_per_s"] = 12.5                   # an extra per-epoch key becomes a column
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    files = report.build_report(tmp_path, html_file=False)
    check_png(files["learning_curves.png"])
    header, *rows = md_tables((tmp_path / "report.md").read_text())["Learning"]
    first, second = (dict(zip(header, r)) for r in rows)
    assert first["test_accuracy"] == first["test_loss"] == first["spikes_per_s"] == ""
    assert same(second["test_accuracy"], m["history"][1]["test_accuracy"]) and second["spikes_per_s"] == "12.5"


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _close3(shown: str, value: float) -> bool:
    """A number the headline shows to three significant digits."""
    return math.isclose(_number(shown), value, rel_tol=5e-3, abs_tol=1e-9)


def test_headline_numbers_are_those_of_metrics_json(fwd, ep, eprop):
    """The summary the report opens with, parsed back: every number equals metrics.json (or
    config.json, cores.json and raster.npz for the network)."""
    for out in (fwd, ep, eprop):
        m = json.loads((out / "metrics.json").read_text())
        cfg = json.loads((out / "config.json").read_text())
        rows = {r[0]: r[1] for r in md_tables((out / "report.md").read_text())["Summary"][1:]}
        t, mem = m["traffic"], m["memory"]
        got = re.search(r"([\d,]+) sent = ([\d.]+) % of dense ([\d,]+) .*; ([\d,]+) deliveries to cores "
                        r"\(([\d.]+) per spike sent\)", rows["spikes"])
        sent, share, dense, delivered, fanout = got.groups()
        assert (_number(sent), _number(dense), _number(delivered)) == \
            (t["spike_events_sent"], t["dense_equivalent_events"], t["spike_events"])
        assert _close3(share, 100 * t["spike_events_sent"] / t["dense_equivalent_events"])
        assert _close3(fanout, t["spike_events"] / t["spike_events_sent"])
        got = re.search(r"\(([\d,]+) bytes\) in ([\d,]+) packets", rows["bytes"])
        assert (_number(got[1]), _number(got[2])) == (t["bytes"], t["packets"])
        got = re.search(r"largest core ([\d.]+) (KiB|MiB) of its ([\d.]+) (KiB|MiB) budget \(([\d.]+) %\)",
                        rows["memory"])
        scale = {"KiB": 1024, "MiB": 1024 ** 2}
        assert _close3(got[1], mem["per_core_max_bytes"] / scale[got[2]])
        assert _close3(got[3], mem["budget_bytes_per_core"] / scale[got[4]])
        assert _close3(got[5], 100 * mem["max_utilisation"])
        assert _close3(re.search(r"wall ([\d.]+) (m?s)", rows["time"])[1],
                       m["wall_s"] * (1000 if "ms" in rows["time"].split(";")[0] else 1))
        # the network: each population's neurons and cores, counted from cores.json and the raster
        cores = json.loads((out / "cores.json").read_text())
        sizes = report.load_raster(out / runs.RASTER_FILE).sizes
        found = re.findall(r"(\w+): ([\d,]+) [^;.]*? (on \d+ cores?|written by the host)", rows["network"])
        assert [f[0] for f in found] == list(m["mapping"]["populations"]), rows["network"]
        for name, n, where in found:
            if name in sizes:
                assert _number(n) == sizes[name]
            ncores = sum(c["population"] == name for c in cores) // m["mapping"]["replicas"]     # per copy
            assert where == ("written by the host" if ncores == 0 else f"on {ncores} core{'s' * (ncores != 1)}")
        assert f"{m['cores']} cores on 1 chip" in rows["network"]
        if "test_accuracy" not in m:
            assert "accuracy" not in rows and "error events" not in rows
            assert rows["learning"] == f"none: a forward run of {m['samples']} samples x {m['steps']} steps of 1 ms"
            assert rows["command"] == "not recorded (the run was not started by `run.py`)"
            continue
        assert _close3(re.search(r"test ([\d.]+) %", rows["accuracy"])[1], 100 * m["test_accuracy"])
        assert _close3(re.search(r"chance ([\d.]+) %", rows["accuracy"])[1], 100 / len(m["classes"]))
        got = re.search(r"([\d,]+) sent = ([\d.]+) % of the spikes sent; ([\d,]+) deliveries", rows["error events"])
        assert (_number(got[1]), _number(got[3])) == (t["error_events_sent"], t["error_events"])
        assert _close3(got[2], 100 * t["error_events_sent"] / t["spike_events_sent"])
        learn = cfg["learning"]
        assert rows["learning"].startswith(f"{learn['rule']}: {learn['epochs']} epoch")
        assert f"mini-batch {learn['batch_size']}, Adam lr {learn['lr']:g}" in rows["learning"]
    assert json.loads((ep / "config.json").read_text())["overrides"] == list(EP)
    assert md_tables((ep / "report.md").read_text())["Summary"][1][1] == f"`python run.py {' '.join(EP)}`"


def test_report_opens_with_the_answer_then_contents_and_ends_with_the_raw_keys(ep):
    md = (ep / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## Summary", "## Contents"] and headings[-1] == "## All metrics.json keys"
    toc = re.findall(r"^- \[(.+)\]\(#([\w-]+)\)$", md, re.M)
    assert [t for t, _ in toc] == [h[3:] for h in headings[2:]]
    html = (ep / "report.html").read_text()
    for _, anchor in toc:                             # every link of the contents has its heading in the HTML
        assert f"id='{anchor}'" in html and f"href='#{anchor}'" in html


def test_eprop_sample_and_learning_signals(eprop):
    """The cue sample shows its input (host-written, so only in sample.npz) and the readout's traces; the
    learning signals (one per hidden neuron per sample) are compared with N, not T x N; the non-spiking
    readout gets a sentence, not a dense bar."""
    m = json.loads((eprop / "metrics.json").read_text())
    s = report.load_sample(eprop / runs.SAMPLE_FILE)
    assert s.input_name == "input" and s.input.shape == (m["steps"], m["inputs"]) and s.classes == ["left", "right"]
    assert set(s.readouts) == {"output"} and s.readouts["output"].shape == (m["steps"], 2)
    assert s.loss_steps < m["steps"]                                     # the recall window
    # e-prop predicts the readout with the larger mean over the loss window
    assert s.pred == int(np.argmax(s.readouts["output"][-s.loss_steps:].mean(axis=0)))
    header, *rows = md_tables((eprop / "report.md").read_text())["Events per sample against the dense equivalent"]
    by = {(r[0], r[1]): r for r in rows}
    assert set(by) == {("hidden", "forward spikes"), ("hidden", "learning signals")}
    hidden = m["mapping"]["populations"]["hidden"]["neurons"]
    signals = by[("hidden", "learning signals")]
    assert same(signals[2], m["layers"]["hidden"]["learning_signals_per_sample"]) and int(signals[3]) == hidden
    assert signals[4] == "N" and m["layers"]["hidden"]["learning_signals_per_sample"] == hidden
    md = (eprop / "report.md").read_text()
    assert "`output` (li, 2 neurons) is a non-spiking readout: it sends no spikes" in md
    check_png(eprop / "raster.png")
