"""The oracle of the BPTT gradients (oracle/bptt_reference.py) against independent references.

(a) finite differences of the same forward (smooth mode, reset held fixed);
(b) the hand-written e-prop of ``eprop_reference`` (equal without recurrence,
    different with it), whose traces are themselves checked by finite
    differences; (c) truncated BPTT; (d) memory accounting; (e) the trainer,
with gradient-norm clipping; (f) its call errors.  (The configuration and clipping of
spinnray.rules.bptt.dense that it shares: tests/unit/rules/bptt/test_dense.py.)
"""

import dataclasses
import math

import numpy as np
import pytest

from spinnray.errors import ConfigError, DataError

from oracle import eprop_reference as ref
from oracle.bptt_reference import (
    ALIFNetConfig,
    DenseBPTTTrainer,
    Weights,
    forward,
    init_weights,
    loss_and_grads,
    softmax_cross_entropy,
    spike_and_pseudo_derivative,
    training_memory_bytes,
)

TINY = dict(n_in=3, n_h=4, n_out=2, tau_m_ms=10.0, tau_a_ms=30.0, beta=0.5, v_th=1.0, tau_out_ms=8.0)


def rel_err(got, want):
    """Frobenius relative error ||got - want|| / ||want||."""
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def fixed_reset(cfg, rec):
    """The reset term z[t-1] * A[t] of a recorded run, (T, B, n_h)."""
    z_prev = np.concatenate([np.zeros_like(rec.z[:1]), rec.z[:-1]])
    return z_prev * (cfg.v_th + cfg.beta * rec.a)


def loss_of(cfg, w, x, labels, reset):
    return softmax_cross_entropy(forward(cfg, w, x, full=False, reset=reset).logits, labels)[0]


def central_differences(cfg, w, x, labels, reset, k, eps=1e-5):
    """d loss / d weights[k] by central differences (W_rec diagonal left at 0)."""
    fd = np.zeros_like(w[k])
    for idx in np.ndindex(fd.shape):
        if k == 1 and idx[0] == idx[1]:
            continue
        vals = []
        for sign in (1.0, -1.0):
            ws = [m.copy() for m in w]
            ws[k][idx] += sign * eps
            vals.append(loss_of(cfg, Weights(*ws), x, labels, reset))
        fd[idx] = (vals[0] - vals[1]) / (2 * eps)
    return fd


@pytest.fixture(scope="module")
def smooth_case():
    cfg = ALIFNetConfig(**TINY, surrogate="sigmoid", steepness=4.0, loss_window=10)
    w = init_weights(cfg, 1, gain_in=4.0, gain_rec=1.5)
    x = np.random.default_rng(0).random((20, 2, cfg.n_in))
    labels = np.array([0, 1])
    rec = forward(cfg, w, x)
    return cfg, w, x, labels, rec


def test_smooth_mode_psi_is_the_exact_derivative():
    cfg = ALIFNetConfig(**TINY, surrogate="sigmoid", steepness=3.0)
    h = np.linspace(-2, 2, 41)
    eps = 1e-6
    z_hi, _ = spike_and_pseudo_derivative(cfg, h + eps / cfg.v_th)
    z_lo, _ = spike_and_pseudo_derivative(cfg, h - eps / cfg.v_th)
    _, psi = spike_and_pseudo_derivative(cfg, h)
    np.testing.assert_allclose(psi, (z_hi - z_lo) / (2 * eps), rtol=1e-7)


@pytest.mark.parametrize("k", [0, 1, 2], ids=["w_in", "w_rec", "w_out"])
def test_bptt_equals_finite_differences_with_recurrence(smooth_case, k):
    cfg, w, x, labels, rec = smooth_case
    assert np.abs(w.w_rec).sum() > 0 and 0.05 < rec.z.mean() < 0.95   # recurrent and not saturated
    reset = fixed_reset(cfg, rec)
    loss, grads, _ = loss_and_grads(cfg, w, x, labels, reset=reset)
    assert loss == pytest.approx(loss_of(cfg, w, x, labels, reset), rel=1e-12)
    fd = central_differences(cfg, w, x, labels, reset, k)
    err = rel_err(grads[k], fd)
    print(f"BPTT vs central differences, {Weights._fields[k]}: relative error {err:.2e}")
    assert err <= 1e-6


def test_reset_is_stop_gradient(smooth_case):
    """With the reset free to move, finite differences no longer match: the fixed reset matters."""
    cfg, w, x, labels, rec = smooth_case
    _, grads, _ = loss_and_grads(cfg, w, x, labels)
    fd_free = central_differences(cfg, w, x, labels, None, 0)
    assert rel_err(grads.w_in, fd_free) > 1e-3


def eprop_case(surrogate, recurrent, loss_window=12):
    cfg = ALIFNetConfig(n_in=4, n_h=5, n_out=3, tau_m_ms=10.0, tau_a_ms=30.0, beta=0.5, v_th=1.0,
                        tau_out_ms=8.0, surrogate=surrogate, loss_window=loss_window)
    w = init_weights(cfg, 3, gain_in=2.0, gain_rec=2.0)
    w = Weights(w.w_in + 1.5, w.w_rec if recurrent else np.zeros_like(w.w_rec), w.w_out)  # most neurons fire
    x = (np.random.default_rng(0).random((25, 3, cfg.n_in)) < 0.4).astype(float)
    labels = np.array([0, 2, 1])
    return cfg, w, x, labels


@pytest.mark.parametrize("loss_window", [None, 12])
@pytest.mark.parametrize("surrogate", ["triangle", "multi_gaussian"])
def test_eprop_equals_bptt_without_recurrence(surrogate, loss_window):
    cfg, w, x, labels = eprop_case(surrogate, recurrent=False, loss_window=loss_window)
    loss, grads, rec = loss_and_grads(cfg, w, x, labels)
    got, _, outs = ref.eprop(dataclasses.asdict(cfg), *w, x, labels)
    # the two forwards agree, and there is enough activity for adaptation to matter
    np.testing.assert_array_equal(np.stack([o["z"] for o in outs], axis=1), rec.z)
    assert rec.z.sum() >= 20 and (rec.z.sum(axis=(0, 1)) > 0).sum() >= 3 and (rec.psi != 0).any()
    for name, g in zip(Weights._fields, grads, strict=True):
        err = rel_err(got[name], g)
        print(f"e-prop vs BPTT ({surrogate}, T_w={loss_window}), {name}: relative error {err:.2e}")
        assert np.linalg.norm(g) > 0
        assert err <= 1e-6


@pytest.mark.parametrize("surrogate", ["triangle", "multi_gaussian"])
def test_eprop_differs_from_bptt_with_recurrence(surrogate):
    cfg, w, x, labels = eprop_case(surrogate, recurrent=True)
    _, grads, rec = loss_and_grads(cfg, w, x, labels)
    got, _, _ = ref.eprop(dataclasses.asdict(cfg), *w, x, labels)
    assert rec.z.sum() >= 20
    assert rel_err(got["w_in"], grads.w_in) > 1e-3        # e-prop drops paths through other neurons
    assert rel_err(got["w_rec"], grads.w_rec) > 1e-3
    assert rel_err(got["w_out"], grads.w_out) <= 1e-12    # the readout gradient is exact either way


def test_reference_surrogates_match():
    for surrogate in ("triangle", "multi_gaussian", "sigmoid"):
        cfg = ALIFNetConfig(**dict(TINY, v_th=1.6), surrogate=surrogate)
        p = dataclasses.asdict(cfg)
        v = np.linspace(-3.0, 5.0, 81)
        thr = 1.7
        z, psi = spike_and_pseudo_derivative(cfg, (v - thr) / cfg.v_th)
        want = np.array([ref.spike_and_psi(p, float(vi), thr) for vi in v])
        np.testing.assert_allclose(z, want[:, 0], rtol=1e-13, atol=0)
        np.testing.assert_allclose(psi, want[:, 1], rtol=1e-12, atol=1e-15)


def test_reference_traces_are_derivatives_of_its_forward():
    """Without recurrence, e_ij[t] = dz_j[t]/dW_ij and ebar_ij[t] = dy-filtered e (smooth mode, fixed reset)."""
    cfg = ALIFNetConfig(n_in=2, n_h=3, n_out=2, tau_m_ms=10.0, tau_a_ms=30.0, beta=0.5, v_th=1.0,
                        tau_out_ms=8.0, surrogate="sigmoid", steepness=4.0)
    p = dataclasses.asdict(cfg)
    w = init_weights(cfg, 2, gain_in=4.0)
    w = Weights(w.w_in, np.zeros_like(w.w_rec), w.w_out)
    x = np.random.default_rng(5).random((12, 1, cfg.n_in))
    _, traces, outs = ref.eprop(p, *w, x, np.array([1]))
    base = outs[0]
    z_prev = np.vstack([np.zeros((1, cfg.n_h)), base["z"][:-1]])
    reset = z_prev * (cfg.v_th + cfg.beta * base["a"])
    _, _, kappa = (math.exp(-cfg.dt_ms / tau) for tau in (cfg.tau_m_ms, cfg.tau_a_ms, cfg.tau_out_ms))
    eps = 1e-6
    for k, kind in ((0, "in"), (1, "rec")):
        dz = np.zeros_like(traces[kind]["e"])            # (T, n_pre, n_h)
        for i, j in np.ndindex(w[k].shape):
            if k == 1 and i == j:
                continue
            zs = []
            for sign in (1.0, -1.0):
                ws = [m.copy() for m in w]
                ws[k][i, j] += sign * eps
                zs.append(ref.forward_sample(p, *ws, x[:, 0], reset=reset)["z"][:, j])
            dz[:, i, j] = (zs[0] - zs[1]) / (2 * eps)
        assert np.abs(dz).max() > 1e-3
        np.testing.assert_allclose(traces[kind]["e"], dz, rtol=1e-5, atol=1e-9)
        ebar = np.zeros_like(dz)
        for t in range(1, len(dz)):
            ebar[t] = kappa * ebar[t - 1] + (1 - kappa) * dz[t - 1]
        np.testing.assert_allclose(traces[kind]["ebar"], ebar, rtol=1e-5, atol=1e-9)


@pytest.fixture(scope="module")
def trunc_case():
    cfg = ALIFNetConfig(**TINY, surrogate="multi_gaussian", loss_window=1)
    w = init_weights(cfg, 4, gain_in=2.0, gain_rec=2.0)
    w = Weights(w.w_in + 1.5, w.w_rec, w.w_out)
    x = (np.random.default_rng(1).random((16, 3, cfg.n_in)) < 0.5).astype(float)
    return cfg, w, x, np.array([1, 0, 1])


def test_truncation_of_whole_sequence_is_full_bptt(trunc_case):
    cfg, w, x, labels = trunc_case
    cfg = dataclasses.replace(cfg, loss_window=None)
    _, full, _ = loss_and_grads(cfg, w, x, labels)
    for K in (16, 40):
        _, got, _ = loss_and_grads(cfg, w, x, labels, truncation=K)
        for a, b in zip(got, full, strict=True):
            np.testing.assert_array_equal(a, b)
    _, short, _ = loss_and_grads(cfg, w, x, labels, truncation=5)
    assert rel_err(short.w_in, full.w_in) > 1e-3


def test_truncation_by_hand_last_step_loss(trunc_case):
    """Loss on y[T-1] only.  K = 1: only dW_out from z[T-2].  K = 2: the adjoint reaches step T-2 and stops."""
    cfg, w, x, labels = trunc_case
    T, B = x.shape[:2]
    alpha, rho, kappa = (math.exp(-cfg.dt_ms / tau) for tau in (cfg.tau_m_ms, cfg.tau_a_ms, cfg.tau_out_ms))
    rec = forward(cfg, w, x)
    assert rec.z[T - 3].sum() > 0 and rec.z[T - 2].sum() > 0
    p = np.exp(rec.logits - rec.logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    err = (p - np.eye(cfg.n_out)[labels]) / B                          # T_w = 1
    _, g1, _ = loss_and_grads(cfg, w, x, labels, truncation=1)
    np.testing.assert_allclose(g1.w_out, (1 - kappa) * rec.z[T - 2].T @ err, rtol=1e-12)
    assert not g1.w_in.any() and not g1.w_rec.any()

    _, g2, _ = loss_and_grads(cfg, w, x, labels, truncation=2)          # window [T-2, T)
    gz = (1 - kappa) * err @ w.w_out.T                                  # dL/dz[T-2]
    dv = rec.psi[T - 2] * gz
    want_rec = (1 - alpha) * rec.z[T - 3].T @ dv
    np.fill_diagonal(want_rec, 0.0)
    np.testing.assert_allclose(g2.w_in, (1 - alpha) * x[T - 2].T @ dv, rtol=1e-12)
    np.testing.assert_allclose(g2.w_rec, want_rec, rtol=1e-12)
    np.testing.assert_allclose(g2.w_out, (1 - kappa) * (rec.z[T - 2].T @ err + kappa * rec.z[T - 3].T @ err),
                               rtol=1e-12)
    _, full, _ = loss_and_grads(cfg, w, x, labels)
    assert rel_err(g2.w_in, full.w_in) > 1e-3


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_memory_is_linear_in_T_and_matches_the_arrays(dtype):
    cfg = ALIFNetConfig(n_in=6, n_h=7, n_out=3, dtype=dtype)
    batch = 2
    totals = []
    for T in (10, 20, 30):
        m = training_memory_bytes(cfg, T, batch)
        x = np.zeros((T, batch, cfg.n_in), dtype)
        trainer = DenseBPTTTrainer(cfg, seed=0)
        _, grads, rec = loss_and_grads(cfg, trainer.weights, x, np.zeros(batch, int))
        assert m["activations"] == rec.z.nbytes + rec.psi.nbytes == rec.nbytes
        assert m["inputs"] == x.nbytes
        assert m["weights"] == sum(a.nbytes for a in trainer.weights)
        assert m["gradients"] == sum(g.nbytes for g in grads)
        assert m["adam"] == trainer.opt.nbytes == 2 * m["weights"]
        assert m["total"] == sum(v for k, v in m.items() if k not in ("total", "per_step"))
        assert m["per_step"] * T == m["activations"] + m["inputs"]
        totals.append(m["total"])
    assert totals[2] - totals[1] == totals[1] - totals[0] > 0


def two_group_task(n, T, rng, group=4, lo=0.05, hi=0.25):
    """Class 0 when the first channel group fires more, class 1 when the second does."""
    labels = rng.integers(0, 2, n)
    rates = np.where(labels[None, :, None] == 0, np.r_[[hi] * group, [lo] * group],
                     np.r_[[lo] * group, [hi] * group])
    return (rng.random((T, n, 2 * group)) < rates).astype(float), labels


def test_dense_trainer_learns_two_group_task():
    cfg = ALIFNetConfig(n_in=8, n_h=16, n_out=2, tau_m_ms=20.0, tau_a_ms=100.0, beta=0.2, v_th=1.0,
                        tau_out_ms=20.0, surrogate="multi_gaussian")
    rng = np.random.default_rng(0)
    x_tr, y_tr = two_group_task(256, 30, rng)
    x_te, y_te = two_group_task(256, 30, rng)
    trainer = DenseBPTTTrainer(cfg, seed=0, lr=0.02)
    loss0, acc0 = trainer.evaluate(x_te, y_te)
    history = trainer.fit(x_tr, y_tr, epochs=6, batch_size=16)
    loss1, acc1 = trainer.evaluate(x_te, y_te)
    print(f"two-group task: test accuracy {acc0:.3f} -> {acc1:.3f}, loss {loss0:.3f} -> {loss1:.3f}")
    assert len(history) == 6 and trainer.updates == 6 * 16
    assert acc1 >= 0.85 and loss1 < loss0 - 0.1
    assert not np.diag(trainer.weights.w_rec).any()                   # no self-connections appear
    np.testing.assert_array_equal(trainer.predict(x_te), forward(cfg, trainer.weights, x_te).logits.argmax(1))


def test_bad_call_arguments():
    cfg = ALIFNetConfig(**TINY, loss_window=5)
    w = init_weights(cfg, 0)
    x = np.zeros((4, 2, cfg.n_in))
    with pytest.raises(ConfigError, match=r"loss_window = 5: exceeds the sequence length T = 4"):
        forward(cfg, w, x)
    x = np.zeros((8, 2, cfg.n_in))
    with pytest.raises(ConfigError, match=r"^truncation = 0"):
        loss_and_grads(cfg, w, x, np.array([0, 1]), truncation=0)
    with pytest.raises(DataError, match=r"x has shape \(8, 2\)"):
        forward(cfg, w, x[:, :, 0])
    with pytest.raises(DataError, match=r"weights.w_rec has shape"):
        forward(cfg, Weights(w.w_in, w.w_rec[:2], w.w_out), x)
    with pytest.raises(DataError, match=r"labels"):
        loss_and_grads(cfg, w, x, np.array([0, 2]))
    with pytest.raises(ConfigError, match=r"^steps = 0"):
        training_memory_bytes(cfg, 0)


def test_dense_trainer_clipping():
    cfg = ALIFNetConfig(n_in=8, n_h=16, n_out=2, tau_m_ms=20.0, tau_a_ms=100.0, beta=0.2, v_th=1.0,
                        tau_out_ms=20.0, surrogate="multi_gaussian")
    x, y = two_group_task(32, 30, np.random.default_rng(2))
    runs = {}
    for c in (None, 1e30, 1e-4):
        tr = DenseBPTTTrainer(cfg, seed=0, lr=0.02, clip_norm=c)
        tr.fit(x, y, epochs=2, batch_size=8)
        runs[c] = tr
    for a, b in zip(runs[None].weights, runs[1e30].weights):
        np.testing.assert_array_equal(a, b)                               # a huge clip norm is no clipping
    assert runs[1e30].clipped == 0 and runs[1e-4].clipped == 8
    assert any(not np.array_equal(a, b) for a, b in zip(runs[None].weights, runs[1e-4].weights))
    # the gradient Adam receives is the hand-rescaled one: first update from the same weights
    w0 = init_weights(cfg, 0)
    _, g, _ = loss_and_grads(cfg, w0, x[:, :8], y[:8])
    hand = math.sqrt(sum(float(v) ** 2 for a in g for v in a.ravel()))
    tr = DenseBPTTTrainer(cfg, seed=0, lr=0.02, clip_norm=0.5 * hand)
    seen = []
    tr.opt.step = lambda w, grads: seen.append([a.copy() for a in grads])
    tr.train_batch(x[:, :8], y[:8])
    assert tr.last_grad_norm == pytest.approx(hand, rel=1e-12) and tr.clipped == 1
    for got, want in zip(seen[0], g):
        np.testing.assert_allclose(got, 0.5 * want, rtol=1e-12, atol=1e-300)
