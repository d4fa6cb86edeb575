"""The figures of a report and a comparison, drawn from run directories written by hand (no run):
what makes them readable is checked on the matplotlib figure itself."""

import json

import numpy as np
import pytest

from spinnray.errors import DataError
from spinnray.report import compare, plots, runs
from spinnray.report.runs import RunData

from helpers import keep_figures


@pytest.fixture
def figures(monkeypatch):
    return keep_figures(monkeypatch)


def test_sample_round_trip_and_refusals(tmp_path):
    x = np.random.default_rng(0).random((30, 4)) < 0.2
    v = np.linspace(0, 1, 60, dtype=np.float32).reshape(30, 2)
    path = runs.save_sample(tmp_path, dt_ms=0.5, input_name="in", inputs=x, readouts={"out": v},
                            classes=["a", "b"], label=1, pred=None, loss_steps=10)
    s = runs.load_sample(path)
    assert (s.dt_ms, s.steps, s.label, s.pred, s.loss_steps, s.classes) == (0.5, 30, 1, None, 10, ["a", "b"])
    assert s.input_spikes and np.array_equal(s.input, x) and np.array_equal(s.readouts["out"], v)
    analog = runs.load_sample(runs.save_sample(tmp_path, dt_ms=1.0, input_name="in", inputs=x * 0.5, readouts={},
                                               classes=[], label=0, pred=0, loss_steps=30))
    assert not analog.input_spikes and analog.input.dtype == np.float32
    with pytest.raises(DataError, match=r"readout 'out' has shape \(29, 2\); expected \(30, n\)"):
        runs.save_sample(tmp_path, dt_ms=1.0, input_name="in", inputs=x, readouts={"out": v[:29]}, classes=[],
                         label=0, pred=0, loss_steps=5)
    with pytest.raises(DataError, match="loss_steps = 31; expected 1 to 30"):
        runs.save_sample(tmp_path, dt_ms=1.0, input_name="in", inputs=x, readouts={}, classes=[], label=0, pred=0,
                         loss_steps=31)
    (tmp_path / "sample.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable sample.npz"):
        runs.load_sample(tmp_path / "sample.npz")


def test_one_epoch_has_one_whole_tick_and_accuracy_starts_at_zero(tmp_path, figures):
    run = RunData(tmp_path, {"scenario": "s", "classes": ["a", "b"],
                             "history": [{"epoch": 1, "train_loss": 0.7, "train_accuracy": 0.5, "test_loss": 0.69,
                                          "test_accuracy": 0.53, "val_accuracy": 0.51}]})
    plots.plot_learning(run, tmp_path / "l.png")
    loss, acc = figures[0].axes
    for ax in (loss, acc):
        assert list(ax.get_xticks()) == [1]
    assert acc.get_ylim() == (0, 100) and loss.get_ylim()[0] == 0
    assert {t.get_text() for t in acc.get_legend().get_texts()} >= {"test accuracy", "validation accuracy",
                                                                    "chance (50 %)"}


def test_small_populations_are_not_slivers_in_the_raster(tmp_path, figures):
    """Yin-Yang's 5 inputs and 3 outputs beside 200 hidden: each panel is at least a sixth of the stack,
    and the output's first-spike times are marked and written (EventProp's answer)."""
    spikes = {"input": np.zeros((40, 5), bool), "hidden": np.zeros((40, 200), bool), "output": np.zeros((40, 3), bool)}
    spikes["input"][[0, 7, 12], [4, 0, 1]] = True
    spikes["hidden"][20:25, 10] = True
    spikes["output"][[17, 19, 30], [0, 2, 0]] = True
    runs.save_raster(tmp_path, spikes, 1.0)
    run = RunData(tmp_path, {"scenario": "eventprop_yinyang", "rule": "eventprop", "classes": ["yin", "yang", "dot"]},
                  raster=runs.load_raster(tmp_path / runs.RASTER_FILE))
    plots.plot_raster(run, tmp_path / "r.png")
    axes = figures[0].axes
    assert [a.get_ylabel().split(" ")[0] for a in axes] == ["output", "hidden", "input"]      # input at the bottom
    heights = [a.get_position().height for a in axes]
    assert min(heights) >= sum(heights) / 6 - 1e-9
    out = axes[0]
    assert [t.get_text() for t in out.get_yticklabels()] == ["yin", "yang", "dot"]
    assert sorted(t.get_text() for t in out.texts) == ["17 ms", "19 ms"]       # first spikes of neurons 0 and 2
    assert axes[-1].get_xlim()[0] < 0                                          # a spike at step 0 is inside the frame


def _job(d, seed: int, cores: int, value: float, acc: float):
    d.mkdir(parents=True)
    (d / ".hydra").mkdir()
    (d / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- parallel.cores_per_population={cores}\n")
    (d / "metrics.json").write_text(json.dumps({
        "schema_version": 1, "scenario": "s", "test_accuracy": acc, "ms_per_step": value,
        "traffic": {"bytes": 3000}, "memory": {"per_core_max_bytes": 1000}}))


def test_sweep_plots_average_seeds_with_error_bars_from_zero_on_whole_ticks(tmp_path, figures):
    jobs = []
    for i, (seed, cores) in enumerate((s, c) for c in (1, 2, 4, 16) for s in (0, 1, 2)):
        jobs.append(tmp_path / str(i))
        _job(jobs[-1], seed, cores, value=10.0 + cores + seed, acc=0.8 + 0.01 * seed)
    files = compare.compare_runs(jobs, tmp_path, ["ms_per_step", "test_accuracy"])
    assert not [f for f in files if "vs_seed" in f]              # seeds are the error bars, not a parameter
    ms, acc = figures
    ax = ms.axes[0]
    line = ax.lines[0]
    assert list(line.get_xdata()) == [1, 2, 4, 16]
    assert np.allclose(line.get_ydata(), [12, 13, 15, 27])      # the mean over three seeds
    bars = ax.containers[0]
    assert bars.has_yerr and np.allclose([seg[1, 1] - seg[0, 1] for seg in bars.lines[2][0].get_segments()], 2.0)
    assert ax.get_ylim()[0] == 0 and ax.get_xscale() == "log"   # 1 to 16: a factor 16, log2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "16"]
    assert "mean \u00b1 s.d. of up to 3 runs (seed)" in ax.texts[0].get_text()
    assert acc.axes[0].get_ylabel() == "test_accuracy (%)" and np.allclose(acc.axes[0].lines[0].get_ydata(), 81)


def test_learning_curves_bundle_seeds_by_the_other_swept_parameters(tmp_path, figures):
    """float32 against 4-bit over two seeds: two colours, one legend entry each naming its run count,
    every run's epochs on the x axis and its last accuracy written at its end; a run never tested
    after two epochs alone draws no curves plot."""
    jobs = []
    for i, (bits, seed) in enumerate((b, s) for b in (32, 4) for s in (0, 1)):
        d = tmp_path / str(i)
        d.mkdir()
        (d / ".hydra").mkdir()
        (d / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- machine.weight_bits={bits}\n")
        hist = [{"epoch": e, "train_loss": 1.0, "test_accuracy": 0.5 + 0.1 * e + 0.01 * seed - 0.05 * (bits == 4)}
                for e in (2, 4)]
        (d / "metrics.json").write_text(json.dumps({"schema_version": 1, "scenario": "s", "test_accuracy":
                                                    hist[-1]["test_accuracy"], "history": hist,
                                                    "traffic": {"bytes": 1}, "memory": {}}))
        jobs.append(d)
    files = compare.compare_runs(jobs, tmp_path / "cmp", ["test_accuracy"])
    assert "comparison_curves_test_accuracy.png" in files
    assert "comparison_curves_test_accuracy.png" in (tmp_path / "cmp" / "comparison.md").read_text()
    ax = figures[-1].axes[0]
    assert len(ax.lines) == 4 and {tuple(line.get_xdata()) for line in ax.lines} == {(2, 4)}
    colours = [line.get_color() for line in ax.lines]
    assert colours[0] == colours[1] != colours[2] == colours[3]
    assert np.allclose(ax.lines[1].get_ydata(), [71, 91]) and np.allclose(ax.lines[2].get_ydata(), [65, 85])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["machine.weight_bits=32 (2 runs)",
                                                                  "machine.weight_bits=4 (2 runs)"]
    assert sorted(t.get_text() for t in ax.texts) == ["85.0", "86.0", "90.0", "91.0"]
    one = tmp_path / "one" / "0"
    one.mkdir(parents=True)
    (one / "metrics.json").write_text(json.dumps({"schema_version": 1, "scenario": "s", "test_accuracy": 0.5,
                                                  "history": [{"epoch": 1, "test_accuracy": 0.5}],
                                                  "traffic": {"bytes": 1}, "memory": {}}))
    assert "comparison_curves_test_accuracy.png" not in compare.compare_runs([one], tmp_path / "one")
