"""spinnray.nir: export a network or a training run's trained network, load a graph, the command
line, and runs whose network comes from a NIR file (network=nir): forward, and EventProp training
of an imported network whose trained weights go back out as NIR."""

import numpy as np
import pytest

nir = pytest.importorskip("nir")

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import spinnray.nir as snir  # noqa: E402
from spinnray.config import MachineConfig, RunConfig, from_dict  # noqa: E402
from spinnray.errors import ConfigError, DataError, NetworkError  # noqa: E402
from spinnray.experiments.checkpoint import latest, load_checkpoint  # noqa: E402
from spinnray.experiments.runner import run  # noqa: E402
from spinnray.model.builders import DataShape, NIRNetworkConfig, build_nir  # noqa: E402
from spinnray.nir.cli import main  # noqa: E402

from helpers import ROOT, EPropConfig, FeedForwardConfig, eprop_trainer, raises_naming, yinyang_net  # noqa: E402

QUIET = ("backend=local", "progress=false", "report=false")
TINY_YINYANG = ("scenario=eventprop_yinyang", "data.train_size=8", "data.test_size=4", "data.val_size=4",
                "learning.epochs=1",
                "learning.batch_size=4", "parallel.cores_per_population=1", *QUIET)


def _hydra_run(out_dir, *overrides) -> dict:
    """Run as run.py does, with the configuration Hydra saves into the run directory."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    (out_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, out_dir / ".hydra" / "config.yaml")
    return run(from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True)), out_dir, "test")


@pytest.fixture
def yinyang_file(tmp_path):
    """The Yin-Yang network (5 -> 8 -> 3 LIF, dt 0.25 ms) as a NIR file."""
    net = yinyang_net(FeedForwardConfig(hidden=8, dt_ms=0.25, steps=160), seed=1)
    snir.export(net, tmp_path / "yy.nir")
    return net, tmp_path / "yy.nir"


def test_export_and_load_a_network(yinyang_file):
    net, path = yinyang_file
    back = snir.load(path)
    assert [(p.name, p.size, p.model) for p in back.populations.values()] == \
        [(p.name, p.size, p.model) for p in net.populations.values()]
    for a, b in zip(net.projections, back.projections):
        np.testing.assert_array_equal(a.weights, b.weights)
    imp = snir.read(path)
    assert imp.offsets == {"input": 0, "hidden": 1, "output": 2} and imp.outputs == ("output",)
    assert (imp.convention, imp.dt, imp.time_unit) == ("spinnray", 0.25, "ms")


def test_a_run_takes_its_network_from_a_nir_file_and_runs_it_forward(yinyang_file, tmp_path):
    _, path = yinyang_file
    m = run(_compose("network=nir", f"network.path={path}", "network.steps=40", "network.rate_hz=200",
                     "data.trials=2", *QUIET), tmp_path / "fwd", "forward")
    assert set(m["rates_hz"]) == {"input", "hidden", "output"} and m["rates_hz"]["input"] > 0
    assert m["steps"] == 40
    with raises_naming(ConfigError, "network.steps = null: a forward run of network.name = nir needs the steps"):
        run(_compose("network=nir", f"network.path={path}", *QUIET), tmp_path / "fwd2", "forward")


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True))


def test_eventprop_trains_an_imported_network_and_the_trained_weights_go_back_out_as_nir(yinyang_file, tmp_path):
    """NIR in (network=nir), EventProp on the cores, NIR out from the run directory: the exported
    weights are the checkpoint's (read here from the checkpoint file itself) and differ from the
    imported ones."""
    net, path = yinyang_file
    run_dir = tmp_path / "run"
    m = _hydra_run(run_dir, *TINY_YINYANG, "network=nir", f"network.path={path}", "network.dt_ms=0.25",
                   "network.steps=160", "checkpoint.every=1")
    assert m["rule"] == "eventprop" and m["samples"] == 8 + 4 + 4 and np.isfinite(m["test_loss"])
    graph = snir.export(run_dir, tmp_path / "trained.nir")
    cores = load_checkpoint(latest(run_dir / "checkpoints", "eventprop"), "eventprop")["cores"]
    by_shape = {tuple(np.shape(c["weights"][0])): np.asarray(c["weights"][0]) for c in cores.values() if c.get("weights")}
    for lin, shape in (("input_to_hidden", (5, 8)), ("hidden_to_output", (8, 3))):
        np.testing.assert_array_equal(graph.nodes[lin].weight.T, by_shape[shape])
    trained = snir.load(tmp_path / "trained.nir")
    assert not np.allclose(trained.projections[0].weights, net.projections[0].weights)
    assert main(["show", str(tmp_path / "trained.nir")]) == 0


def test_the_command_line_exports_a_run_and_shows_a_file(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _hydra_run(run_dir, *TINY_YINYANG, "network.hidden=6", "checkpoint.every=1")
    out = tmp_path / "net.nir"
    assert main(["export", str(run_dir), str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "population hidden: 6 x LIF(" in shown and "offset 2 step(s) [output]" in shown
    assert main(["export", str(run_dir), str(tmp_path / "s.nir"), "--convention", "snntorch"]) == 0
    assert snir.read(tmp_path / "s.nir", convention="snntorch").dt == 1e-4
    assert main(["show", str(tmp_path / "missing.nir")]) == 2
    assert "DataError: NIR file" in capsys.readouterr().out


def test_export_from_a_run_without_weights_says_what_to_do(tmp_path):
    run_dir = tmp_path / "run"
    _hydra_run(run_dir, *TINY_YINYANG, "network.hidden=6")
    with raises_naming(DataError, "no checkpoint (eventprop-NNNNNNNNN.ckpt)", "train with checkpoint.every=N"):
        snir.export(run_dir, tmp_path / "x.nir")
    fwd = tmp_path / "fwd"
    _hydra_run(fwd, "data.trials=1", "network.steps=10", *QUIET)
    with raises_naming(ConfigError, "is a forward run (learning.rule = none)"):
        snir.export(fwd, tmp_path / "x.nir")
    with raises_naming(DataError, "is not a run directory: no .hydra/config.yaml"):
        snir.export(tmp_path, tmp_path / "x.nir")


def test_the_builder_checks_the_graph_against_the_data(yinyang_file):
    _, path = yinyang_file
    net = build_nir(NIRNetworkConfig(path=str(path), dt_ms=0.25), DataShape(5, 3, "spikes"), 0)
    assert net["hidden"].model.v_th == 1.0                           # unit_threshold: what EventProp needs
    with raises_naming(ConfigError, "the graph's inputs have [5] channels; the data set gives 4"):
        build_nir(NIRNetworkConfig(path=str(path), dt_ms=0.25), DataShape(4, 3, "spikes"), 0)
    with raises_naming(ConfigError, "output populations have [3] neurons; the data set has 2 classes"):
        build_nir(NIRNetworkConfig(path=str(path), dt_ms=0.25), DataShape(5, 2, "spikes"), 0)
    with raises_naming(ConfigError, "network.path = null"):
        build_nir(NIRNetworkConfig(), None, 0)
    analog = build_nir(NIRNetworkConfig(path=str(path), dt_ms=0.25), DataShape(5, 3, "analog"), 0)
    assert type(analog["input"].model).__name__ == "AnalogSource"


def test_e_prop_refuses_an_imported_lif_network_naming_what_it_trains(yinyang_file):
    """NIR has no adaptive neuron: an imported network is LIF, which EventProp trains and e-prop
    (recurrent ALIF) does not."""
    _, path = yinyang_file
    with raises_naming(NetworkError, "e-prop trains ALIF hidden neurons; population 'hidden' is LIF"):
        eprop_trainer(snir.load(path), EPropConfig(), machine=MachineConfig(), hidden_cores=1)
