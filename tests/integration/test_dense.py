"""The dense baselines end to end: truncated local BPTT learns a tiny task, and the bptt/tlbptt scenarios
run through the Hydra configs and write their accuracy, history, memory and gradient norms."""

import json

import numpy as np
import pytest

from spinnray.rules.bptt.dense import DeepALIF, DenseTrainer, init_deep_weights

from helpers import analog_split, composed as _compose
from oracle.bptt_reference import ALIFNetConfig


def test_trainer_learns_a_tiny_task_with_two_blocks_and_windows():
    """Which input group is more active (the task of tests/integration/test_eprop.py), 2 layers, blocks of 1, window 10."""
    rng = np.random.default_rng(0)
    T, n_in = 30, 8

    def data(n):
        lab = rng.integers(0, 2, n)
        rate = np.where(np.arange(n_in)[None, :] < n_in // 2, 0.05, 0.3)
        rate = np.where(lab[:, None] == 1, rate, rate[:, ::-1])
        return (rng.random((n, T, n_in)) < rate[:, None, :]).astype(np.float64), lab

    xtr, ytr = data(160)
    xte, yte = data(100)
    cfg = ALIFNetConfig(n_in=n_in, n_h=12, n_out=2, tau_m_ms=10.0, v_th=0.6, surrogate="triangle", dtype="float64")
    net = DeepALIF(cfg, 2, block_size=1, window=10)
    w = init_deep_weights(cfg, 2, 1, np.random.default_rng([1, 5]), in_scale=4.0, out_scale=10.0, ff_scale=4.0)
    tr = DenseTrainer(net, w, lr=0.02)
    before, _ = tr.evaluate(analog_split(xte, yte))
    for _ in range(3):
        for first in range(0, 160, 8):
            tr.train_batch(np.ascontiguousarray(xtr[first:first + 8].transpose(1, 0, 2)), ytr[first:first + 8])
    after, _ = tr.evaluate(analog_split(xte, yte))
    assert after >= 0.8 and after > before + 0.1, (before, after)


TINY_CUE = ("data.train_size=8", "data.test_size=4", "data.n_cues=1", "data.total_ms=400", "network.hidden=6",
            "learning.epochs=1", "learning.batch_size=4", "progress=false", "report=false")


@pytest.mark.parametrize("scenario, extra", [("tlbptt_cue", ("learning.window=50",)), ("bptt_cue", ())])
def test_scenario_writes_accuracy_history_and_memory(tmp_path, scenario, extra):
    from spinnray.experiments.runner import run

    cfg = _compose(f"scenario={scenario}", *TINY_CUE, *extra)
    m = run(cfg, tmp_path, scenario)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["training_memory_bytes"] == m["training_memory_bytes"] == m["training_memory"]["total"] > 0
    assert 0.0 <= m["test_accuracy"] <= 1.0 and len(m["history"]) == 1 and m["steps"] == 400
    assert m["rule"] == scenario.split("_")[0] and m["layers"] == cfg.network["layers"]
    T, B = 400, 4
    if scenario == "tlbptt_cue":
        assert m["window"] == 50
        assert m["training_memory"]["activations"] == 4 * (2 * 50 + 1) * B * 6 * m["block_size"]
    else:
        assert m["window"] == T and m["blocks"] == 1
        assert m["training_memory"]["activations"] == 4 * (2 * T + 1) * B * 6 * m["layers"]


def test_dense_scenario_trains_on_fresh_cue_trials_with_resample(tmp_path):
    """data.resample reaches the dense trainers: epoch 1 as without it, epoch 2 on other trials."""
    from spinnray.experiments.runner import run

    two = (*TINY_CUE, "learning.epochs=2", "learning.eval_every=2")
    fixed = run(_compose("scenario=bptt_cue", *two), tmp_path / "fixed", "bptt_cue")
    fresh = run(_compose("scenario=bptt_cue", *two, "data.resample=true"), tmp_path / "fresh", "bptt_cue")
    assert fresh["history"][0]["train_loss"] == fixed["history"][0]["train_loss"]
    assert fresh["history"][1]["train_loss"] != fixed["history"][1]["train_loss"]


def test_scenario_reports_gradient_norms_and_clipping(tmp_path):
    from spinnray.experiments.runner import run

    cfg = _compose("scenario=tlbptt_cue", *TINY_CUE, "learning.window=50", "learning.clip_norm=1e-6")
    m = run(cfg, tmp_path, "tlbptt_cue")
    row = m["history"][0]
    assert m["clip_norm"] == 1e-6 and row["clipped_fraction"] == 1.0
    assert m["clipped_updates"] == 2 * m["blocks"]                # 8 trials / batch 4 = 2 updates
    assert row["grad_norm_max"] >= row["grad_norm_median"] > 1e-6
