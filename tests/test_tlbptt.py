"""Truncated local BPTT (spinnray.rules.bptt.dense) against independent references.

* tests/bptt_reference.py: the existing dense BPTT of one recurrent ALIF layer (full and truncated);
* a hand-written forward loop below (its own code, float64, smooth sigmoid spikes) in which the
  truncation and the block boundaries are made literal by holding the state entering every window
  and the input of every block fixed: central finite differences of its loss are the truncated
  local gradient;
* the bytes of the arrays the update holds, against hand-counted formulas.
"""

import json

import numpy as np
import pytest

from bptt_reference import ALIFNetConfig, init_weights, loss_and_grads
from spinnray.rules.bptt.dense import (DeepALIF, DeepWeights, DenseTrainer, block_ranges, init_deep_weights,
                                  training_memory_bytes)
from spinnray.errors import ConfigError, DataError

from helpers import analog_split

SMOOTH = dict(tau_m_ms=5.0, tau_a_ms=30.0, tau_out_ms=8.0, beta=0.3, v_th=0.5, surrogate="sigmoid", steepness=4.0,
              dtype="float64")


def _problem(T=24, B=2, n_in=3, n_h=4, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.5, 1.0, (T, B, n_in)), rng.integers(0, n_out, B)


# ------------------------------------------------------------------ reference
def ref_losses(cfg, w, x, labels, layers, blocks, window, frozen=None, record=None):
    """Sum over blocks of the blocks' cross-entropies, by plain loops.

    ``record`` (a dict) receives the values to hold fixed; ``frozen`` (such a dict) replaces
    them: the reset term of every step, the state entering every window (v, a, z of every
    layer, y of every readout) and the input every block's first layer receives.
    """
    alpha, rho, kappa = cfg.decays()
    T, B, _ = x.shape
    t_w = cfg.window(T)
    K = window or T
    v = [np.zeros((B, cfg.n_h)) for _ in range(layers)]
    a = [np.zeros((B, cfg.n_h)) for _ in range(layers)]
    z = [np.zeros((B, cfg.n_h)) for _ in range(layers)]
    y = [np.zeros((B, cfg.n_out)) for _ in blocks]
    ysum = [np.zeros((B, cfg.n_out)) for _ in blocks]
    first = {lo: b for b, (lo, hi) in enumerate(blocks)}
    top = {hi - 1: b for b, (lo, hi) in enumerate(blocks)}
    for t in range(T):
        if t % K == 0:                                   # a window starts: its entering state is a constant
            key = ("enter", t)
            if record is not None:
                record[key] = ([q.copy() for q in v], [q.copy() for q in a], [q.copy() for q in z],
                               [q.copy() for q in y])
            if frozen is not None:
                v, a, z, y = ([q.copy() for q in part] for part in frozen[key])
        for b, (lo, hi) in enumerate(blocks):
            y[b] = kappa * y[b] + (1 - kappa) * (z[hi - 1] @ w.out[b])
            if t >= T - t_w:
                ysum[b] = ysum[b] + y[b]
        inp = x[t]
        new_z = []
        for l in range(layers):
            if l in first and l > 0:                     # a block boundary: the input is a constant
                if record is not None:
                    record[("input", t, l)] = inp.copy()
                if frozen is not None:
                    inp = frozen[("input", t, l)]
            a[l] = rho * a[l] + (1 - rho) * z[l]
            thr = cfg.v_th + cfg.beta * a[l]
            reset = z[l] * thr
            if record is not None:
                record[("reset", t, l)] = reset.copy()
            if frozen is not None:
                reset = frozen[("reset", t, l)]
            v[l] = alpha * v[l] + (1 - alpha) * (inp @ w.ff[l] + z[l] @ w.rec[l]) - reset
            zl = 1.0 / (1.0 + np.exp(-cfg.steepness * (v[l] - thr) / cfg.v_th))
            new_z.append(zl)
            inp = zl
        z = new_z
    total = 0.0
    for b in range(len(blocks)):
        lg = ysum[b] / t_w
        lg = lg - lg.max(axis=1, keepdims=True)
        logp = lg - np.log(np.exp(lg).sum(axis=1, keepdims=True))
        total += -logp[np.arange(B), labels].mean()
    return total


def fd_gradient(cfg, w, x, labels, layers, block_size, window, eps=1e-5):
    blocks = block_ranges(layers, block_size)
    frozen = {}
    ref_losses(cfg, w, x, labels, layers, blocks, window, record=frozen)
    out = w.zeros_like()
    for arr, g in zip(w.arrays(), out.arrays()):
        for idx in np.ndindex(arr.shape):
            keep = arr[idx]
            arr[idx] = keep + eps
            up = ref_losses(cfg, w, x, labels, layers, blocks, window, frozen)
            arr[idx] = keep - eps
            down = ref_losses(cfg, w, x, labels, layers, blocks, window, frozen)
            arr[idx] = keep
            g[idx] = (up - down) / (2 * eps)
    for r in out.rec:
        np.fill_diagonal(r, 0.0)
    return out


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("surrogate", ["triangle", "multi_gaussian"])
@pytest.mark.parametrize("loss_window", [None, 9])
def test_one_layer_one_block_full_window_equals_dense_bptt(surrogate, loss_window):
    cfg = ALIFNetConfig(n_in=5, n_h=7, n_out=3, v_th=0.6, surrogate=surrogate, loss_window=loss_window,
                        dtype="float64")
    rng = np.random.default_rng(4)
    x, y = rng.normal(0.3, 1.0, (40, 3, 5)), rng.integers(0, 3, 3)
    w = init_weights(cfg, 2, gain_in=3.0)
    loss, g, _ = loss_and_grads(cfg, w, x, y)
    for window in (None, 40, 1000):
        net = DeepALIF(cfg, 1, window=window)
        losses, gg, _ = net.loss_and_grads(DeepWeights([w.w_in], [w.w_rec], [w.w_out]), x, y)
        assert losses == [loss]
        for got, want in zip(gg.arrays(), g):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)
    assert np.abs(g.w_rec).max() > 1e-4                       # a gradient that could disagree


@pytest.mark.parametrize("K", [1, 7, 13])
def test_one_layer_truncation_equals_dense_truncated_bptt(K):
    cfg = ALIFNetConfig(n_in=5, n_h=7, n_out=3, v_th=0.6, surrogate="multi_gaussian", loss_window=15,
                        dtype="float64")
    rng = np.random.default_rng(5)
    x, y = rng.normal(0.3, 1.0, (40, 3, 5)), rng.integers(0, 3, 3)
    w = init_weights(cfg, 1, gain_in=3.0)
    _, want, _ = loss_and_grads(cfg, w, x, y, truncation=K)
    _, full, _ = loss_and_grads(cfg, w, x, y)
    _, got, _ = DeepALIF(cfg, 1, window=K).loss_and_grads(DeepWeights([w.w_in], [w.w_rec], [w.w_out]), x, y)
    for a, b in zip(got.arrays(), want):
        assert _rel(a, b) <= 1e-12                            # windows run in another order: summation only
    assert _rel(got.rec[0], full.w_rec) > 1e-3                # truncation bites


@pytest.mark.parametrize("layers, block_size, window, loss_window", [
    (3, None, None, None),      # full BPTT through three layers
    (3, 2, 7, 10),              # blocks of 2 + 1 layers, windows of 7: two passes
    (2, 1, 8, 5),               # two blocks, the loss inside the last window only: one pass
    (2, None, 5, None),         # truncation with one block of two layers
])
def test_gradient_equals_hand_truncated_finite_differences(layers, block_size, window, loss_window):
    cfg = ALIFNetConfig(n_in=3, n_h=4, n_out=3, loss_window=loss_window, **SMOOTH)
    x, y = _problem()
    w = init_deep_weights(cfg, layers, block_size, np.random.default_rng(1), in_scale=2.0, ff_scale=2.0,
                          rec_scale=1.0, out_scale=2.0)
    net = DeepALIF(cfg, layers, block_size=block_size, window=window)
    losses, g, logits = net.loss_and_grads(w, x, y)
    blocks = block_ranges(layers, block_size)
    assert sum(losses) == pytest.approx(ref_losses(cfg, w, x, y, layers, blocks, window), rel=1e-12)
    want = fd_gradient(cfg, w, x, y, layers, block_size, window)
    for name, got, ref in zip(("ff",) * layers + ("rec",) * layers + ("out",) * len(blocks), g.arrays(),
                              want.arrays()):
        assert np.abs(ref).max() > 1e-6, name
        assert _rel(got, ref) <= 1e-6, name
    # and truncation / locality change the gradient (so the test above could fail)
    if window or block_size:
        _, full, _ = DeepALIF(cfg, layers).loss_and_grads(DeepWeights(w.ff, w.rec, w.out[-1:]), x, y)
        assert max(_rel(a, b) for a, b in zip(g.arrays()[:2 * layers], full.arrays()[:2 * layers])) > 1e-3


def test_memory_is_the_arrays_held_and_falls_with_window_and_block():
    cfg = ALIFNetConfig(n_in=6, n_h=10, n_out=4, dtype="float32")
    x, y = np.random.default_rng(0).normal(0, 1, (60, 5, 6)), np.arange(5) % 4
    L, B, T = 4, 5, 60
    for window, bs in ((None, None), (20, None), (20, 2), (5, 1)):
        net = DeepALIF(cfg, L, block_size=bs, window=window)
        w = init_deep_weights(cfg, L, bs, np.random.default_rng(0))
        net.loss_and_grads(w, x, y)
        K, n_bs = window or T, bs or L
        assert net.last_memory == net.workspace(T, B).nbytes_by_category()
        # activations: z (K + 1 steps) and psi (K steps) of the layers of one block, float32
        assert net.last_memory["activations"] == 4 * (2 * K + 1) * B * 10 * n_bs
        assert net.last_memory["inputs"] == 4 * K * B * (6 + (10 if n_bs < L else 0))
    mem = {(wdw, bs): training_memory_bytes(cfg, L, T, B, window=wdw, block_size=bs)["total"]
           for wdw in (None, 30, 10) for bs in (None, 2, 1)}
    assert mem[(None, None)] > mem[(30, None)] > mem[(10, None)]
    assert mem[(10, None)] > mem[(10, 2)] > mem[(10, 1)]
    # full BPTT grows with T; a truncated window does not, once T >= window
    full = [training_memory_bytes(cfg, L, t, B)["total"] for t in (100, 200, 400)]
    assert full[2] - full[1] == 2 * (full[1] - full[0]) > 0
    trunc = [training_memory_bytes(cfg, L, t, B, window=10, block_size=1)["total"] for t in (100, 200, 400)]
    assert trunc[0] == trunc[1] == trunc[2]


def test_trainer_learns_a_tiny_task_with_two_blocks_and_windows():
    """Which input group is more active (the task of tests/test_eprop.py), 2 layers, blocks of 1, window 10."""
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


def test_bad_values_raise_naming_them():
    cfg = ALIFNetConfig(n_in=3, n_h=4, n_out=3, dtype="float64")
    with pytest.raises(ConfigError, match="block_size = 0"):
        DeepALIF(cfg, 2, block_size=0)
    with pytest.raises(ConfigError, match="window = 0"):
        DeepALIF(cfg, 2, window=0)
    with pytest.raises(ConfigError, match="layers = 0"):
        DeepALIF(cfg, 0)
    net = DeepALIF(cfg, 2, block_size=1)
    w = init_deep_weights(cfg, 2, 1, np.random.default_rng(0))
    x, y = _problem()
    with pytest.raises(DataError, match="expected 2 integers"):
        net.loss_and_grads(w, x, np.array([0, 5]))
    with pytest.raises(DataError, match="n_in=3"):
        net.loss_and_grads(w, x[:, :, :2], y)
    with pytest.raises(DataError, match="2 out"):
        net.loss_and_grads(init_deep_weights(cfg, 2, None, np.random.default_rng(0)), x, y)


def _compose(*overrides):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from spinnray.config import RunConfig, from_dict

    root = Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True))


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


def test_full_bptt_scenario_refuses_a_window(tmp_path):
    from spinnray.experiments.runner import run

    cfg = _compose("scenario=bptt_cue", *TINY_CUE, "learning.window=50")
    with pytest.raises(ConfigError, match="learning.rule = bptt with learning.window = 50"):
        run(cfg, tmp_path, "bptt_cue")


@pytest.mark.parametrize("override, text", [("machine.weight_bits=4", "machine.weight_bits = 4, machine.synapse = ideal"),
                                            ("machine.synapse=pcm", "machine.weight_bits = 32, machine.synapse = pcm")])
def test_dense_scenario_refuses_low_precision_weights_it_does_not_model(tmp_path, override, text):
    """A dense run keeps float weights: machine.weight_bits < 32 or a PCM synapse is refused, not ignored."""
    from spinnray.experiments.runner import run

    cfg = _compose("scenario=tlbptt_cue", *TINY_CUE, override)
    with pytest.raises(ConfigError, match=f"{text} with a scenario of kind bptt: .*expected machine.weight_bits=32"):
        run(cfg, tmp_path, "tlbptt_cue")
    assert not (tmp_path / "metrics.json").exists()


def test_forward_scenario_refuses_low_precision_weights(tmp_path):
    from spinnray.experiments.runner import run

    cfg = _compose("scenario=forward", "machine.weight_bits=8", "progress=false", "report=false")
    with pytest.raises(ConfigError, match="machine.weight_bits = 8, machine.synapse = ideal with a scenario of kind forward"):
        run(cfg, tmp_path, "forward")


# ------------------------------------------------------------------ gradient clipping
def _clip_case(dtype="float64", layers=2, block_size=1, window=7):
    cfg = ALIFNetConfig(n_in=3, n_h=5, n_out=3, v_th=0.6, surrogate="multi_gaussian", loss_window=10, dtype=dtype)
    rng = np.random.default_rng(7)
    x, y = rng.normal(0.5, 1.0, (24, 4, 3)), rng.integers(0, 3, 4)
    w = init_deep_weights(cfg, layers, block_size, np.random.default_rng(2), in_scale=3.0, ff_scale=3.0,
                          out_scale=3.0)
    return cfg, DeepALIF(cfg, layers, block_size=block_size, window=window), w, x, y


def _hand_norm(arrays):
    total = 0.0
    for a in arrays:
        for v in np.asarray(a, np.float64).ravel():
            total += float(v) * float(v)
    return total ** 0.5


def _applied_gradients(tr):
    """Wrap the trainer's Adam steps: the list gets, per update, the gradient every matrix received."""
    seen = []
    for i, o in enumerate(tr.opts):
        step = o.step

        def spy(param, grad, i=i, step=step):
            if i == 0:
                seen.append([])
            seen[-1].append(np.array(grad, copy=True))
            step(param, grad)
        o.step = spy
    return seen


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_huge_clip_norm_is_no_clipping_bit_for_bit(dtype):
    cfg, net, w, x, y = _clip_case(dtype)
    runs = {}
    for c in (None, 1e30, 1e-3):
        tr = DenseTrainer(net, w, lr=0.05, clip_norm=c)
        for _ in range(4):
            tr.train_batch(x, y)
        runs[c] = tr
    for a, b, w0 in zip(runs[None].weights.arrays(), runs[1e30].weights.arrays(), w.arrays()):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, w0)                          # the weights did move
    assert runs[1e30].clipped == 0 and runs[1e-3].clipped == 4 * len(net.blocks)
    assert runs[None].grad_norms == runs[1e30].grad_norms
    # a small clip_norm does change the trajectory (so the equality above could fail)
    assert any(not np.array_equal(a, b) for a, b in zip(runs[None].weights.arrays(), runs[1e-3].weights.arrays()))


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_small_clip_norm_rescales_each_block_to_exactly_that_norm(weight_decay):
    cfg, net, w, x, y = _clip_case()
    _, g, _ = net.loss_and_grads(w, x, y)                         # the unclipped gradient
    blocks = net.blocks
    parts = [[*g.ff[lo:hi], *g.rec[lo:hi], g.out[b]] for b, (lo, hi) in enumerate(blocks)]
    n = [_hand_norm(p) for p in parts]
    assert max(n) > 1.5 * min(n) > 0                              # a clip norm between the two is possible
    c = (n[0] * n[1]) ** 0.5                                       # clips the larger block only
    tr = DenseTrainer(net, w, lr=0.01, clip_norm=c, weight_decay=weight_decay)
    seen = _applied_gradients(tr)
    tr.train_batch(x, y)
    L = net.layers
    applied = DeepWeights(seen[0][:L], seen[0][L:2 * L], seen[0][2 * L:])
    assert tr.grad_norms == [pytest.approx(n, rel=1e-12)] and tr.clipped == 1
    for b, (lo, hi) in enumerate(blocks):
        got = [*applied.ff[lo:hi], *applied.rec[lo:hi], applied.out[b]]
        w_b = [*w.ff[lo:hi], *w.rec[lo:hi], w.out[b]]
        scale = c / n[b] if n[b] > c else 1.0
        for a, want, wb in zip(got, parts[b], w_b):
            np.testing.assert_allclose(a - weight_decay * wb, scale * want, rtol=1e-12, atol=1e-15)
        if weight_decay == 0.0:
            if n[b] > c:
                assert _hand_norm(got) == pytest.approx(c, rel=1e-12)
                flat_g = np.concatenate([a.ravel() for a in got])
                flat_w = np.concatenate([a.ravel() for a in parts[b]])
                cos = flat_g @ flat_w / (np.linalg.norm(flat_g) * np.linalg.norm(flat_w))
                assert cos == pytest.approx(1.0, abs=1e-12)
            else:                                                 # the other block: untouched, bit for bit
                for a, want in zip(got, parts[b]):
                    np.testing.assert_array_equal(a, want)


def test_one_block_window_T_with_clipping_equals_dense_bptt_trainer():
    """One layer, one block, window = T: the clipped trainer follows tests/bptt_reference.py's clipped trainer."""
    from bptt_reference import DenseBPTTTrainer, Weights

    cfg = ALIFNetConfig(n_in=5, n_h=7, n_out=3, v_th=0.6, surrogate="multi_gaussian", dtype="float64")
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.3, 1.0, (30, 4, 5)), rng.integers(0, 3, 4)
    w = init_weights(cfg, 2, gain_in=3.0)
    _, g, _ = loss_and_grads(cfg, w, x, y)
    c = 0.5 * _hand_norm(g)
    dense = DenseTrainer(DeepALIF(cfg, 1, window=30), DeepWeights([w.w_in], [w.w_rec], [w.w_out]), lr=0.01,
                         clip_norm=c)
    ref = DenseBPTTTrainer(cfg, weights=Weights(*w), lr=0.01, clip_norm=c)
    for _ in range(3):
        dense.train_batch(x, y)
        ref.train_batch(x, y)
    assert dense.clipped == ref.clipped >= 1
    for got, want in zip(dense.weights.arrays(), ref.weights):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("value", [0, 0.0, -1.0, float("nan"), float("inf"), True, "1"])
def test_bad_clip_norm_raises_naming_it(value):
    cfg, net, w, _, _ = _clip_case()
    with pytest.raises(ConfigError, match=r"^clip_norm = "):
        DenseTrainer(net, w, clip_norm=value)


@pytest.mark.parametrize("value, shown", [("0", "0"), ("-2.5", "-2.5"), ("abc", "'abc'")])
def test_bad_clip_norm_in_a_scenario_names_the_key(tmp_path, value, shown):
    from spinnray.experiments.runner import run

    cfg = _compose("scenario=tlbptt_cue", *TINY_CUE, f"learning.clip_norm={value}")
    with pytest.raises(ConfigError, match=rf"learning\.clip_norm = {shown}"):
        run(cfg, tmp_path, "tlbptt_cue")


def test_scenario_reports_gradient_norms_and_clipping(tmp_path):
    from spinnray.experiments.runner import run

    cfg = _compose("scenario=tlbptt_cue", *TINY_CUE, "learning.window=50", "learning.clip_norm=1e-6")
    m = run(cfg, tmp_path, "tlbptt_cue")
    row = m["history"][0]
    assert m["clip_norm"] == 1e-6 and row["clipped_fraction"] == 1.0
    assert m["clipped_updates"] == 2 * m["blocks"]                # 8 trials / batch 4 = 2 updates
    assert row["grad_norm_max"] >= row["grad_norm_median"] > 1e-6
