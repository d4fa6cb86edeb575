"""The optimizer of every learning rule: Adam on one array, as torch.optim.Adam (bias-corrected,
eps outside the sqrt).  A learning core keeps one per incoming projection; the dense BPTT one
per matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AdamSpec", "Adam"]


@dataclass(frozen=True)
class AdamSpec:
    """Adam's constants (the typed ``learning.lr``, ``beta1``, ``beta2``, ``eps``) and
    ``lr_scale``: ``(projection name, factor)`` pairs, each projection's rate being ``lr`` times
    its factor (1 where none is given; :func:`spinnray.rules.learning.lr_scales`)."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    lr_scale: tuple[tuple[str, float], ...] = ()

    def factor(self, projection: str) -> float:
        """The factor on ``lr`` of ``projection`` (1.0 if it has none)."""
        return dict(self.lr_scale).get(projection, 1.0)


class Adam:
    """Adam on one array of ``shape`` and ``dtype``; :meth:`step` updates a parameter in place."""

    def __init__(self, shape, dtype, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m = np.zeros(shape, dtype)
        self.v = np.zeros(shape, dtype)
        self.t = 0

    @classmethod
    def of(cls, spec: AdamSpec, shape, dtype, factor: float = 1.0) -> "Adam":
        """Adam with ``spec``'s constants at ``factor`` times its rate (a projection's lr_scale)."""
        return cls(shape, dtype, spec.lr * factor, (spec.beta1, spec.beta2), spec.eps)

    @property
    def nbytes(self) -> int:
        return self.m.nbytes + self.v.nbytes

    def step(self, param: np.ndarray, grad: np.ndarray) -> None:
        """Update ``param`` in place."""
        self.t += 1
        self.m *= self.b1
        self.m += (1 - self.b1) * grad
        self.v *= self.b2
        self.v += (1 - self.b2) * grad * grad
        m_hat = self.m / (1 - self.b1 ** self.t)
        v_hat = self.v / (1 - self.b2 ** self.t)
        param -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(param.dtype, copy=False)

    def state(self) -> dict:
        return {"m": self.m.copy(), "v": self.v.copy(), "t": self.t, "lr": self.lr}

    def load(self, state: dict) -> None:
        self.m[...] = state["m"]
        self.v[...] = state["v"]
        self.t = int(state["t"])
        self.lr = float(state["lr"])
