"""Neuron models and their pure step functions (numpy only).

Every model is a frozen dataclass of parameters (units in the names) that
refuses to be built invalid, plus a step function with one signature::

    step(inp, state, consts) -> (spikes, state)

``inp`` is the synaptic input that arrives this step, shape ``(batch, n)``;
``state`` is a NamedTuple of arrays of the same shape; ``consts`` are the decay
factors precomputed once from the parameters and ``dt_ms``.  Nothing here
allocates per step beyond the new state arrays.

Discretization (dt = one step, decays ``a = exp(-dt/tau_syn)``,
``b = exp(-dt/tau_mem)``), after Béna et al. 2024 (EventProp on SpiNNaker2):

* LIF, current based, exponential synapse::

      I[t] = a I[t-1] + in[t]
      V[t] = b V[t-1] + (1 - b) I[t]
      s[t] = V[t] > v_th              (V_pre[t] = V[t] is kept in the state)
      V[t] <- v_reset where s[t]       (reset="zero")
      V[t] <- V[t] - v_th where s[t]   (reset="subtract")

  ``tau_syn_ms = 0`` removes the synaptic filter (``I[t] = in[t]``).

* ALIF (Bellec et al. 2020, with the (1 - alpha), (1 - rho) factors of their
  code), ``alpha = exp(-dt/tau_mem)``, ``rho = exp(-dt/tau_adapt)``::

      a[t] = rho a[t-1] + (1 - rho) z[t-1]
      A[t] = v_th + beta a[t]
      v[t] = alpha v[t-1] + (1 - alpha) in[t] - z[t-1] A[t]
      z[t] = v[t] > A[t]   (and not refractory)

* LI, the leaky-integrator readout: the LIF equations without a threshold.
* SpikeSource: replays given spikes; it has no state.
* AnalogSource: real-valued input (e.g. audio features) that the host writes
  into the memory of every core it projects to; ``x[t]`` enters the target's
  synaptic input at step ``t``.  It has no core, no keys and no state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from spinnray.errors import NetworkError

__all__ = [
    "LIF", "ALIF", "LI", "SpikeSource", "AnalogSource", "NeuronModel", "model_from_dict",
    "LIFState", "ALIFState", "LIState", "init_state", "step", "decays",
]


def _positive(obj, name: str, allow_zero: bool = False) -> None:
    value = getattr(obj, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise NetworkError(f"{type(obj).__name__}.{name} = {value!r}: expected a finite number {need}")


def _finite(obj, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise NetworkError(f"{type(obj).__name__}.{name} = {value!r}: expected a finite number")


@dataclass(frozen=True)
class LIF:
    """Current-based leaky integrate-and-fire neuron with exponential synapse."""

    tau_mem_ms: float = 20.0
    tau_syn_ms: float = 5.0
    v_th: float = 1.0
    v_reset: float = 0.0
    reset: str = "zero"

    kind = "lif"
    spiking = True

    def __post_init__(self):
        _positive(self, "tau_mem_ms")
        _positive(self, "tau_syn_ms", allow_zero=True)
        _finite(self, "v_th")
        _finite(self, "v_reset")
        if self.reset not in ("zero", "subtract"):
            raise NetworkError(f"LIF.reset = {self.reset!r}: expected 'zero' or 'subtract'")


@dataclass(frozen=True)
class ALIF:
    """Adaptive LIF neuron of Bellec et al. 2020 (reset by subtraction)."""

    tau_mem_ms: float = 20.0
    tau_adapt_ms: float = 200.0
    beta: float = 0.07
    v_th: float = 1.0
    refractory_steps: int = 0

    kind = "alif"
    spiking = True

    def __post_init__(self):
        _positive(self, "tau_mem_ms")
        _positive(self, "tau_adapt_ms")
        _positive(self, "v_th")
        _positive(self, "beta", allow_zero=True)
        if not isinstance(self.refractory_steps, int) or isinstance(self.refractory_steps, bool) \
                or self.refractory_steps < 0:
            raise NetworkError(f"ALIF.refractory_steps = {self.refractory_steps!r}: expected an int >= 0")


@dataclass(frozen=True)
class LI:
    """Leaky integrator (non-spiking readout); ``V`` is its output."""

    tau_mem_ms: float = 20.0
    tau_syn_ms: float = 0.0

    kind = "li"
    spiking = False

    def __post_init__(self):
        _positive(self, "tau_mem_ms")
        _positive(self, "tau_syn_ms", allow_zero=True)


@dataclass(frozen=True)
class SpikeSource:
    """Replays the spikes given to each run (input population)."""

    kind = "source"
    spiking = True


@dataclass(frozen=True)
class AnalogSource:
    """Real-valued input written by the host into the cores it projects to."""

    kind = "analog"
    spiking = False


NeuronModel = LIF | ALIF | LI | SpikeSource | AnalogSource
_MODELS = {cls.kind: cls for cls in (LIF, ALIF, LI, SpikeSource, AnalogSource)}


def model_from_dict(d: dict, where: str = "model") -> NeuronModel:
    """Build a model from ``{"model": kind, **params}`` (configs and YAML)."""
    d = dict(d)
    kind = d.pop("model", None)
    if kind not in _MODELS:
        raise NetworkError(f"{where}.model = {kind!r}: expected one of {sorted(_MODELS)}")
    cls = _MODELS[kind]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise NetworkError(f"{where}: unknown parameter(s) {unknown} for model {kind!r}; "
                           f"expected some of {sorted(known)}")
    return cls(**d)


class LIFState(NamedTuple):
    i: np.ndarray      # (batch, n) synaptic current
    v: np.ndarray      # (batch, n) membrane potential after reset
    v_pre: np.ndarray  # (batch, n) membrane potential before reset (EventProp needs it)


class ALIFState(NamedTuple):
    v: np.ndarray      # (batch, n)
    a: np.ndarray      # (batch, n) adaptation variable
    z: np.ndarray      # (batch, n) spikes of the last step, as the working dtype
    r: np.ndarray      # (batch, n) int32 refractory steps left


class LIState(NamedTuple):
    i: np.ndarray      # (batch, n)
    v: np.ndarray      # (batch, n) output


def decays(model: NeuronModel, dt_ms: float) -> dict[str, float]:
    """The per-step decay factors of ``model`` for a step of ``dt_ms``."""

    def ex(tau):
        return 0.0 if tau == 0 else math.exp(-dt_ms / tau)

    if isinstance(model, (LIF, LI)):
        return {"a": ex(model.tau_syn_ms), "b": ex(model.tau_mem_ms)}
    if isinstance(model, ALIF):
        return {"alpha": ex(model.tau_mem_ms), "rho": ex(model.tau_adapt_ms)}
    return {}


def init_state(model: NeuronModel, batch: int, n: int, dtype) -> tuple:
    """Zero state of ``n`` neurons for ``batch`` samples."""
    z = lambda: np.zeros((batch, n), dtype)  # noqa: E731
    if isinstance(model, LIF):
        return LIFState(z(), z(), z())
    if isinstance(model, ALIF):
        return ALIFState(z(), z(), z(), np.zeros((batch, n), np.int32))
    if isinstance(model, LI):
        return LIState(z(), z())
    return ()


def step(model: NeuronModel, inp: np.ndarray, state: tuple, c: dict) -> tuple[np.ndarray | None, tuple]:
    """Advance ``state`` by one step under input ``inp`` (batch, n).

    Returns ``(spikes bool (batch, n) or None for LI, new_state)``.  The
    arithmetic stays in the dtype of ``inp`` (python floats do not promote).
    """
    if isinstance(model, LIF):
        i = c["a"] * state.i + inp
        v = c["b"] * state.v + (1.0 - c["b"]) * i
        s = v > model.v_th
        if model.reset == "zero":
            v_new = np.where(s, np.asarray(model.v_reset, v.dtype), v)
        else:
            v_new = v - s.astype(v.dtype) * np.asarray(model.v_th, v.dtype)
        return s, LIFState(i, v_new, v)
    if isinstance(model, ALIF):
        a = c["rho"] * state.a + (1.0 - c["rho"]) * state.z
        thr = model.v_th + model.beta * a
        v = c["alpha"] * state.v + (1.0 - c["alpha"]) * inp - state.z * thr
        s = v > thr
        r = state.r
        if model.refractory_steps:
            s &= r == 0
            r = np.where(s, model.refractory_steps, np.maximum(r - 1, 0)).astype(np.int32)
        return s, ALIFState(v, a, s.astype(v.dtype), r)
    if isinstance(model, LI):
        i = c["a"] * state.i + inp
        v = c["b"] * state.v + (1.0 - c["b"]) * i
        return None, LIState(i, v)
    raise NetworkError(f"model {model!r} has no step function (a SpikeSource replays its input)")


def accumulate_events(n_batch: int, b: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Sum event rows per sample, in event order: ``out[b[e]] += rows[e]``.

    ``b`` (n_events,) sample index of each event; ``rows`` (n_events, n) the
    synaptic row each event adds.  The sum for every (sample, column) is taken
    strictly sequentially in event order, starting from zero, so a column's
    value never depends on which other columns or samples are computed beside
    it.  This is what makes spikes bit-identical for any number of cores per
    population and any batch composition (BLAS matmul is not: its result for a
    column changes with the matrix width).  Returns (n_batch, n).
    """
    n = rows.shape[1]
    out_dtype = rows.dtype
    if len(b) == 0:
        return np.zeros((n_batch, n), out_dtype)
    # With two or more contiguous columns, numpy reduces a non-last axis row by
    # row (the inner loop runs over columns), i.e. strictly in event order, and
    # about 10x faster than cumsum.  With one column the reduced axis becomes
    # the inner loop and numpy sums pairwise, so cumsum (sequential by
    # definition) is kept there.  tests/test_network.py pins both paths
    # against a plain sequential loop.
    sequential_reduce = n >= 2
    if n_batch == 1:
        rows = np.ascontiguousarray(rows)
        return np.add.reduce(rows, axis=0, keepdims=True) if sequential_reduce else np.cumsum(rows, axis=0)[-1:]
    order = np.argsort(b, kind="stable")
    bs = b[order]
    rank = np.arange(len(bs)) - np.searchsorted(bs, bs, side="left")
    padded = np.zeros((n_batch, int(rank.max()) + 1, n), out_dtype)
    padded[bs, rank] = rows[order]            # zeros after a sample's last event add exactly nothing
    return np.add.reduce(padded, axis=1) if sequential_reduce else np.cumsum(padded, axis=1)[:, -1]
