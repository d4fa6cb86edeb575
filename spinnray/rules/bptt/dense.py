"""Dense single-process training of deep recurrent ALIF networks: full BPTT and
temporally-truncated local BPTT (Guo et al. 2023), the memory baselines of e-prop.

The network (numpy only, no Ray; time-major ``(T, batch, n)``): ``L`` hidden layers of
``n_h`` recurrent ALIF neurons, each with the dynamics of :mod:`spinnray.rules.eprop` (the pseudo-derivatives of :mod:`spinnray.rules.losses`, the same
pseudo-derivatives, the same stop-gradient reset)::

    a_l[t] = rho a_l[t-1] + (1 - rho) z_l[t-1]
    A_l[t] = v_th + beta a_l[t]
    v_l[t] = alpha v_l[t-1] + (1 - alpha) (u_l[t] @ F_l + z_l[t-1] @ R_l) - z_l[t-1] A_l[t]
    z_l[t] = H(v_l[t] - A_l[t])
    u_0[t] = x[t],  u_l[t] = z_{l-1}[t]       (a layer hears the layer below in the same step)

``F_l`` (pre, n_h) are the feed-forward weights (``F_0`` is ``W_in``), ``R_l`` (n_h, n_h)
the recurrent weights (zero diagonal).  With one layer this is exactly the network of
the independent single-layer BPTT that the tests check it against
(``tests/oracle/bptt_reference.py``).

Local blocks.  The layers are grouped into blocks of ``block_size`` consecutive layers
(the last block may be smaller).  Every block ``b`` has its own leaky readout on its top
layer ``h(b)``, ``y_b[t] = kappa y_b[t-1] + (1 - kappa) z_h(b)[t-1] @ O_b``, logits = the mean
of ``y_b`` over the loss window (the last ``T_w`` steps) and the loss
``L_b = CE(softmax(logits_b), label)``.  The last block's readout is the network's output;
the others are the auxiliary classifiers of Guo et al.  Block ``b``'s weights (its ``F``,
``R`` and ``O_b``) get the gradient of ``L_b`` only: the input a block receives from the
block below is a constant (no gradient crosses a block boundary).  One block = end-to-end.

Temporal truncation.  The sequence is cut into windows ``[0, K), [K, 2K), ...`` of
``window = K`` steps.  The forward state flows across window boundaries; no adjoint does
(the state entering a window is a constant).  This is the truncation of
the single-layer BPTT of the tests (``truncation=K``), whose backward recursions
(``gz``, ``dv``, ``da``, ``dy``) are used block by block here, extended to the layer below
within a block: ``gz_l[t] += (1 - alpha) dv_{l+1}[t] @ F_{l+1}^T``.  ``K >= T`` and one block
is full BPTT.

What is kept (the memory).  The logits average the loss window, so the output error
``err_b = (softmax - onehot) / (T_w B)`` is known only after the last step.  If more than one
window overlaps the loss window, a first forward pass (no per-step storage) computes the
errors; a second pass then runs window by window, and inside a window block by block:
forward the block over the window *storing its activations*, then its truncated backward,
then hand its top layer's spikes of the window to the next block.  Windows that end before
the loss window starts carry no error (their adjoints are exactly 0) and are only run
forward.  So at any time the arrays held are (:class:`Workspace`, by category):

* ``activations``: ``z`` (K + 1 steps: the spikes entering the window too) and ``psi`` (K
  steps) of the layers of *one* block: ``2 block_size K B n_h`` numbers;
* ``inputs``: the window of the input ``x`` (K B n_in) and, with more than one block, the
  block input buffer (K B n_h); the input is read again from the data in the second pass;
* ``state``: ``v, a, z`` of every layer, ``y`` and its sum of every readout;
* ``backward_state``: the adjoints ``dv, da`` of one block, ``dy``, and the errors;

plus ``weights``, ``gradients`` and ``optimizer`` (two Adam moments) of every matrix.  The
activations scale with ``block_size x window`` instead of ``L x T``.  The cost: up to two
forward passes instead of one.  Numpy temporaries of one step are not counted.

:class:`DenseTrainer` adds Adam (one update per mini-batch); :mod:`spinnray.experiments.dense` runs it
(``learning.rule = bptt | tlbptt``).

Gradient clipping (``clip_norm = c``, ``learning.clip_norm``) is per local block: before Adam,
the matrices of block ``b`` (its ``F_l``, ``R_l`` and ``O_b``) are rescaled together to a global
L2 norm of at most ``c`` (:func:`clip_by_norm`), each block on its own.  Why per
block: block ``b``'s gradient is that of its own loss ``L_b`` only, so a per-block norm keeps
every block's update a function of its own loss and window (blocks stay local: they need not
exchange a norm), and a block whose gradient explodes does not shrink the step of a healthy
one (measured on the keyword set, window 100, gamma 0.5: block 0's norm reached 2.8e4 while
block 1's was 1.5).  With one block (full BPTT) this is the global norm of every matrix, as
``torch.nn.utils.clip_grad_norm_``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from spinnray.checks import check_int, check_real
from spinnray.config import from_dict, opt
from spinnray.rules.losses import SURROGATES, SurrogateSpec, softmax_cross_entropy, spike_and_pseudo_derivative
from spinnray.errors import ConfigError, DataError
from spinnray.rules.optim import Adam

log = logging.getLogger(__name__)

__all__ = ["DeepWeights", "init_deep_weights", "block_ranges", "Workspace", "DeepALIF", "training_memory_bytes",
           "DenseTrainer"]


_DEFAULT_GAMMA = {"triangle": 0.3, "multi_gaussian": 0.5, "sigmoid": None}


@dataclass(frozen=True)
class ALIFNetConfig:
    """A recurrent ALIF network with a leaky-integrator readout.

    Defaults are the keyword-spotting network of Rostami et al. 2022
    (80-120-12, tau_m 5 ms, tau_a 150 ms, beta 0.184, threshold 1.6,
    tau_out 10 ms, multi-Gaussian pseudo-derivative).  Building it with an
    invalid value raises :class:`ConfigError` naming the field.
    """

    n_in: int = opt(80, "input channels", min=1)
    n_h: int = opt(120, "hidden ALIF neurons (recurrent, no self-connections)", min=1)
    n_out: int = opt(12, "readout neurons = classes", min=2)
    tau_m_ms: float = opt(5.0, "membrane time constant (ms)")
    tau_a_ms: float = opt(150.0, "adaptation time constant (ms)")
    beta: float = opt(0.184, "adaptation strength (threshold units per unit of a)", min=0.0)
    v_th: float = opt(1.6, "baseline threshold")
    tau_out_ms: float = opt(10.0, "readout time constant (ms)")
    dt_ms: float = opt(1.0, "ms per step")
    surrogate: str = opt("multi_gaussian", "pseudo-derivative: triangle, multi_gaussian or sigmoid (smooth test mode)",
                         choices=SURROGATES)
    gamma: float | None = opt(None, "pseudo-derivative height; null = 0.3 (triangle) or 0.5 (multi_gaussian)")
    mg_lens: float = opt(0.5, "multi-Gaussian: width of the central Gaussian (in units of h)")
    mg_scale: float = opt(6.0, "multi-Gaussian: width factor of the two side Gaussians")
    mg_height: float = opt(0.15, "multi-Gaussian: weight of the two side Gaussians", min=0.0)
    steepness: float = opt(5.0, "sigmoid mode: z = sigmoid(steepness h)")
    loss_window: int | None = opt(None, "T_w: the logits average the last T_w steps; null = all T steps", min=1)
    dtype: str = opt("float64", "arithmetic of weights, state and gradients", choices=("float32", "float64"))

    def __post_init__(self):
        for name in ("n_in", "n_h"):
            check_int(name, getattr(self, name), 1)
        check_int("n_out", self.n_out, 2)
        for name in ("tau_m_ms", "tau_a_ms", "tau_out_ms", "dt_ms", "v_th", "mg_lens", "mg_scale", "steepness"):
            check_real(name, getattr(self, name), 0.0, strict=True)
        check_real("beta", self.beta, 0.0)
        check_real("mg_height", self.mg_height, 0.0)
        if self.surrogate not in SURROGATES:
            raise ConfigError(f"surrogate = {self.surrogate!r}: expected one of {list(SURROGATES)}")
        if self.gamma is not None:
            check_real("gamma", self.gamma, 0.0, strict=True)
        if self.loss_window is not None:
            check_int("loss_window", self.loss_window, 1)
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype = {self.dtype!r}: expected 'float32' or 'float64'")

    @classmethod
    def from_dict(cls, data, prefix: str = "network") -> "ALIFNetConfig":
        """Build from a mapping (a Hydra section), refusing unknown keys and wrong types."""
        return from_dict(cls, data, prefix)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def gamma_value(self) -> float | None:
        """``gamma``, or the surrogate's default when it is null."""
        return _DEFAULT_GAMMA[self.surrogate] if self.gamma is None else self.gamma

    @property
    def surrogate_spec(self) -> SurrogateSpec:
        return SurrogateSpec(self.surrogate, self.gamma_value, self.mg_lens, self.mg_scale, self.mg_height,
                             self.steepness)

    def decays(self) -> tuple[float, float, float]:
        """``(alpha, rho, kappa)`` for one step of ``dt_ms``."""
        return (math.exp(-self.dt_ms / self.tau_m_ms), math.exp(-self.dt_ms / self.tau_a_ms),
                math.exp(-self.dt_ms / self.tau_out_ms))

    def window(self, steps: int) -> int:
        """T_w for a sequence of ``steps`` steps; raises ConfigError if it does not fit."""
        if self.loss_window is None:
            return steps
        if self.loss_window > steps:
            raise ConfigError(f"loss_window = {self.loss_window}: exceeds the sequence length T = {steps}; "
                              f"expected 1 <= loss_window <= T")
        return self.loss_window

    @property
    def n_weights(self) -> int:
        """Trainable weights: n_in n_h + n_h (n_h - 1) + n_h n_out (the W_rec diagonal is absent)."""
        return self.n_in * self.n_h + self.n_h * (self.n_h - 1) + self.n_h * self.n_out




def check_clip_norm(value, name: str = "clip_norm") -> float | None:
    """``value`` as a float if it is a finite number > 0, None if it is None (no clipping);
    anything else raises ConfigError naming ``name``."""
    if value is None:
        return None
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} = {value!r}: expected a finite number > 0, or null for no clipping")
    return float(value)


def gradient_norm(arrays) -> float:
    """Global L2 norm ``sqrt(sum over every array of the sum of its squared entries)``,
    accumulated in float64 whatever the arrays' dtype."""
    total = 0.0
    for a in arrays:
        flat = np.asarray(a, dtype=np.float64).ravel()
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip_by_norm(arrays, max_norm: float | None) -> tuple[float, bool]:
    """Rescale ``arrays`` in place to a global L2 norm of at most ``max_norm``.

    With ``n = gradient_norm(arrays)``: if ``n > max_norm`` every array is multiplied by
    ``max_norm / n`` (same direction, norm ``max_norm`` up to rounding); otherwise, or when
    ``max_norm`` is None, or when ``n`` is not finite (a diverged gradient is not hidden),
    the arrays are left untouched, bit for bit.  Returns ``(n, clipped)``, ``n`` the norm
    before clipping.  Raises ConfigError on a bad ``max_norm`` (:func:`check_clip_norm`).
    """
    max_norm = check_clip_norm(max_norm)
    arrays = list(arrays)
    n = gradient_norm(arrays)
    if max_norm is None or not math.isfinite(n) or n <= max_norm:
        return n, False
    scale = max_norm / n
    for a in arrays:
        a *= scale
    return n, True


def block_ranges(layers: int, block_size: int | None) -> list[tuple[int, int]]:
    """Layer ranges ``[lo, hi)`` of the blocks: ``block_size`` layers each, the last one
    possibly smaller; None = one block of all layers.  Raises ConfigError on bad values."""
    check_int("layers", layers, 1)
    bs = layers if block_size is None else check_int("block_size", block_size, 1)
    return [(lo, min(lo + bs, layers)) for lo in range(0, layers, bs)]


class DeepWeights:
    """The trainable matrices, ``(pre, post)``.

    ``ff[l]``: (n_in or n_h, n_h) into layer ``l``; ``rec[l]``: (n_h, n_h), zero diagonal;
    ``out[b]``: (n_h, n_out), the readout of block ``b`` (the last one is the network's).
    Gradients use the same type.
    """

    def __init__(self, ff, rec, out):
        self.ff, self.rec, self.out = list(ff), list(rec), list(out)

    def arrays(self) -> list[np.ndarray]:
        """Every matrix: ``ff``, then ``rec``, then ``out``."""
        return [*self.ff, *self.rec, *self.out]

    def copy(self) -> "DeepWeights":
        return DeepWeights([w.copy() for w in self.ff], [w.copy() for w in self.rec], [w.copy() for w in self.out])

    def zeros_like(self) -> "DeepWeights":
        return DeepWeights([np.zeros_like(w) for w in self.ff], [np.zeros_like(w) for w in self.rec],
                           [np.zeros_like(w) for w in self.out])

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.arrays())


def init_deep_weights(cfg: ALIFNetConfig, layers: int, block_size: int | None, rng: np.random.Generator, *,
                      in_scale: float = 1.0, rec_scale: float = 1.0, out_scale: float = 1.0,
                      ff_scale: float = 1.0, recurrent: bool = True) -> DeepWeights:
    """Initial weights ``N(0, (scale / sqrt(pre))^2)`` in ``cfg.dtype``, drawn in this order:
    ``F_0`` (in_scale), ``R_0`` (rec_scale; zeros without ``recurrent``, diagonal 0), the output
    readout ``O_last`` (out_scale), then for ``l >= 1``: ``F_l`` (ff_scale), ``R_l``; then the
    auxiliary readouts ``O_0 ..`` (out_scale).  With one layer and ``rng = default_rng(seed)``
    this equals the test oracle's ``init_weights``; with ``rng = default_rng([seed, 5])`` the
    initial weights of :func:`spinnray.experiments.eprop.build_eprop_network`.
    """
    nb = len(block_ranges(layers, block_size))
    n_in, n_h, n_out = cfg.n_in, cfg.n_h, cfg.n_out
    dt = cfg.np_dtype

    def rec():
        w = rng.normal(0.0, rec_scale / math.sqrt(n_h), (n_h, n_h))
        np.fill_diagonal(w, 0.0)
        return w if recurrent else np.zeros_like(w)

    ff = [rng.normal(0.0, in_scale / math.sqrt(n_in), (n_in, n_h))]
    recs = [rec()]
    out_last = rng.normal(0.0, out_scale / math.sqrt(n_h), (n_h, n_out))
    for _ in range(1, layers):
        ff.append(rng.normal(0.0, ff_scale / math.sqrt(n_h), (n_h, n_h)))
        recs.append(rec())
    aux = [rng.normal(0.0, out_scale / math.sqrt(n_h), (n_h, n_out)) for _ in range(nb - 1)]
    return DeepWeights([w.astype(dt) for w in ff], [w.astype(dt) for w in recs],
                       [w.astype(dt) for w in aux + [out_last]])


class Workspace:
    """Every array one update holds besides the weights (module docstring: what is kept).

    ``K`` = window steps, ``B`` = batch, ``bs`` = layers of the largest block.  Built with
    ``np.empty``/``np.zeros``; :meth:`nbytes_by_category` is the accounting.
    """

    def __init__(self, cfg: ALIFNetConfig, layers: int, n_blocks: int, bs: int, K: int, B: int):
        dt = cfg.np_dtype
        n_h, n_out = cfg.n_h, cfg.n_out
        self.x = np.zeros((K, B, cfg.n_in), dt)                       # the input window
        self.u = np.zeros((K, B, n_h), dt) if n_blocks > 1 else None  # the block input buffer
        self.z = [np.zeros((K + 1, B, n_h), dt) for _ in range(bs)]   # z[t0 - 1 .. t1 - 1] of one block
        self.psi = [np.zeros((K, B, n_h), dt) for _ in range(bs)]
        self.v = np.zeros((layers, B, n_h), dt)
        self.a = np.zeros((layers, B, n_h), dt)
        self.zp = np.zeros((layers, B, n_h), dt)                      # z of the previous step
        self.y = np.zeros((n_blocks, B, n_out), dt)
        self.ysum = np.zeros((n_blocks, B, n_out), dt)
        self.dv = np.zeros((bs, B, n_h), dt)
        self.da = np.zeros((bs, B, n_h), dt)
        self.dy = np.zeros((B, n_out), dt)
        self.err = np.zeros((n_blocks, B, n_out), dt)

    def reset_state(self) -> None:
        for arr in (self.v, self.a, self.zp, self.y, self.ysum):
            arr[...] = 0

    def nbytes_by_category(self) -> dict[str, int]:
        return {
            "activations": sum(a.nbytes for a in self.z) + sum(a.nbytes for a in self.psi),
            "inputs": self.x.nbytes + (self.u.nbytes if self.u is not None else 0),
            "state": sum(a.nbytes for a in (self.v, self.a, self.zp, self.y, self.ysum)),
            "backward_state": sum(a.nbytes for a in (self.dv, self.da, self.dy, self.err)),
        }


class DeepALIF:
    """The network of the module docstring and its (truncated, local) gradient.

    Args:
        cfg: neuron constants, sizes (``n_h`` = width of every layer), surrogate, loss window
            and dtype (:class:`ALIFNetConfig`).
        layers: hidden layers L >= 1.
        block_size: layers per local block (None = one block: end-to-end).
        window: truncation window K in steps (None = the whole sequence: no truncation).
        recurrent: train the recurrent weights (False: they stay 0).

    Raises ConfigError on a bad value.
    """

    def __init__(self, cfg: ALIFNetConfig, layers: int = 1, *, block_size: int | None = None,
                 window: int | None = None, recurrent: bool = True):
        if not isinstance(cfg, ALIFNetConfig):
            raise ConfigError(f"cfg = {cfg!r}: expected an ALIFNetConfig")
        self.cfg = cfg
        self.layers = check_int("layers", layers, 1)
        self.blocks = block_ranges(layers, block_size)
        self.block_size = max(hi - lo for lo, hi in self.blocks)
        self.window = None if window is None else check_int("window", window, 1)
        self.recurrent = bool(recurrent)
        self.alpha, self.rho, self.kappa = cfg.decays()
        self.surrogate = cfg.surrogate_spec
        #: bytes by category of the workspace of the last :meth:`loss_and_grads`
        self.last_memory: dict[str, int] = {}

    # ---------------------------------------------------------------- checks
    def _check(self, w: DeepWeights, x) -> tuple[np.ndarray, int, int]:
        cfg = self.cfg
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != cfg.n_in or x.shape[0] < 1 or x.shape[1] < 1:
            raise DataError(f"x has shape {x.shape}: expected (T, batch, n_in={cfg.n_in}) with T, batch >= 1")
        nb = len(self.blocks)
        if not isinstance(w, DeepWeights) or len(w.ff) != self.layers or len(w.rec) != self.layers \
                or len(w.out) != nb:
            raise DataError(f"weights: expected DeepWeights with {self.layers} ff, {self.layers} rec and {nb} out "
                            "matrices")
        for l, (f, r) in enumerate(zip(w.ff, w.rec)):
            want = (cfg.n_in if l == 0 else cfg.n_h, cfg.n_h)
            if f.shape != want or r.shape != (cfg.n_h, cfg.n_h):
                raise DataError(f"weights of layer {l}: ff {f.shape}, rec {r.shape}; expected {want} and "
                                f"{(cfg.n_h, cfg.n_h)}")
        for b, o in enumerate(w.out):
            if o.shape != (cfg.n_h, cfg.n_out):
                raise DataError(f"readout {b} has shape {o.shape}: expected {(cfg.n_h, cfg.n_out)}")
        return np.asarray(x, cfg.np_dtype), x.shape[0], x.shape[1]

    def _labels(self, labels, batch: int) -> np.ndarray:
        y = np.asarray(labels)
        if y.shape != (batch,) or not np.issubdtype(y.dtype, np.integer) \
                or (batch and (y.min() < 0 or y.max() >= self.cfg.n_out)):
            raise DataError(f"labels (shape {y.shape}, dtype {y.dtype}): expected {batch} integers in "
                            f"[0, {self.cfg.n_out})")
        return y

    def workspace(self, steps: int, batch: int) -> Workspace:
        """The arrays an update on ``batch`` sequences of ``steps`` steps holds."""
        K = steps if self.window is None else min(self.window, steps)
        return Workspace(self.cfg, self.layers, len(self.blocks), self.block_size, K, batch)

    # --------------------------------------------------------------- forward
    def _layer_step(self, l: int, inp: np.ndarray, w: DeepWeights, ws: Workspace):
        """One step of layer ``l`` (state in ``ws``); returns ``(z, psi)``. Same op order as bptt.forward."""
        cfg, alpha, rho = self.cfg, self.alpha, self.rho
        zp = ws.zp[l]
        ws.a[l] = rho * ws.a[l] + (1.0 - rho) * zp
        thr = cfg.v_th + cfg.beta * ws.a[l]
        ws.v[l] = alpha * ws.v[l] + (1.0 - alpha) * (inp @ w.ff[l] + zp @ w.rec[l]) - zp * thr
        return spike_and_pseudo_derivative((ws.v[l] - thr) / cfg.v_th, self.surrogate, cfg.v_th)

    def _readout_step(self, b: int, t: int, w: DeepWeights, ws: Workspace, z_top_prev, steps: int, t_w: int):
        k = self.kappa
        ws.y[b] = k * ws.y[b] + (1.0 - k) * (z_top_prev @ w.out[b])
        if t >= steps - t_w:
            ws.ysum[b] += ws.y[b]

    def _forward_all(self, w: DeepWeights, x: np.ndarray, ws: Workspace, steps: int, t_w: int,
                     spikes: list | None = None) -> np.ndarray:
        """All layers, all steps, nothing stored per step; returns the logits (blocks, B, n_out).
        ``spikes``: a list to which the spike count of every layer is added."""
        ws.reset_state()
        for t in range(steps):
            for b, (_, hi) in enumerate(self.blocks):
                self._readout_step(b, t, w, ws, ws.zp[hi - 1], steps, t_w)
            inp = x[t]
            for l in range(self.layers):
                z, _ = self._layer_step(l, inp, w, ws)
                ws.zp[l] = z
                inp = ws.zp[l]
            if spikes is not None:
                spikes.append(ws.zp.sum(axis=(1, 2)))
        return ws.ysum / t_w

    def forward(self, w: DeepWeights, x, spikes: list | None = None) -> np.ndarray:
        """Logits of every block, (blocks, B, n_out); the last block's are the network output."""
        x, steps, batch = self._check(w, x)
        t_w = self.cfg.window(steps)
        ws = Workspace(self.cfg, self.layers, len(self.blocks), self.block_size, 0, batch)
        return self._forward_all(w, x, ws, steps, t_w, spikes).copy()

    def _block_window(self, w: DeepWeights, ws: Workspace, b: int, t0: int, t1: int, steps: int, t_w: int) -> None:
        """Block ``b`` forward over ``[t0, t1)``, storing z (with z[t0-1]) and psi in ``ws``."""
        lo, hi = self.blocks[b]
        for j, l in enumerate(range(lo, hi)):
            ws.z[j][0] = ws.zp[l]
        src = ws.x if lo == 0 else ws.u
        top = hi - lo - 1
        for i in range(t1 - t0):
            self._readout_step(b, t0 + i, w, ws, ws.z[top][i], steps, t_w)
            inp = src[i]
            for j, l in enumerate(range(lo, hi)):
                z, psi = self._layer_step(l, inp, w, ws)
                ws.z[j][i + 1] = z
                ws.psi[j][i] = psi
                ws.zp[l] = z
                inp = ws.z[j][i + 1]

    def _block_backward(self, w: DeepWeights, g: DeepWeights, ws: Workspace, b: int, t0: int, t1: int,
                        steps: int, t_w: int) -> None:
        """The truncated adjoint of block ``b`` over ``[t0, t1)`` (zero at t1), into ``g``."""
        cfg, alpha, rho, kappa = self.cfg, self.alpha, self.rho, self.kappa
        lo, hi = self.blocks[b]
        n = hi - lo
        dv, da, dy = ws.dv, ws.da, ws.dy
        dv[:n] = 0
        da[:n] = 0
        dy[...] = 0
        err = ws.err[b]
        src = ws.x if lo == 0 else ws.u
        for i in range(t1 - t0 - 1, -1, -1):
            t = t0 + i
            gz = (1.0 - kappa) * (dy @ w.out[b].T) + (1.0 - alpha) * (dv[n - 1] @ w.rec[hi - 1].T) \
                + (1.0 - rho) * da[n - 1]
            dy[...] = kappa * dy + err if t >= steps - t_w else kappa * dy
            for j in range(n - 1, -1, -1):
                l = lo + j
                if j < n - 1:       # z_l[t] drives layer l + 1 in the same step
                    gz = (1.0 - alpha) * (dv[j + 1] @ w.ff[l + 1].T) + (1.0 - alpha) * (dv[j] @ w.rec[l].T) \
                        + (1.0 - rho) * da[j]
                psi = ws.psi[j][i]
                dv[j] = alpha * dv[j] + psi * gz
                da[j] = rho * da[j] - cfg.beta * psi * gz
                cur = (1.0 - alpha) * dv[j]
                inp = src[i] if j == 0 else ws.z[j - 1][i + 1]
                g.ff[l] += inp.T @ cur
                g.rec[l] += ws.z[j][i].T @ cur
            g.out[b] += ws.z[n - 1][i].T @ ((1.0 - kappa) * dy)

    # -------------------------------------------------------------- gradient
    def loss_and_grads(self, w: DeepWeights, x, labels) -> tuple[list[float], DeepWeights, np.ndarray]:
        """Losses of every block, the (truncated, local) gradient and the logits.

        ``x`` (T, B, n_in); ``labels`` (B,).  Returns ``(losses, grads, logits)``: ``losses[b]``
        the mean cross-entropy of block ``b``'s readout, ``grads`` a :class:`DeepWeights` (block
        ``b``'s matrices hold dL_b/dW, recurrent diagonals 0), ``logits`` (blocks, B, n_out).
        ``self.last_memory`` gets the workspace's bytes by category.

        Raises DataError on wrong shapes or labels, ConfigError if ``loss_window > T``.
        """
        x, steps, batch = self._check(w, x)
        labels = self._labels(labels, batch)
        cfg = self.cfg
        t_w = cfg.window(steps)
        ws = self.workspace(steps, batch)
        K = ws.x.shape[0]
        windows = [(t0, min(t0 + K, steps)) for t0 in range(0, steps, K)]
        n_loss_windows = sum(1 for _, t1 in windows if t1 > steps - t_w)
        g = w.zeros_like()
        losses = [0.0] * len(self.blocks)
        logits = None

        def set_error(b, lg):
            loss, d = softmax_cross_entropy(lg, labels)
            losses[b] = float(loss.mean())
            d[np.arange(len(labels)), labels] -= 1.0          # softmax - onehot
            ws.err[b] = d / (t_w * batch)

        if n_loss_windows > 1:               # pass 1: the errors, before any window's backward
            logits = self._forward_all(w, x, ws, steps, t_w).copy()
            for b in range(len(self.blocks)):
                set_error(b, logits[b])
        ws.reset_state()
        for t0, t1 in windows:
            k = t1 - t0
            ws.x[:k] = x[t0:t1]
            carries_error = t1 > steps - t_w
            for b, (lo, hi) in enumerate(self.blocks):
                self._block_window(w, ws, b, t0, t1, steps, t_w)
                if carries_error:
                    if n_loss_windows == 1:  # the last window: this block's logits are complete now
                        set_error(b, ws.ysum[b] / t_w)
                    self._block_backward(w, g, ws, b, t0, t1, steps, t_w)
                if b + 1 < len(self.blocks):
                    ws.u[:k] = ws.z[hi - lo - 1][1:k + 1]
        if logits is None:
            logits = (ws.ysum / t_w).copy()
        for r in g.rec:
            if self.recurrent:
                np.fill_diagonal(r, 0.0)
            else:
                r[...] = 0.0
        self.last_memory = ws.nbytes_by_category()
        return losses, g, logits


def training_memory_bytes(cfg: ALIFNetConfig, layers: int, steps: int, batch: int = 1, *,
                          window: int | None = None, block_size: int | None = None) -> dict[str, int]:
    """Bytes one update holds (module docstring): the :class:`Workspace` by category plus
    ``weights``, ``gradients`` and ``optimizer`` (two Adam moments), ``total`` their sum.
    Constant in ``steps`` once ``steps >= window``."""
    check_int("steps", steps, 1)
    check_int("batch", batch, 1)
    net = DeepALIF(cfg, layers, block_size=block_size, window=window)
    w = init_deep_weights(cfg, layers, block_size, np.random.default_rng(0))
    out = {"weights": w.nbytes, "gradients": w.nbytes, "optimizer": 2 * w.nbytes,
           **net.workspace(steps, batch).nbytes_by_category()}
    out["total"] = sum(out.values())
    return out


class DenseTrainer:
    """Adam (bias-corrected, as torch) on :meth:`DeepALIF.loss_and_grads`, one update per mini-batch.

    ``clip_norm``: each block's gradient (its ``ff``, ``rec`` and ``out`` matrices together) is
    rescaled to at most this L2 norm before the weight decay is added and Adam steps
    (module docstring); None = no clipping.  ``grad_norms`` collects, per update, the norm of
    every block before clipping; ``clipped`` counts the (update, block) pairs rescaled.
    Raises ConfigError on a bad ``clip_norm``.
    """

    def __init__(self, net: DeepALIF, weights: DeepWeights, *, lr: float = 0.01, betas=(0.9, 0.999),
                 eps: float = 1e-5, weight_decay: float = 0.0, clip_norm: float | None = None):
        self.clip_norm = check_clip_norm(clip_norm)
        self.grad_norms: list[list[float]] = []
        self.clipped = 0
        self.net = net
        self.weights = weights.copy()
        self.lr = lr
        self.weight_decay = float(weight_decay)
        self.opts = [Adam(a.shape, a.dtype, lr, tuple(betas), eps) for a in self.weights.arrays()]
        self.spikes: list = []

    def train_batch(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """One update on ``x`` (T, B, n_in); returns (output loss, output logits (B, n_out))."""
        losses, g, logits = self.net.loss_and_grads(self.weights, x, labels)
        norms = []
        for b, (lo, hi) in enumerate(self.net.blocks):
            n, clipped = clip_by_norm([*g.ff[lo:hi], *g.rec[lo:hi], g.out[b]], self.clip_norm)
            norms.append(n)
            self.clipped += clipped
        self.grad_norms.append(norms)
        for adam, w, gr in zip(self.opts, self.weights.arrays(), g.arrays()):
            adam.lr = self.lr
            if self.weight_decay:
                gr = gr + self.weight_decay * w
            adam.step(w, gr)
        for r in self.weights.rec:
            np.fill_diagonal(r, 0.0)
        return losses[-1], logits[-1]

    def evaluate(self, split, batch: int = 64, on_batch=None) -> tuple[float, float]:
        """(accuracy, mean loss) of the output readout on a data split (:class:`spinnray.data.Split`);
        ``on_batch(n)`` is told of each batch of ``n`` samples done (a progress bar)."""
        correct, loss = 0, 0.0
        y = split.labels
        for first in range(0, len(y), batch):
            xb = split.batch(np.arange(first, min(first + batch, len(y)))).astype(np.float32, copy=False)
            counts: list = []
            lg = self.net.forward(self.weights, xb, spikes=counts)[-1]
            self.spikes.append(np.sum(counts, axis=0) if counts else np.zeros(self.net.layers))
            yb = np.asarray(y[first:first + batch])
            correct += int((lg.argmax(axis=1) == yb).sum())
            loss += float(softmax_cross_entropy(lg.astype(np.float64), yb)[0].mean()) * len(yb)
            if on_batch is not None:
                on_batch(len(yb))
        return correct / len(y), loss / len(y)

    def memory(self, steps: int, batch: int) -> dict[str, int]:
        """Bytes by category of one update (the arrays held, :func:`training_memory_bytes`)."""
        ws = self.net.workspace(steps, batch).nbytes_by_category()
        out = {"weights": self.weights.nbytes, "gradients": self.weights.nbytes,
               "optimizer": sum(o.m.nbytes + o.v.nbytes for o in self.opts), **ws}
        out["total"] = sum(out.values())
        return out
