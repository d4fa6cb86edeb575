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

import numpy as np

from spinnray.errors import ConfigError

__all__ = ["SURROGATES", "pseudo_derivative", "softmax_cross_entropy", "check_learning"]

SURROGATES = ("triangle", "multi_gaussian")


def _normal_pdf(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def pseudo_derivative(h: np.ndarray, kind: str, gamma: float, v_th: float,
                      lens: float = 0.5, scale: float = 6.0, height: float = 0.15) -> np.ndarray:
    """dz/dv as a function of ``h = (v - A) / v_th``; same shape and dtype as ``h``.

    * ``triangle`` (Bellec et al.): ``(gamma / v_th) max(0, 1 - |h|)``;
    * ``multi_gaussian`` (Yin et al. 2021, used by Rostami et al.):
      ``(gamma / v_th) [(1 + height) N(h; 0, lens) - height N(h; lens, scale lens)
      - height N(h; -lens, scale lens)]``.
    """
    if kind == "triangle":
        return (np.maximum(0.0, 1.0 - np.abs(h)) * (gamma / v_th)).astype(h.dtype, copy=False)
    if kind == "multi_gaussian":
        g = (1.0 + height) * _normal_pdf(h, 0.0, lens) - height * _normal_pdf(h, lens, scale * lens) \
            - height * _normal_pdf(h, -lens, scale * lens)
        return (g * (gamma / v_th)).astype(h.dtype, copy=False)
    raise ConfigError(f"learning.surrogate = {kind!r}: expected one of {list(SURROGATES)}")


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample cross-entropy and softmax probabilities of ``logits`` (batch, classes)."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(np.maximum(p[np.arange(len(labels)), labels], np.finfo(p.dtype).tiny))
    return loss, p


def check_learning(L: dict, where: str = "learning") -> None:
    """Refuse e-prop constants that make no sense, naming the key."""
    if L.get("surrogate", "triangle") not in SURROGATES:
        raise ConfigError(f"{where}.surrogate = {L.get('surrogate')!r}: expected one of {list(SURROGATES)}")
    for key in ("gamma", "lr", "tau_out_ms"):
        v = L.get(key)
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ConfigError(f"{where}.{key} = {v!r}: expected a finite number > 0")
    for key in ("rate_reg", "rate_target_hz"):
        v = L.get(key)
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                  and math.isfinite(v) and v >= 0):
            raise ConfigError(f"{where}.{key} = {v!r}: expected a finite number >= 0")
    if L.get("feedback", "symmetric") not in ("symmetric", "random"):
        raise ConfigError(f"{where}.feedback = {L.get('feedback')!r}: expected 'symmetric' or 'random'")
    w = L.get("window_steps")
    if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
        raise ConfigError(f"{where}.window_steps = {w!r}: expected None (all steps) or an int >= 1")
