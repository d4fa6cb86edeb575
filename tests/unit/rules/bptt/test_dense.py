"""spinnray.rules.bptt.dense: configuration errors, gradient-norm clipping against hand-computed
rescalings, and the memory of truncated local BPTT against the arrays it holds."""

import math

import numpy as np
import pytest

from spinnray.errors import ConfigError, DataError
from spinnray.rules.bptt.dense import (
    ALIFNetConfig,
    DeepALIF,
    DeepWeights,
    DenseTrainer,
    check_clip_norm,
    clip_by_norm,
    init_deep_weights,
    training_memory_bytes,
)

from oracle.bptt_reference import DenseBPTTTrainer

TINY = dict(n_in=3, n_h=4, n_out=2, tau_m_ms=10.0, tau_a_ms=30.0, beta=0.5, v_th=1.0, tau_out_ms=8.0)


@pytest.mark.parametrize("field,value", [
    ("n_in", 0), ("n_h", 1.5), ("n_out", 1), ("tau_m_ms", 0.0), ("tau_a_ms", -1.0), ("beta", -0.1),
    ("v_th", 0.0), ("tau_out_ms", float("nan")), ("dt_ms", float("inf")), ("surrogate", "relu"),
    ("gamma", 0.0), ("mg_lens", 0.0), ("mg_scale", -1.0), ("mg_height", -0.1), ("steepness", 0.0),
    ("loss_window", 0), ("dtype", "float16"), ("n_h", True),
])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"^{field} = "):
        ALIFNetConfig(**{field: value})


def test_config_from_dict_refuses_unknown_keys_and_wrong_types():
    assert ALIFNetConfig.from_dict({"n_h": 10, "surrogate": "triangle"}).n_h == 10
    with pytest.raises(ConfigError, match=r"network\.tau_mm: unknown key"):
        ALIFNetConfig.from_dict({"tau_mm": 3.0})
    with pytest.raises(ConfigError, match=r"network\.beta = 'x'"):
        ALIFNetConfig.from_dict({"beta": "x"})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_by_norm_against_hand_computation(dtype):
    # norm sqrt(3^2 + 4^2 + 12^2) = 13: clipping to 6.5 halves every entry (exact in binary)
    arrays = [np.array([3.0, -4.0], dtype), np.array([[12.0]], dtype)]
    n, clipped = clip_by_norm(arrays, 6.5)
    assert n == 13.0 and clipped
    np.testing.assert_array_equal(arrays[0], np.array([1.5, -2.0], dtype))
    np.testing.assert_array_equal(arrays[1], np.array([[6.0]], dtype))
    assert arrays[0].dtype == dtype
    # a random case: the result is g c / ||g||, of norm c, same direction
    rng = np.random.default_rng(0)
    g = [rng.normal(0, 1, (4, 3)).astype(dtype), rng.normal(0, 5, (7,)).astype(dtype)]
    hand = math.sqrt(sum(float(v) ** 2 for a in g for v in a.ravel()))
    kept = [a.copy() for a in g]
    n, clipped = clip_by_norm(g, 0.25)
    assert clipped and n == pytest.approx(hand, rel=1e-12)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for a, k in zip(g, kept):
        np.testing.assert_allclose(a, k.astype(np.float64) * (0.25 / hand), rtol=tol)
    assert math.sqrt(sum(float(v) ** 2 for a in g for v in a.ravel())) == pytest.approx(0.25, rel=tol)


def test_clip_by_norm_leaves_small_or_nonfinite_gradients_bit_for_bit():
    rng = np.random.default_rng(1)
    g = [rng.normal(0, 1, (5, 5)).astype(np.float32), rng.normal(0, 1, 3)]
    kept = [a.copy() for a in g]
    for c in (None, 1e30, 13.0):
        n, clipped = clip_by_norm(g, c)
        assert not clipped and n < 13.0
        for a, k in zip(g, kept):
            np.testing.assert_array_equal(a, k)
    bad = [np.array([1.0, np.inf]), np.array([np.nan])]
    for arr in bad:
        keep = arr.copy()
        n, clipped = clip_by_norm([arr], 1.0)
        assert not clipped and not math.isfinite(n)
        np.testing.assert_array_equal(arr, keep)


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "0.5"])
def test_bad_clip_norm_names_it(value):
    with pytest.raises(ConfigError, match=r"^clip_norm = "):
        check_clip_norm(value)
    with pytest.raises(ConfigError, match=r"^clip_norm = "):
        DenseBPTTTrainer(ALIFNetConfig(**TINY), clip_norm=value)
    with pytest.raises(ConfigError, match=r"^clip_norm = "):
        clip_by_norm([np.ones(2)], value)
    assert check_clip_norm(None) is None and check_clip_norm(2) == 2.0


def _problem(T=24, B=2, n_in=3, n_h=4, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.5, 1.0, (T, B, n_in)), rng.integers(0, n_out, B)


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


@pytest.mark.parametrize("value", [0, 0.0, -1.0, float("nan"), float("inf"), True, "1"])
def test_bad_clip_norm_raises_naming_it(value):
    cfg, net, w, _, _ = _clip_case()
    with pytest.raises(ConfigError, match=r"^clip_norm = "):
        DenseTrainer(net, w, clip_norm=value)
