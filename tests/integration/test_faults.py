"""Faults anywhere are recovered or named: a core killed during the test pass recovers to the
uninterrupted result; a stopped core is named first, by its router; a sweep whose jobs fail exits 1."""

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import ray

from spinnray import LIF, MachineConfig, Network, Simulator, SpikeSource
from spinnray.config import ClusterConfig, RunConfig, from_dict
from spinnray.errors import TransportError
from spinnray.experiments.runner import run
from spinnray.experiments.trainer import Trainer

from helpers import ROOT


def _cfg(**over):
    d = {"kind": "eprop", "seed": 3, "backend": "ray", "progress": False, "report": False,
         "parallel": {"cores_per_population": 2},
         "network": {"hidden": 10, "tau_mem_ms": 20.0, "tau_adapt_ms": 500.0, "beta": 5.0, "v_th": 0.6,
                     "tau_out_ms": 20.0, "w_in_scale": 20.0, "w_out_scale": 10.0},
         "data": {"name": "cue", "train_size": 16, "test_size": 8, "n_cues": 3, "total_ms": 700.0},
         "learning": {"epochs": 2, "batch_size": 4, "lr": 0.01, "surrogate": "triangle", "gamma": 0.3},
         "checkpoint": {"every": 2}, "cluster": {"round_timeout_s": 30.0}}
    d.update(over)
    return from_dict(RunConfig, d)


@pytest.mark.ray
def test_core_killed_during_the_test_pass_recovers_to_the_same_weights(tmp_path, monkeypatch, ray_session):
    full = run(_cfg(), tmp_path / "full", "t")
    real, calls = Trainer.evaluate, {"n": 0}

    def evaluate(self, split, batch, **kw):
        calls["n"] += 1
        if calls["n"] == 1:                        # the first test pass, after epoch 1: kill a hidden core
            ray.kill(self.sim.backend.actors[0])
        return real(self, split, batch, **kw)

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    got = run(_cfg(), tmp_path / "killed", "t")
    assert got["restarts"] == 1 and calls["n"] >= 3    # the interrupted pass, its repeat, and epoch 2's
    assert got["weights_crc32"] == full["weights_crc32"]
    strip = [{k: v for k, v in h.items() if k != "train_s"} for h in full["history"]]
    assert [{k: v for k, v in h.items() if k != "train_s"} for h in got["history"]] == strip
    assert (tmp_path / "killed" / "metrics.json").exists()


@pytest.mark.ray
def test_a_stopped_core_is_named_first_by_its_router(ray_session):
    rng = np.random.default_rng(0)
    net = Network()
    net.population("inp", 10, SpikeSource())
    net.population("h", 30, LIF())
    net.connect("inp", "h", rng.normal(0.5, 0.2, (10, 30)))
    sim = Simulator(net, MachineConfig(), cores_per_population=3, backend="ray",
                    cluster=ClusterConfig(round_timeout_s=2.0))
    victim = 4                                      # a core of h; cores 0-2 hold the inputs
    pid = ray.get(sim.backend.actors[victim].pid.remote())
    threading.Timer(0.5, os.kill, (pid, signal.SIGSTOP)).start()
    try:
        with pytest.raises(TransportError) as e:
            sim.run(20_000, {"inp": np.zeros((20_000, 1, 10), bool)})
    finally:
        os.kill(pid, signal.SIGCONT)
        sim.close()
    msg = str(e.value)
    assert msg.startswith(f"core {victim} (chip 0, router 0, node 0") and "sent nothing to router 0 within" in msg
    assert "the core hangs or its process is stopped" in msg


@pytest.mark.ray
def test_a_sweep_whose_jobs_fail_exits_1_and_counts_them(tmp_path):
    proc = subprocess.run([sys.executable, "run.py", "-m", "backend=local", "network.steps=10", "data.trials=1",
                           "report=false", "progress=false", "parallel.cores_per_population=1",
                           "machine.neurons_per_core=1,2", f"hydra.sweep.dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "2 of 2 jobs failed" in proc.stderr
    assert len(list(tmp_path.glob("*/error.txt"))) == 2
