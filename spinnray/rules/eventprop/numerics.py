"""EventProp on one core's slice: losses and the adjoint step (numpy only).

Wunderlich & Pehle 2021 (exact event-based gradients, recurrent networks included),
discretized as Béna et al. 2024 did for SpiNNaker2 (dt one step, ``a = exp(-dt/tau_syn)``,
``b = exp(-dt/tau_mem)``).  Forward (the LIF of :mod:`spinnray.model.neurons`; a projection
from population Q with delay ``d[q, p]`` steps, any whole number >= 1)::

    I[i] = a I[i-1] + sum_q W[q, p] x_q[i - d[q, p]]
    V[i] = b V[i-1] + (1-b) I[i];  s[i] = V[i] > v_th (V_pre kept);  V <- v_reset (or V - v_th)

Backward, for i = T-1 .. 0 with lambda[T] = 0, on every learning population at once::

    err_q[s] += W[q, p] (lamV[s+d] - lamI[s+d])[p]     for each pre spike x_q[s], d = d[q, p]
    lamI[i] = a lamI[i+1] + (1-a) lamV[i+1]
    lamV[i] = b lamV[i+1] + s[i+1] (D lamV[i+1] + err[i+1]) / max(I[i+1] - V_pre[i+1], guard)
    dL/dW[q, p] -= tau_syn lamI[i][p] x_q[s]            for each pre spike with s + d = i + 1

``err[i+1]`` is dL/dt of a spike at step i+1, in 1/ms: for a TTFS output neuron the loss
derivative at its first spike, for a hidden neuron the sum of the error events the cores it
projects to (its own population's included, for a recurrent projection) sent for that spike.
The error about a spike at s through a delay d is complete in reverse round s+d-1 >= s, before
round s-1 needs it: that is why any delay >= 1 works, and why a block of K <= min delay reverse
rounds needs nothing from the other cores.  ``D`` is the voltage jump of the reset (Wunderlich
& Pehle's ``theta lamV``): ``v_th - v_reset`` (reset to ``v_reset``), ``v_th`` (by subtraction).
``I - V_pre`` equals ``tau_mem dV/dt`` at the crossing; for a crossing from below it is
``b (I[i] - V[i-1]) > 0`` but can be arbitrarily small for a grazing spike, so the division is
guarded explicitly by ``guard`` (counted, never NaN-scrubbed).

A leaky-integrator (LI) output has no spikes and no jumps; a loss on its voltage injects
``lamV[m] += c dL/dV[m]`` with ``c = -(1-b) / (tau_syn (1-a))``
(:func:`voltage_injection_factor`), which makes the output weights' gradient the exact
derivative of the discrete loss (:class:`VoltageLoss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinnray.errors import ConfigError
from spinnray.rules.losses import softmax_cross_entropy

__all__ = ["TTFSLoss", "VoltageLoss", "VOLTAGE_LOSSES", "CountRegulariser", "spike_times", "silent_times", "silent_injection_factor",
           "voltage_injection_factor", "ttfs_loss", "voltage_logits", "voltage_loss", "predict", "predict_voltage",
           "adjoint_step",
           "reset_jump"]

#: the readout losses on a leaky-integrator output's voltage (``learning.loss``)
VOLTAGE_LOSSES = ("mean_voltage", "sum_voltage", "max_voltage")


@dataclass(frozen=True)
class TTFSLoss:
    """Time-to-first-spike cross-entropy.

    ``kind="wunderlich"`` (Wunderlich & Pehle)::

        L = -log softmax(-t / tau0)[label] + alpha (exp(t_label / tau1) - 1)      (t in ms)

    ``kind="bena"`` (Béna et al.'s SpikeCELoss, times in steps)::

        L = -log softmax(-t / xi)[label] + alpha_b (exp(t_label / beta) - 1)

    An output neuron that never fires counts as firing at the end of the window
    (t = steps * dt) and receives no gradient (it has no spike to move), unless
    the silent-neuron surrogate of :func:`silent_times` is on.
    """

    kind: str = "wunderlich"
    tau0_ms: float = 0.5
    tau1_ms: float = 6.4
    alpha: float = 3e-3
    xi_steps: float = 1.5
    alpha_b: float = 1e-2
    beta_steps: float = 100.0

    def __post_init__(self):
        if self.kind not in ("wunderlich", "bena"):
            raise ConfigError(f"learning.loss.kind = {self.kind!r}: expected 'wunderlich' or 'bena'")
        for name in ("tau0_ms", "tau1_ms", "xi_steps", "beta_steps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0):
                raise ConfigError(f"learning.loss.{name} = {v!r}: expected a number > 0")


@dataclass(frozen=True)
class VoltageLoss:
    """Cross-entropy of a softmax over a leaky-integrator output's voltage ``V[t]`` (``T`` steps),
    the readout losses mlGeNN trains recurrent networks with on SHD (Nowotny, Turner & Knight):

    * ``mean_voltage``: logits ``z = (1/T) sum_t V[t]`` (the sum of voltage, mean over the sample);
    * ``sum_voltage``: logits ``z = sum_t V[t]`` (the same, T times sharper);
    * ``max_voltage``: logits ``z = max_t V[t]`` (Wunderlich & Pehle's MNIST loss; the first step
      of the maximum carries its gradient).

    ``L = -log softmax(z)[label]``; the class predicted is the largest logit (ties: the first).
    """

    kind: str = "mean_voltage"

    def __post_init__(self):
        if self.kind not in VOLTAGE_LOSSES:
            raise ConfigError(f"learning.loss = {self.kind!r}: expected one of {list(VOLTAGE_LOSSES)} for a "
                              "leaky-integrator output")


@dataclass(frozen=True)
class CountRegulariser:
    """Hidden spike-count regulariser (after mlGeNN's EventProp compiler; docs/rules.md has the
    definition).  With ``N[b, k]`` the spikes of hidden neuron k in sample b and target ``nu``::

        R[b] = sum_k lam(N[b, k]) / 2 * (N[b, k] - nu)^2,  lam = lambda_upper if N > nu else lambda_lower

    added to sample b's loss.  ``N`` is a whole number, piecewise constant in the weights, so its
    gradient is zero almost everywhere; as mlGeNN does, its slope ``g = lam (N - nu)`` enters the
    adjoint instead: at every spike of neuron k in sample b (step m >= 1), ``lamV[m-1] -= scale g[b, k]``
    after the spike's jump (``scale`` the loss scale, 1 / global batch).  Reverse-time EventProp then
    carries it to the weights like any other error: a neuron above ``nu`` has its pre-spike voltage
    pushed down (fewer spikes), one below ``nu`` (with ``lambda_lower > 0``) pushed up.  mlGeNN
    counts over the mini-batch (its sum against ``nu`` times the batch); here per sample, so a
    core needs only its own spikes (no reduction across replicas before the reverse pass) and the
    per-sample spike records the 128 KB budget limits are what is held down."""

    lambda_upper: float = 0.0
    lambda_lower: float = 0.0
    nu: float = 0.0

    def __post_init__(self):
        for name in ("lambda_upper", "lambda_lower", "nu"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise ConfigError(f"learning.reg_{name if name != 'nu' else 'nu_upper'} = {v!r}: "
                                  "expected a finite number >= 0")

    @property
    def active(self) -> bool:
        return self.lambda_upper > 0 or self.lambda_lower > 0

    def loss_and_slope(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample ``R`` ``(batch,)`` and the slope ``g`` ``(batch, n)`` of the spike counts
        ``(batch, n)`` (float64)."""
        excess = np.asarray(counts, np.float64) - self.nu
        lam = np.where(excess > 0, self.lambda_upper, self.lambda_lower)
        return (0.5 * lam * excess ** 2).sum(axis=1), lam * excess


def voltage_logits(loss: VoltageLoss, v_sum: np.ndarray, v_max: np.ndarray, steps: int) -> np.ndarray:
    """The logits ``(batch, n)`` of ``loss`` from the running sum and maximum of ``V`` over ``steps`` steps."""
    if loss.kind == "max_voltage":
        return np.asarray(v_max, np.float64)
    total = np.asarray(v_sum, np.float64)
    return total / steps if loss.kind == "mean_voltage" else total


def voltage_loss(loss: VoltageLoss, logits: np.ndarray, labels: np.ndarray,
                 steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loss ``(batch,)`` and ``dL/dV[t]`` ``(batch, n)``: for the mean and the sum the
    same at every step t, for the maximum at its step only.  The caller scales by
    1 / (global batch size) for the gradient of the mean."""
    value, p = softmax_cross_entropy(np.asarray(logits, np.float64), labels)
    grad = p
    grad[np.arange(len(labels)), labels] -= 1.0
    return value, grad / steps if loss.kind == "mean_voltage" else grad


def voltage_injection_factor(tau_syn_ms: float, a: float, b: float) -> float:
    """``c`` with ``lamV[m] += c * dL/dV[m]`` for a loss on an LI output's voltage at step ``m``.

    The voltage of a neuron without reset is ``V[m] = sum_i x[i] W k[m - i]`` with the discrete
    kernel ``k = (1-b) sum_{j=i+1..m} a^(j-i-1) b^(m-j)`` (a spike at i arriving at i+1), and the
    reverse recurrence turns a unit of ``lamV[m]`` into ``-tau_syn (1-a) sum_j a^(j-i-1) b^(m-j)``
    of ``dL/dW``: ``c = -(1-b) / (tau_syn (1-a))`` makes the output weights' gradient exact.  As
    dt -> 0 it tends to ``-1/tau_mem``, the continuous adjoint's source ``-(1/tau_mem) dl/dV``.
    """
    return -(1.0 - b) / (tau_syn_ms * (1.0 - a))


def reset_jump(v_th: float, v_reset: float, reset: str) -> float:
    """``D`` of the adjoint jump at a spike: how far the reset moves ``V`` at the crossing,
    ``v_th - v_reset`` (reset to ``v_reset``) or ``v_th`` (reset by subtraction)."""
    return float(v_th) - float(v_reset) if reset == "zero" else float(v_th)


def spike_times(first_step: np.ndarray, v_before: np.ndarray, v_pre: np.ndarray, steps: int,
                dt_ms: float, interpolate: bool = True, v_th: float = 1.0) -> np.ndarray:
    """First-spike times in ms, ``(batch, n)``.

    ``first_step`` is the step of the first spike (-1: none); ``v_before`` the
    voltage after the previous step and ``v_pre`` the pre-reset voltage at the
    spike.  With ``interpolate`` the crossing of the threshold ``v_th`` is placed linearly
    inside the step, ``t = dt (i - 1 + (v_th - V[i-1]) / (V_pre[i] - V[i-1]))``,
    which makes the loss continuous in the weights; otherwise ``t = i dt``.
    A neuron that did not fire gets ``steps * dt``.
    """
    t = first_step.astype(np.float64)
    fired = first_step >= 0
    if interpolate:
        rise = np.where(fired, v_pre - v_before, 1.0)
        frac = np.where(fired, (v_th - v_before) / np.where(rise > 0, rise, 1.0), 1.0)
        t = t - 1.0 + np.clip(frac, 0.0, 1.0)
    return np.where(fired, t * dt_ms, steps * dt_ms)


def silent_times(t_ms: np.ndarray, fired: np.ndarray, v_max: np.ndarray, steps: int, dt_ms: float,
                 silent_ms: float, v_th: float = 1.0) -> np.ndarray:
    """Times the loss uses, ``(batch, n)`` in ms: the first-spike time where a
    neuron fired, and for a silent neuron the surrogate

        t~ = steps * dt + silent_ms * max(v_th - V_max, 0)

    where ``V_max`` is the highest membrane potential it reached in the window.
    A silent neuron thus sits later the further it stayed below threshold, and ``dt~/dV_max = -silent_ms``: the loss derivative at t~ becomes a
    gradient that raises (for the label) the neuron's peak voltage, where
    EventProp alone has no spike to move.  ``silent_ms = 0`` gives the plain
    ``steps * dt`` of :func:`spike_times`.  ConfigError if ``silent_ms < 0``.
    """
    if not silent_ms >= 0:
        raise ConfigError(f"learning.silent_ms = {silent_ms!r}: expected a number >= 0")
    late = steps * dt_ms + silent_ms * np.maximum(v_th - np.asarray(v_max, np.float64), 0.0)
    return np.where(fired, t_ms, late)


def silent_injection_factor(silent_ms: float, tau_syn_ms: float, a: float, b: float) -> float:
    """``c`` with ``lamV[m] += c * dL/dt~`` at the step ``m`` of ``V_max`` (see
    :func:`silent_times`), in the reverse recurrence of this module.

    With ``V[m] = sum_i x[i] W k[m - i]`` (``k`` the discrete kernel of a silent
    neuron, ``(1-b) sum_{j=i+1..m} a^(j-i-1) b^(m-j)``), the recurrence gives
    ``dL/dW = -tau_syn (1-a) c sum_j a^(j-i-1) b^(m-j) x[i]`` for the same ``j``, so
    ``c = silent_ms (1-b) / (tau_syn (1-a))`` makes the output weights' gradient
    the exact derivative of the discrete ``L(t~(V[m]))`` (for a fixed ``m``).  As
    dt -> 0, ``c`` tends to ``silent_ms / tau_mem``: the continuous adjoint
    ``lamV = -(1/tau_mem) dL/dV`` of the same term, so the error the hidden layer
    receives keeps the usual EventProp form.  (It is ``-silent_ms`` times
    :func:`voltage_injection_factor`, since ``dt~/dV_max = -silent_ms``.)
    """
    return silent_ms * (1.0 - b) / (tau_syn_ms * (1.0 - a))


def ttfs_loss(t_ms: np.ndarray, fired: np.ndarray, labels: np.ndarray, loss: TTFSLoss,
              dt_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loss ``(batch,)`` and ``dL/dt`` in 1/ms ``(batch, n)``.

    ``dL/dt`` is zero for neurons that did not fire.  The caller scales by
    1 / (global batch size) for the gradient of the mean.
    """
    t_ms = np.asarray(t_ms, np.float64)
    batch = np.arange(len(labels))
    if loss.kind == "wunderlich":      # softmax temperature and regulariser time constant in ms
        temp, amp, tau = loss.tau0_ms, loss.alpha, loss.tau1_ms
    else:                              # Béna's constants are in steps
        temp, amp, tau = loss.xi_steps * dt_ms, loss.alpha_b, loss.beta_steps * dt_ms
    scale, z = 1.0 / temp, -t_ms / temp
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.zeros_like(p)
    onehot[batch, labels] = 1.0
    reg_arg = t_ms[batch, labels] / tau
    value = -np.log(p[batch, labels]) + amp * (np.exp(reg_arg) - 1.0)
    grad = scale * (onehot - p)
    grad[batch, labels] += amp / tau * np.exp(reg_arg)
    return value, np.where(fired, grad, 0.0)


def predict_voltage(logits: np.ndarray) -> np.ndarray:
    """Class of the largest logit (the first of ties)."""
    return np.argmax(logits, axis=1)


def predict(t_ms: np.ndarray, fired: np.ndarray) -> np.ndarray:
    """Class of the earliest first spike; -1 when nothing fired or the earliest is tied."""
    t = np.where(fired, t_ms, np.inf)
    best = t.min(axis=1, keepdims=True)
    winners = (t == best) & np.isfinite(best)
    return np.where(winners.sum(axis=1) == 1, winners.argmax(axis=1), -1)


def adjoint_step(lam_v: np.ndarray, lam_i: np.ndarray, spiked: np.ndarray, denom: np.ndarray,
                 err: np.ndarray, a: float, b: float, guard: float,
                 jump: float = 1.0) -> tuple[np.ndarray, np.ndarray, int]:
    """One reverse step: ``(lamV[i], lamI[i], guarded)`` from the values at i+1.

    ``spiked``/``denom``/``err`` are ``s[i+1]``, ``I[i+1] - V_pre[i+1]`` and
    ``err[i+1]``; ``jump`` is the reset's ``D`` (:func:`reset_jump`; ``1.0 * lamV`` is
    ``lamV`` exactly).  ``guarded`` counts spikes whose denominator was raised to ``guard``.
    ``spiked=None``: no neuron spiked at i+1 (``denom`` and ``err`` are not read); the
    same arithmetic, a zero jump.
    """
    lam_i_new = a * lam_i + (1.0 - a) * lam_v
    if spiked is None:
        lam_v_new = b * lam_v + 0.0            # + the zero jump, as below (it turns -0.0 into 0.0)
        return lam_v_new.astype(lam_v.dtype, copy=False), lam_i_new.astype(lam_i.dtype, copy=False), 0
    low = spiked & (denom < guard)
    den = np.where(spiked, np.where(low, guard, denom), 1.0)
    lam_v_new = b * lam_v + np.where(spiked, (jump * lam_v + err) / den, 0.0)
    return lam_v_new.astype(lam_v.dtype, copy=False), lam_i_new.astype(lam_i.dtype, copy=False), int(low.sum())
