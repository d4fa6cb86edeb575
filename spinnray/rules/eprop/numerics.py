"""e-prop numerics (numpy only): pseudo-derivatives, the readout loss, the
learning constants a core needs.  The cores that use them are in
:mod:`spinnray.rules.eprop.core`.

The network (Bellec et al. 2020; Rostami et al. 2022 on SpiNNaker2), one
step ``t`` of ``dt``; weights indexed (pre, post)::

    a[t] = rho a[t-1] + (1 - rho) z[t-1]                       hidden ALIF
    A[t] = v_th + beta a[t]
    v[t] = alpha v[t-1] + (1 - alpha) (x[t] W_in + z[t-1] W_rec) - z[t-1] A[t]
    z[t] = H(v[t] - A[t])
    y[t] = kappa y[t-1] + (1 - kappa) z[t-1] W_out            LI readout (one-step router delay)
    logits = mean of y[t] over the loss window [T - T_w, T);  loss = CE(softmax(logits), label)

``psi[t]`` is the pseudo-derivative dz/dv, a function of ``h = (v - A)/v_th``
(:func:`pseudo_derivative`).  The reset term ``z[t-1] A[t]`` is a constant
for every gradient (as in Bellec et al.).

e-prop, for pre input ``i`` of post neuron ``j`` (``pre_i[t]`` is ``x_i[t]``
or ``z_i[t-d]``)::

    eps_v_i[t]  = alpha eps_v_i[t-1] + (1 - alpha) pre_i[t]        one per pre neuron
    e_ij[t-1]   = psi_j[t-1] (eps_v_i[t-1] - beta eps_a_ij[t-1])     eligibility trace
    eps_a_ij[t] = rho eps_a_ij[t-1] + (1 - rho) e_ij[t-1]
    ebar_ij[t]  = kappa ebar_ij[t-1] + (1 - kappa) e_ij[t-1]         readout-filtered trace
    acc_ij     += ebar_ij[t]   for t in the loss window
    err_k       = (softmax(logits) - onehot(label))_k / (T_w B)      at the end of the sample
    L_j         = sum_k B_jk err_k   (B = W_out: symmetric; or fixed random)
    dW_ij       = sum over samples of L_j acc_ij

The readout's own gradient is exact: ``dW_out[j, k] = sum_b err_k sum_window
zbar_j`` with ``zbar`` the kappa-filtered input spikes.  Because the loss
depends on the time-averaged logits, ``L_j`` is one number per sample: the
readout core sends it once, at the end of the sample, as one error event
per hidden neuron (float payload) through the router.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spinnray.errors import ConfigError

__all__ = ["SURROGATES", "SurrogateSpec", "pseudo_derivative", "softmax_cross_entropy"]

SURROGATES = ("triangle", "multi_gaussian")


@dataclass(frozen=True)
class SurrogateSpec:
    """A pseudo-derivative: ``kind`` (one of :data:`SURROGATES`), its scale ``gamma`` and the
    multi-Gaussian's ``lens``, ``scale`` and ``height`` (Yin et al. 2021)."""

    kind: str = "triangle"
    gamma: float = 0.3
    lens: float = 0.5
    scale: float = 6.0
    height: float = 0.15


def _normal_pdf(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def pseudo_derivative(h: np.ndarray, s: SurrogateSpec, v_th: float) -> np.ndarray:
    """dz/dv as a function of ``h = (v - A) / v_th``; same shape and dtype as ``h``.

    * ``triangle`` (Bellec et al.): ``(gamma / v_th) max(0, 1 - |h|)``;
    * ``multi_gaussian`` (Yin et al. 2021, used by Rostami et al.):
      ``(gamma / v_th) [(1 + height) N(h; 0, lens) - height N(h; lens, scale lens)
      - height N(h; -lens, scale lens)]``.
    """
    if s.kind == "triangle":
        return (np.maximum(0.0, 1.0 - np.abs(h)) * (s.gamma / v_th)).astype(h.dtype, copy=False)
    if s.kind == "multi_gaussian":
        g = (1.0 + s.height) * _normal_pdf(h, 0.0, s.lens) - s.height * _normal_pdf(h, s.lens, s.scale * s.lens) \
            - s.height * _normal_pdf(h, -s.lens, s.scale * s.lens)
        return (g * (s.gamma / v_th)).astype(h.dtype, copy=False)
    raise ConfigError(f"learning.surrogate = {s.kind!r}: expected one of {list(SURROGATES)}")


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample cross-entropy and softmax probabilities of ``logits`` (batch, classes)."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(np.maximum(p[np.arange(len(labels)), labels], np.finfo(p.dtype).tiny))
    return loss, p
