"""Losses and pseudo-derivatives shared by every rule: one softmax cross-entropy, one table of
pseudo-derivatives (numpy only).

``psi = dz/dv`` of a spiking neuron is a function of ``h = (v - A) / v_th`` (the scaled distance to
threshold):

* ``triangle`` (Bellec et al. 2020): ``(gamma / v_th) max(0, 1 - |h|)``;
* ``multi_gaussian`` (Yin et al. 2021, used by Rostami et al. 2022):
  ``(gamma / v_th) [(1 + height) N(h; 0, lens) - height N(h; lens, scale lens) - height N(h; -lens, scale lens)]``
  with ``N`` the normal pdf (slightly negative far from the threshold);
* ``sigmoid`` (a smooth test mode of the dense BPTT): the forward "spike" itself is
  ``z = sigmoid(k h)`` with ``k = steepness`` and ``psi = dz/dv = (k / v_th) z (1 - z)`` exactly, so
  a gradient can be checked by finite differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spinnray.errors import ConfigError

__all__ = ["SURROGATES", "SurrogateSpec", "pseudo_derivative", "spike_and_pseudo_derivative",
           "softmax_cross_entropy"]

SURROGATES = ("triangle", "multi_gaussian", "sigmoid")


@dataclass(frozen=True)
class SurrogateSpec:
    """A pseudo-derivative: ``kind`` (one of :data:`SURROGATES`), its scale ``gamma``, the
    multi-Gaussian's ``lens``, ``scale`` and ``height``, the sigmoid's ``steepness``."""

    kind: str = "triangle"
    gamma: float = 0.3
    lens: float = 0.5
    scale: float = 6.0
    height: float = 0.15
    steepness: float = 5.0


def _normal_pdf(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def pseudo_derivative(h: np.ndarray, s: SurrogateSpec, v_th: float) -> np.ndarray:
    """dz/dv of a threshold neuron as a function of ``h``; same shape and dtype as ``h``."""
    if s.kind == "triangle":
        return (np.maximum(0.0, 1.0 - np.abs(h)) * (s.gamma / v_th)).astype(h.dtype, copy=False)
    if s.kind == "multi_gaussian":
        g = (1.0 + s.height) * _normal_pdf(h, 0.0, s.lens) - s.height * _normal_pdf(h, s.lens, s.scale * s.lens) \
            - s.height * _normal_pdf(h, -s.lens, s.scale * s.lens)
        return (g * (s.gamma / v_th)).astype(h.dtype, copy=False)
    raise ConfigError(f"learning.surrogate = {s.kind!r}: expected one of {list(SURROGATES[:2])} "
                      "(sigmoid is the dense BPTT's smooth test mode)")


def spike_and_pseudo_derivative(h: np.ndarray, s: SurrogateSpec, v_th: float) -> tuple[np.ndarray, np.ndarray]:
    """``(z, psi)``: the spike (``1.0`` where ``h > 0``; ``sigmoid(k h)`` in the sigmoid mode) and
    its pseudo-derivative, both in the dtype of ``h``."""
    if s.kind == "sigmoid":
        k = s.steepness
        z = 1.0 / (1.0 + np.exp(-k * h))
        return z.astype(h.dtype, copy=False), (k / v_th * z * (1.0 - z)).astype(h.dtype, copy=False)
    return (h > 0).astype(h.dtype), pseudo_derivative(h, s, v_th)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample cross-entropy ``(batch,)`` and softmax probabilities ``(batch, classes)`` of
    ``logits``; ``p - onehot(labels)`` is the gradient of the loss by the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(np.maximum(p[np.arange(len(labels)), labels], np.finfo(p.dtype).tiny))
    return loss, p
