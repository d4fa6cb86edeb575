"""run.py, the Hydra configs and metrics.json."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from spinnray.config import RunConfig, describe, from_dict, MachineConfig, ParallelConfig, ClusterConfig
from spinnray.errors import ConfigError
from spinnray.experiments.runner import run

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {
    "scenario", "backend", "cores", "steps", "wall_s", "traffic", "memory",
}
TRAFFIC = {"spike_events", "error_events", "packets", "bytes", "dense_equivalent_events", "dropped", "rejected"}
MEMORY = {"per_core_max_bytes", "total_bytes", "budget_bytes_per_core"}


def composed(*overrides) -> RunConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True))


def test_every_scenario_composes_and_validates():
    names = sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))
    assert "forward" in names
    from spinnray.experiments.setup import resolve
    for name in names:
        cfg = composed(f"scenario={name}")
        run = resolve(cfg)                    # network, data and learning typed by their registries
        assert run.kind
        assert cfg.machine.pes_per_chip == 152
        # only batched e-prop models its lockstep traces in DRAM, and says so in its YAML
        assert cfg.machine.sram_per_pe_bytes == (4 * 1024 * 1024 if name == "eprop_cue" else 128 * 1024), name


def test_overrides_reach_the_typed_config():
    cfg = composed("backend=local", "seed=5", "network.steps=17", "data.limit=3",
                   "parallel.cores_per_population=2", "parallel.exchange_interval=1", "learning.epochs=2",
                   "machine.neurons_per_core=64")
    assert (cfg.backend, cfg.seed, cfg.network["steps"], cfg.data["limit"]) == ("local", 5, 17, 3)
    assert cfg.parallel.cores_per_population == 2 and cfg.learning["epochs"] == 2
    assert cfg.machine.neurons_per_core == 64


@pytest.mark.parametrize("override, message", [
    ("backend=gpu", "backend = 'gpu': expected one of ['local', 'ray']"),
    ("machine.pes_per_chip=0", "machine.pes_per_chip = 0: expected >= 1"),
    ("machine.dtype=float16", "machine.dtype = 'float16'"),
    ("parallel.exchange_interval=two", "parallel.exchange_interval = 'two': expected an integer"),
    ("+machine.cache=1", "machine.cache: unknown key"),
])
def test_bad_values_name_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError) as e:
        composed(override)
    assert message in str(e.value)


def _documented_keys(path, indent: int = 0) -> dict[str, str]:
    """Keys at ``indent`` spaces of a conf file and the comment on their line."""
    out = {}
    for ln in path.read_text().splitlines():
        body = ln[indent:]
        if ln.startswith(" " * indent) and body[:1].isalpha() and ":" in body:
            out[body.split(":", 1)[0]] = body.split("#", 1)[1].strip() if "#" in body else ""
    return out


def test_every_config_option_is_documented_in_conf_and_every_conf_key_is_an_option():
    """Each field of every typed section appears, with a comment, in its conf file, and every key of a
    conf file is a field: the groups machine, parallel, network, data and learning, checkpoint, cluster."""
    from spinnray.config import CheckpointConfig
    from spinnray.data.base import dataset_entry
    from spinnray.model.builders import builder
    from spinnray.rules import rule

    conf = ROOT / "conf"
    files = [(MachineConfig, conf / "machine" / "spinnaker2.yaml", 0),
             (ParallelConfig, conf / "parallel" / "default.yaml", 0)]
    top = _documented_keys(conf / "config.yaml")
    for section, cls in (("checkpoint", CheckpointConfig), ("cluster", ClusterConfig)):
        assert section in top
    files += [(CheckpointConfig, conf / "config.yaml", 2), (ClusterConfig, conf / "config.yaml", 2)]
    for p in sorted((conf / "network").glob("*.yaml")):
        files.append((builder(p.stem).config, p, 0))
    for p in sorted((conf / "data").glob("*.yaml")):
        files.append((dataset_entry(p.stem).config, p, 0))
    for p in sorted((conf / "learning").glob("*.yaml")):
        files.append((rule(p.stem).config, p, 0))
    for cls, path, indent in files:
        keys = _documented_keys(path, indent)
        names = [name for name, _, _ in describe(cls)]
        for name, _, help_text in describe(cls):
            assert help_text, f"{cls.__name__}.{name} has no help"
            assert name in keys and keys[name], f"{cls.__name__}.{name} is not documented in {path.name}"
        if indent == 0:
            extra = sorted(set(keys) - set(names) - {"pcm"})
            assert not extra, f"{path}: keys {extra} are no option of {cls.__name__}"


def test_forward_run_writes_metrics(tmp_path):
    cfg = composed("backend=local", "network.steps=40", "data.limit=2", "progress=false")
    m = run(cfg, tmp_path, "forward")
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    assert REQUIRED <= set(m) and TRAFFIC <= set(m["traffic"]) and MEMORY <= set(m["memory"])
    assert m["cores"] == 12 and m["steps"] == 40 and m["samples"] == 2
    routers = json.loads((tmp_path / "routers.json").read_text())
    cores = json.loads((tmp_path / "cores.json").read_text())
    assert len(cores) == 12
    assert m["traffic"]["spike_events"] == sum(r["counters"]["spike_events_out"] for r in routers) > 0
    assert m["traffic"]["dense_equivalent_events"] == 2 * 40 * (100 + 200)   # senders: input, hidden
    assert m["memory"]["per_core_max_bytes"] == max(sum(c["memory"].values()) for c in cores)
    assert m["memory"]["per_core_max_bytes"] <= m["memory"]["budget_bytes_per_core"]


def test_forward_replicas_share_the_trials(tmp_path):
    one = run(composed("backend=local", "network.steps=30", "data.limit=4", "progress=false"), tmp_path / "a", "f")
    two = run(composed("backend=local", "network.steps=30", "data.limit=4", "progress=false",
                       "parallel.replicas=2", "parallel.batch_size=2"), tmp_path / "b", "f")
    assert two["cores"] == 2 * one["cores"] and two["replicas"] == 2
    assert two["rates_hz"] == one["rates_hz"]               # the same trials, the same spikes
    assert two["traffic"]["spike_events"] == one["traffic"]["spike_events"]


def _run_py(tmp_path, *args, timeout=240):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_run_py_local(tmp_path):
    out = tmp_path / "out"
    p = _run_py(tmp_path, "backend=local", "network.steps=20", "data.limit=1", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["backend"] == "local" and m["steps"] == 20


def test_run_py_bad_value_exits_2_with_message(tmp_path):
    p = _run_py(tmp_path, "backend=local", "parallel.exchange_interval=5", f"hydra.run.dir={tmp_path / 'o'}")
    assert p.returncode == 2
    assert "exchange_interval = 5 exceeds the minimum synaptic delay of 1" in p.stdout + p.stderr


def test_run_py_sweep(tmp_path):
    p = _run_py(tmp_path, "-m", "backend=local", "network.steps=10", "data.limit=1",
                "parallel.cores_per_population=3,4", f"hydra.sweep.dir={tmp_path / 'm'}")
    assert p.returncode == 0, p.stderr[-2000:]
    cores = sorted(json.loads(f.read_text())["cores"] for f in (tmp_path / "m").glob("*/metrics.json"))
    assert cores == [9, 12]


@pytest.mark.ray
def test_run_py_default_backend_is_embedded_ray(tmp_path):
    out = tmp_path / "out"
    p = _run_py(tmp_path, "network.steps=20", "data.limit=1", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["backend"] == "ray" and m["cores"] == 12 and m["traffic"]["spike_events"] > 0
