"""The test oracle of the BPTT gradients: a dense single-process BPTT of one recurrent ALIF layer
(numpy only), written out independently of :mod:`spinnray.rules.bptt.dense`.

This is the full-BPTT baseline against which model-parallel e-prop is
measured: the same discrete network, its exact gradient by hand-derived
reverse-mode recursions, the memory BPTT needs for one update, and a small
Adam trainer.  Every sequence is time-major, ``(T, batch, n)``.

Network (step index t = 0..T-1, dt = one step; ``alpha = exp(-dt/tau_m)``,
``rho = exp(-dt/tau_a)``, ``kappa = exp(-dt/tau_out)``; weights are indexed
``(pre, post)``; ``v = a = z = y = 0`` before t = 0)::

    a[t] = rho a[t-1] + (1 - rho) z[t-1]
    A[t] = v_th + beta a[t]
    v[t] = alpha v[t-1] + (1 - alpha) (x[t] @ W_in + z[t-1] @ W_rec) - z[t-1] * A[t]
    z[t] = H(v[t] - A[t])                       # 1.0 where v[t] > A[t]
    y[t] = kappa y[t-1] + (1 - kappa) z[t-1] @ W_out    # spikes reach the readout one step later
    logits = mean(y[t] for t in [T - T_w, T))
    loss = mean over the batch of cross-entropy(softmax(logits), label)

With delays (``rec_delay`` = d_r, ``out_delay`` = d_o steps, both >= 1, keyword arguments of
:func:`forward` and :func:`loss_and_grads`) a spike reaches the other hidden neurons d_r steps
and the readout d_o steps after it was emitted: ``z[t-1] @ W_rec`` becomes ``z[t-d_r] @ W_rec``
and ``z[t-1] @ W_out`` becomes ``z[t-d_o] @ W_out``; a neuron's own adaptation and reset still
use its ``z[t-1]``.  In the reverse recursions ``dy[t+1]`` in ``gz`` becomes ``dy[t+d_o]``,
``dv[t+1]`` becomes ``dv[t+d_r]``, and the parameter terms use ``z[t-d_r]``, ``z[t-d_o]``.

``W_rec`` has a zero diagonal (no self-connections, a fixed mask: its
gradient there is zero too).  The reset term ``z[t-1] * A[t]`` is a constant
in every gradient (stop-gradient, as in Bellec et al. 2020).  ``H`` has the
pseudo-derivative ``psi[t] = dz[t]/dv[t]`` (and ``dz[t]/da[t] = -beta psi[t]``),
a function of ``h[t] = (v[t] - A[t]) / v_th``:

* ``"triangle"`` (Bellec et al.): ``psi = (gamma / v_th) max(0, 1 - |h|)``, gamma 0.3;
* ``"multi_gaussian"`` (Yin et al. 2021, used by Rostami et al. 2022):
  ``psi = (gamma / v_th) [(1 + height) N(h; 0, lens) - height N(h; lens, scale lens)
  - height N(h; -lens, scale lens)]``, gamma 0.5, lens 0.5, scale 6, height 0.15,
  ``N`` the normal pdf (it is slightly negative far from the threshold);
* ``"sigmoid"`` (a smooth test mode): the forward "spike" itself is
  ``z = sigmoid(k h)`` with ``k = steepness`` and ``psi = dz/dv = (k / v_th) z (1 - z)``
  exactly, so the manual gradient equals the derivative of the forward
  function and can be checked by finite differences (with the reset term
  held fixed: see ``forward(reset=...)``).

Reverse mode (adjoints ``dv[t] = dL/dv[t]``, ``da[t] = dL/da[t]``,
``dy[t] = dL/dy[t]``, total derivatives; all zero at t = T)::

    err     = (softmax(logits) - onehot(label)) / (T_w B)        # dL/dy[t] at a window step
    gz[t]   = (1 - kappa) dy[t+1] @ W_out^T + (1 - alpha) dv[t+1] @ W_rec^T + (1 - rho) da[t+1]
    dy[t]   = kappa dy[t+1] + err [t in window]
    dv[t]   = alpha dv[t+1] + psi[t] gz[t]
    da[t]   = rho da[t+1] - beta psi[t] gz[t]
    dW_in  += x[t]^T   ((1 - alpha) dv[t])
    dW_rec += z[t-1]^T ((1 - alpha) dv[t])     (diagonal zeroed)
    dW_out += z[t-1]^T ((1 - kappa) dy[t])

Truncated BPTT (``truncation=K``): the sequence is cut into windows
``[0, K), [K, 2K), ...``; the forward state flows across window boundaries
unchanged, but no adjoint crosses them backwards (as if ``v, a, z, y`` were
detached at the start of each window).  Step ``t0 = mK``'s own parameter
terms still use ``z[t0-1]`` (a constant).  In the recursion above this sets
``dv, da, dy`` to zero after step ``t0`` is processed (with delays: an adjoint of step
``s`` reaches step ``t`` only when both lie in the same window).  ``K >= T`` is full
BPTT.  The loss still needs the whole forward first (the logits average the
window), so truncation saves compute paths, not memory, here;
:mod:`spinnray.rules.bptt.dense` computes the same truncated gradient window by
window (a first forward pass for the error, then forward and backward per
window), holding the activations of one window only, and adds layers and the
local blocks of truncated local BPTT (Guo et al. 2023).

Gradient-norm clipping (``clip_norm = c``, as ``torch.nn.utils.clip_grad_norm_``): before
Adam, the gradient ``g`` of the update (every matrix together) is replaced by
``g * c / ||g||`` when its global L2 norm ``||g|| = sqrt(sum of every squared entry)``
exceeds ``c``, and left untouched (bit for bit) otherwise: the direction is kept, only the
length is bounded.  Through the ALIF recurrence the gradient of a long sequence can grow by
orders of magnitude in a single mini-batch (on the keyword set with the multi-Gaussian
pseudo-derivative at gamma 0.5: up to 10^4 times its median); Adam's first moment then carries
that one direction for several updates at full step size.  Clipping bounds the damage; a smaller
gamma, which damps every factor of the product, removes the cause (gamma 0.3: the norm stayed
below 2).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from spinnray.checks import check_int, check_real
from spinnray.errors import ConfigError, DataError
from spinnray.rules.bptt.dense import ALIFNetConfig, check_clip_norm, clip_by_norm, gradient_norm
from spinnray.rules.optim import Adam as _ArrayAdam

__all__ = [
    "ALIFNetConfig", "Weights", "Record", "init_weights", "spike_and_pseudo_derivative", "forward",
    "softmax_cross_entropy", "loss_and_grads", "training_memory_bytes", "Adam", "DenseBPTTTrainer",
    "gradient_norm", "clip_by_norm", "check_clip_norm",
]

class Weights(NamedTuple):
    """The three weight matrices, ``(pre, post)``; gradients use the same type."""

    w_in: np.ndarray   # (n_in, n_h)
    w_rec: np.ndarray  # (n_h, n_h), zero diagonal
    w_out: np.ndarray  # (n_h, n_out)

    def copy(self) -> "Weights":
        return Weights(*(w.copy() for w in self))

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self)


class Record(NamedTuple):
    """What :func:`forward` recorded, time-major.

    ``z`` and ``psi`` (T, B, n_h) are always kept (the backward pass needs
    them); ``v``, ``a`` (T, B, n_h) and ``y`` (T, B, n_out) only with
    ``full=True`` (else None).  ``logits`` (B, n_out).
    """

    z: np.ndarray
    psi: np.ndarray
    v: np.ndarray | None
    a: np.ndarray | None
    y: np.ndarray | None
    logits: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes of the per-step arrays held (grow with T); ``logits`` excluded."""
        return sum(arr.nbytes for arr in (self.z, self.psi, self.v, self.a, self.y) if arr is not None)


def init_weights(cfg: ALIFNetConfig, seed: int = 0, gain_in: float = 1.0, gain_rec: float = 1.0,
                 gain_out: float = 1.0) -> Weights:
    """Initial weights, drawn in this order from ``np.random.default_rng(seed)``::

        W_in  ~ N(0, (gain_in  / sqrt(n_in))^2)   (n_in, n_h)
        W_rec ~ N(0, (gain_rec / sqrt(n_h))^2)    (n_h, n_h), then diagonal set to 0
        W_out ~ N(0, (gain_out / sqrt(n_h))^2)    (n_h, n_out)

    in ``cfg.dtype`` (drawn in float64, then cast).  The distributed e-prop uses
    this function so both start from the same weights.
    """
    for name, g in (("gain_in", gain_in), ("gain_rec", gain_rec), ("gain_out", gain_out)):
        check_real(name, g, 0.0)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed = {seed!r}: expected an integer >= 0")
    rng = np.random.default_rng(seed)
    dt = cfg.np_dtype
    w_in = rng.normal(0.0, gain_in / math.sqrt(cfg.n_in), (cfg.n_in, cfg.n_h))
    w_rec = rng.normal(0.0, gain_rec / math.sqrt(cfg.n_h), (cfg.n_h, cfg.n_h))
    np.fill_diagonal(w_rec, 0.0)
    w_out = rng.normal(0.0, gain_out / math.sqrt(cfg.n_h), (cfg.n_h, cfg.n_out))
    return Weights(w_in.astype(dt), w_rec.astype(dt), w_out.astype(dt))


def spike_and_pseudo_derivative(cfg: ALIFNetConfig, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(z, psi)`` for the scaled distance to threshold ``h = (v - A) / v_th``.

    ``z`` is ``1.0`` where ``h > 0`` (or ``sigmoid(k h)`` in the sigmoid mode);
    ``psi = dz/dv`` as in the module docstring (already divided by ``v_th``).
    Both in the dtype of ``h``.
    """
    dt = h.dtype
    inv = 1.0 / cfg.v_th
    if cfg.surrogate == "sigmoid":
        k = cfg.steepness
        z = 1.0 / (1.0 + np.exp(-k * h))
        return z.astype(dt, copy=False), (k * inv * z * (1.0 - z)).astype(dt, copy=False)
    z = (h > 0).astype(dt)
    g = cfg.gamma_value
    if cfg.surrogate == "triangle":
        psi = (g * inv) * np.maximum(0.0, 1.0 - np.abs(h))
    else:
        lens, sig2, height = cfg.mg_lens, cfg.mg_scale * cfg.mg_lens, cfg.mg_height

        def gauss(mu, sigma):
            return np.exp(-0.5 * ((h - mu) / sigma) ** 2) / (math.sqrt(2.0 * math.pi) * sigma)

        psi = (g * inv) * ((1.0 + height) * gauss(0.0, lens) - height * gauss(lens, sig2)
                           - height * gauss(-lens, sig2))
    return z, psi.astype(dt, copy=False)


def _check_inputs(cfg: ALIFNetConfig, weights: Weights, x: np.ndarray) -> tuple[int, int]:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != cfg.n_in or x.shape[0] < 1 or x.shape[1] < 1:
        raise DataError(f"x has shape {x.shape}: expected (T, batch, n_in={cfg.n_in}) with T, batch >= 1")
    want = {"w_in": (cfg.n_in, cfg.n_h), "w_rec": (cfg.n_h, cfg.n_h), "w_out": (cfg.n_h, cfg.n_out)}
    for name, w in zip(Weights._fields, weights, strict=True):
        if np.shape(w) != want[name]:
            raise DataError(f"weights.{name} has shape {np.shape(w)}: expected {want[name]}")
    return x.shape[0], x.shape[1]


def _allocate_record(cfg: ALIFNetConfig, steps: int, batch: int, full: bool) -> Record:
    """The per-step arrays :func:`forward` fills (also what :func:`training_memory_bytes` counts)."""
    dt = cfg.np_dtype
    hid = (steps, batch, cfg.n_h)
    return Record(z=np.empty(hid, dt), psi=np.empty(hid, dt),
                  v=np.empty(hid, dt) if full else None, a=np.empty(hid, dt) if full else None,
                  y=np.empty((steps, batch, cfg.n_out), dt) if full else None,
                  logits=np.empty((batch, cfg.n_out), dt))


def _check_delays(rec_delay, out_delay) -> int:
    check_int("rec_delay", rec_delay, 1)
    check_int("out_delay", out_delay, 1)
    return max(rec_delay, out_delay)


def forward(cfg: ALIFNetConfig, weights: Weights, x: np.ndarray, *, full: bool = True,
            reset: np.ndarray | None = None, rec_delay: int = 1, out_delay: int = 1) -> Record:
    """Run the network on ``x`` (T, B, n_in) from rest; return the :class:`Record`.

    ``full=False`` keeps only what the backward pass needs (``z``, ``psi``).
    ``reset`` (T, B, n_h), if given, replaces the reset term ``z[t-1] * A[t]``
    by these fixed values: this makes the stop-gradient literal, so finite
    differences of this function with the reset of the unperturbed run
    match :func:`loss_and_grads`.  Arithmetic is in ``cfg.dtype``.  ``rec_delay``,
    ``out_delay``: the delays of the recurrent and readout weights (module docstring).

    Raises DataError on wrong shapes, ConfigError if ``loss_window > T`` or on a delay < 1.
    """
    _check_delays(rec_delay, out_delay)
    steps, batch = _check_inputs(cfg, weights, x)
    t_w = cfg.window(steps)
    dt = cfg.np_dtype
    x = np.asarray(x, dt)
    w_in, w_rec, w_out = (np.asarray(w, dt) for w in weights)
    if reset is not None:
        reset = np.asarray(reset, dt)
        if reset.shape != (steps, batch, cfg.n_h):
            raise DataError(f"reset has shape {reset.shape}: expected {(steps, batch, cfg.n_h)}")
    alpha, rho, kappa = cfg.decays()
    rec = _allocate_record(cfg, steps, batch, full)
    v = np.zeros((batch, cfg.n_h), dt)
    a = np.zeros_like(v)
    z_prev = np.zeros_like(v)
    y = np.zeros((batch, cfg.n_out), dt)
    y_sum = np.zeros_like(y)
    zero = np.zeros_like(v)
    for t in range(steps):
        z_rec = rec.z[t - rec_delay] if t >= rec_delay else zero     # z[t - d_r]
        z_out = rec.z[t - out_delay] if t >= out_delay else zero     # z[t - d_o]
        a = rho * a + (1.0 - rho) * z_prev                       # (B, n_h)
        thr = cfg.v_th + cfg.beta * a                            # A[t]
        r = z_prev * thr if reset is None else reset[t]          # stop-gradient reset
        v = alpha * v + (1.0 - alpha) * (x[t] @ w_in + z_rec @ w_rec) - r
        z, psi = spike_and_pseudo_derivative(cfg, (v - thr) / cfg.v_th)
        y = kappa * y + (1.0 - kappa) * (z_out @ w_out)          # (B, n_out)
        if t >= steps - t_w:
            y_sum += y
        rec.z[t], rec.psi[t] = z, psi
        if full:
            rec.v[t], rec.a[t], rec.y[t] = v, a, y
        z_prev = z
    rec.logits[...] = y_sum / t_w
    return rec


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over the batch and ``softmax(logits) - onehot`` (B, n_out)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = float(-logp[rows, labels].mean())
    d = np.exp(logp)
    d[rows, labels] -= 1.0
    return loss, d


def _check_labels(cfg: ALIFNetConfig, labels, batch: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (batch,) or not np.issubdtype(labels.dtype, np.integer) \
            or (batch and (labels.min() < 0 or labels.max() >= cfg.n_out)):
        raise DataError(f"labels (shape {labels.shape}, dtype {labels.dtype}): expected {batch} integers "
                        f"in [0, {cfg.n_out})")
    return labels


def loss_and_grads(cfg: ALIFNetConfig, weights: Weights, x: np.ndarray, labels: np.ndarray, *,
                   truncation: int | None = None, reset: np.ndarray | None = None,
                   rate_reg: float = 0.0, rate_target_hz: float = 10.0, rec_delay: int = 1, out_delay: int = 1
                   ) -> tuple[float, Weights, Record]:
    """Loss and its gradient by manual BPTT (recursions in the module docstring).

    ``x`` (T, B, n_in); ``labels`` (B,) ints in [0, n_out).  Returns
    ``(loss, grads, record)`` where ``grads`` is a :class:`Weights` of
    ``dloss/dW`` (the W_rec diagonal is zero) and ``record`` the forward with
    ``full=False``.  ``truncation=K`` cuts the adjoint at windows of K steps
    (module docstring); None = full BPTT.  ``reset`` as in :func:`forward`.
    ``rate_reg = c > 0`` adds Bellec et al.'s firing-rate regulariser
    ``c sum_j (r_j - r*)^2`` (``r_j``: neuron j's spikes per ms over the batch
    and the run; ``r* = rate_target_hz / 1000``) to the loss.  ``rec_delay``,
    ``out_delay`` as in :func:`forward`.

    Raises DataError on wrong shapes or labels, ConfigError on a bad
    ``truncation``, ``loss_window`` or delay.
    """
    if truncation is not None:
        check_int("truncation", truncation, 1)
    depth = _check_delays(rec_delay, out_delay)
    steps, batch = _check_inputs(cfg, weights, x)
    labels = _check_labels(cfg, labels, batch)
    dt = cfg.np_dtype
    rec = forward(cfg, weights, x, full=False, reset=reset, rec_delay=rec_delay, out_delay=out_delay)
    x = np.asarray(x, dt)
    w_in, w_rec, w_out = (np.asarray(w, dt) for w in weights)
    t_w = cfg.window(steps)
    alpha, rho, kappa = cfg.decays()
    loss, d = softmax_cross_entropy(rec.logits, labels)
    err = (d / (t_w * batch)).astype(dt)                        # dL/dy[t] for t in the window
    greg = 0.0
    if rate_reg:
        per = 1.0 / (batch * steps * cfg.dt_ms)                 # d r_j / d z_j[b, t]
        rate = rec.z.sum(axis=(0, 1)) * per
        loss += float(rate_reg * np.sum((rate - rate_target_hz / 1000.0) ** 2))
        greg = (2.0 * rate_reg * per * (rate - rate_target_hz / 1000.0)).astype(dt)   # dL/dz[t], every t
    g_in, g_rec, g_out = np.zeros_like(w_in), np.zeros_like(w_rec), np.zeros_like(w_out)
    # the adjoints of the last `depth` steps, step s at s % depth (depth 1: the carriers at t + 1)
    dv_at = np.zeros((depth, batch, cfg.n_h), dt)
    da_at = np.zeros_like(dv_at)
    dy_at = np.zeros((depth, batch, cfg.n_out), dt)
    zero = np.zeros((batch, cfg.n_h), dt)
    zero_y = np.zeros((batch, cfg.n_out), dt)

    def later(ring, none, t, s):
        """The adjoint of step s > t as step t sees it: zero past the end or across a truncation cut."""
        if s >= steps or (truncation is not None and s // truncation != t // truncation):
            return none
        return ring[s % depth]

    for t in range(steps - 1, -1, -1):
        gz = ((1.0 - kappa) * (later(dy_at, zero_y, t, t + out_delay) @ w_out.T)
              + (1.0 - alpha) * (later(dv_at, zero, t, t + rec_delay) @ w_rec.T)
              + (1.0 - rho) * later(da_at, zero, t, t + 1) + greg)
        dy = kappa * later(dy_at, zero_y, t, t + 1)
        if t >= steps - t_w:
            dy = dy + err
        psi = rec.psi[t]
        dv = alpha * later(dv_at, zero, t, t + 1) + psi * gz
        da = rho * later(da_at, zero, t, t + 1) - cfg.beta * psi * gz
        dy_at[t % depth], dv_at[t % depth], da_at[t % depth] = dy, dv, da
        z_rec = rec.z[t - rec_delay] if t >= rec_delay else zero
        z_out = rec.z[t - out_delay] if t >= out_delay else zero
        cur = (1.0 - alpha) * dv
        g_in += x[t].T @ cur
        g_rec += z_rec.T @ cur
        g_out += z_out.T @ ((1.0 - kappa) * dy)
    np.fill_diagonal(g_rec, 0.0)
    return loss, Weights(g_in, g_rec, g_out), rec


def _empty_weights(cfg: ALIFNetConfig) -> Weights:
    dt = cfg.np_dtype
    return Weights(np.empty((cfg.n_in, cfg.n_h), dt), np.empty((cfg.n_h, cfg.n_h), dt),
                   np.empty((cfg.n_h, cfg.n_out), dt))


def training_memory_bytes(cfg: ALIFNetConfig, steps: int, batch: int = 1) -> dict[str, int]:
    """Bytes dense BPTT holds for one update on ``batch`` sequences of ``steps`` steps.

    Counted from the arrays :func:`loss_and_grads` and :class:`Adam` allocate
    (their ``nbytes``, in ``cfg.dtype``):

    * ``weights``, ``gradients``, ``adam`` (two moments): 4 x the three
      dense matrices (the W_rec diagonal is stored, though always zero);
    * ``activations``: the recorded ``z`` and ``psi`` (T, B, n_h) each, what
      the backward pass reads;
    * ``inputs``: ``x`` (T, B, n_in), kept for ``dW_in`` (e-prop consumes it online);
    * ``backward_state``: the adjoint carriers ``dv, da, dy`` and ``gz``
      (constant in T; temporaries of one step are not counted);

    ``per_step`` = bytes added by one more step, ``total`` the sum.  Not
    counted: Python objects and the loss window's running sum.
    """
    check_int("steps", steps, 1)
    check_int("batch", batch, 1)
    w = _empty_weights(cfg)
    adam = Adam(w, lr=1e-3)
    rec = _allocate_record(cfg, steps, batch, full=False)
    x = np.empty((steps, batch, cfg.n_in), cfg.np_dtype)
    item = cfg.np_dtype.itemsize
    out = {
        "weights": w.nbytes,
        "gradients": w.nbytes,
        "adam": adam.nbytes,
        "activations": rec.nbytes,
        "inputs": x.nbytes,
        "backward_state": item * batch * (3 * cfg.n_h + cfg.n_out),
    }
    out["total"] = sum(out.values())
    out["per_step"] = (rec.nbytes + x.nbytes) // steps
    return out


class Adam:
    """Adam over a :class:`Weights` triple (bias-corrected, eps outside the sqrt).

    Defaults as Rostami et al. 2022: lr 0.01, beta1 0.9, beta2 0.999, eps 1e-5.
    ``step`` updates the weights in place.  A masked (always-zero) gradient
    entry, such as the W_rec diagonal, leaves its weight unchanged.
    """

    def __init__(self, weights: Weights, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-5):
        check_real("lr", lr, 0.0, strict=True)
        check_real("eps", eps, 0.0, strict=True)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not isinstance(b, (int, float)) or not 0.0 <= b < 1.0:
                raise ConfigError(f"{name} = {b!r}: expected a number in [0, 1)")
        self._opts = [_ArrayAdam(w.shape, w.dtype, lr, (beta1, beta2), eps) for w in weights]

    @property
    def lr(self) -> float:
        return self._opts[0].lr

    @lr.setter
    def lr(self, value: float) -> None:
        check_real("lr", value, 0.0, strict=True)
        for o in self._opts:
            o.lr = value

    @property
    def nbytes(self) -> int:
        """Bytes of the two moment arrays of every matrix."""
        return sum(o.m.nbytes + o.v.nbytes for o in self._opts)

    def step(self, weights: Weights, grads: Weights) -> None:
        for o, w, g in zip(self._opts, weights, grads, strict=True):
            o.step(w, g)


class DenseBPTTTrainer:
    """The full-BPTT baseline: Adam on :func:`loss_and_grads`, one update per mini-batch.

    Data are time-major: ``x`` (T, N, n_in), ``labels`` (N,) ints.  Weights
    come from ``weights`` (copied) or :func:`init_weights` ``(cfg, seed)``.
    ``clip_norm``: the gradient of every update (the three matrices together) is
    rescaled to at most this global L2 norm before Adam (:func:`clip_by_norm`);
    None = no clipping.  ``last_grad_norm`` is the norm of the last update before
    clipping, ``clipped`` the number of updates that were rescaled.
    Raises ConfigError on a bad ``truncation`` or ``clip_norm``.
    """

    def __init__(self, cfg: ALIFNetConfig, *, seed: int = 0, weights: Weights | None = None,
                 lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-5,
                 truncation: int | None = None, clip_norm: float | None = None):
        if truncation is not None:
            check_int("truncation", truncation, 1)
        self.clip_norm = check_clip_norm(clip_norm)
        self.last_grad_norm = 0.0
        self.clipped = 0
        self.cfg = cfg
        self.seed = seed
        self.truncation = truncation
        dt = cfg.np_dtype
        self.weights = init_weights(cfg, seed) if weights is None else Weights(
            *(np.array(w, dt, copy=True) for w in weights))
        np.fill_diagonal(self.weights.w_rec, 0.0)
        self.opt = Adam(self.weights, lr=lr, beta1=beta1, beta2=beta2, eps=eps)
        self.updates = 0

    def train_batch(self, x: np.ndarray, labels: np.ndarray) -> float:
        """One Adam update on the batch ``x`` (T, B, n_in); returns the loss before it."""
        loss, grads, _ = loss_and_grads(self.cfg, self.weights, x, labels, truncation=self.truncation)
        self.last_grad_norm, clipped = clip_by_norm(grads, self.clip_norm)
        self.clipped += clipped
        self.opt.step(self.weights, grads)
        self.updates += 1
        return loss

    def fit(self, x: np.ndarray, labels: np.ndarray, *, epochs: int = 1, batch_size: int = 32) -> list[float]:
        """``epochs`` passes over shuffled mini-batches (order from ``seed``); mean loss per epoch."""
        check_int("epochs", epochs, 1)
        check_int("batch_size", batch_size, 1)
        n = np.shape(x)[1] if np.ndim(x) == 3 else -1
        labels = np.asarray(labels)
        if n < 1 or labels.shape != (n,):
            raise DataError(f"x {np.shape(x)} and labels {labels.shape}: expected (T, N, n_in) and (N,)")
        rng = np.random.default_rng([self.seed, 1])
        history = []
        for _ in range(epochs):
            order = rng.permutation(n)
            losses = [self.train_batch(x[:, idx], labels[idx])
                      for idx in (order[i:i + batch_size] for i in range(0, n, batch_size))]
            history.append(float(np.mean(losses)))
        return history

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class of the largest logit, (N,)."""
        return forward(self.cfg, self.weights, x, full=False).logits.argmax(axis=1)

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """``(mean loss, accuracy)`` on ``x`` (T, N, n_in), one batch."""
        rec = forward(self.cfg, self.weights, x, full=False)
        labels = _check_labels(self.cfg, labels, rec.logits.shape[0])
        loss, _ = softmax_cross_entropy(rec.logits, labels)
        return loss, float((rec.logits.argmax(axis=1) == labels).mean())
