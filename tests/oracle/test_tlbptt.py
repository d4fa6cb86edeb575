"""Truncated local BPTT (spinnray.rules.bptt.dense) against independent references.

* oracle/bptt_reference.py: the existing dense BPTT of one recurrent ALIF layer (full and truncated);
* a hand-written forward loop below (its own code, float64, smooth sigmoid spikes) in which the
  truncation and the block boundaries are made literal by holding the state entering every window
  and the input of every block fixed: central finite differences of its loss are the truncated
  local gradient;
* the clipped trainer of oracle/bptt_reference.py (one layer, one block, window T).
(Memory and clipping by hand: tests/unit/rules/bptt/test_dense.py.)
"""

import numpy as np
import pytest

from spinnray.rules.bptt.dense import DeepALIF, DeepWeights, DenseTrainer, block_ranges, init_deep_weights

from oracle.bptt_reference import ALIFNetConfig, init_weights, loss_and_grads

SMOOTH = dict(tau_m_ms=5.0, tau_a_ms=30.0, tau_out_ms=8.0, beta=0.3, v_th=0.5, surrogate="sigmoid", steepness=4.0,
              dtype="float64")


def _problem(T=24, B=2, n_in=3, n_h=4, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.5, 1.0, (T, B, n_in)), rng.integers(0, n_out, B)


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


def _hand_norm(arrays):
    total = 0.0
    for a in arrays:
        for v in np.asarray(a, np.float64).ravel():
            total += float(v) * float(v)
    return total ** 0.5


def test_one_block_window_T_with_clipping_equals_dense_bptt_trainer():
    """One layer, one block, window = T: the clipped trainer follows oracle/bptt_reference.py's clipped trainer."""
    from oracle.bptt_reference import DenseBPTTTrainer, Weights

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
