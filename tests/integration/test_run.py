"""run.py, the Hydra configs and metrics.json: whole runs, in process and as a subprocess."""

import json
import os
import subprocess
import sys

import pytest

from spinnray.experiments.runner import run

from helpers import ROOT, composed

REQUIRED = {
    "scenario", "backend", "cores", "steps", "wall_s", "traffic", "memory",
}


TRAFFIC = {"spike_events", "error_events", "packets", "bytes", "dense_equivalent_events", "dropped", "rejected"}


MEMORY = {"per_core_max_bytes", "total_bytes", "budget_bytes_per_core"}


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
