"""Neuron models: each one owns its parameters, decay constants, state, step and memory (numpy only).

A model is a frozen dataclass of parameters (units in the names) that refuses to be built
invalid.  Everything a core needs to run it comes from the model itself::

    consts = model.consts(dt_ms)                    # decay factors, once per core
    state = model.init_state(batch, n, dtype)       # a NamedTuple of (batch, n) arrays
    spikes, state = model.step(inp, state, consts)  # one step under synaptic input inp
    model.state_bytes(itemsize)                     # bytes of state per neuron and sample

so adding a model is one class here: the mapping, the cores and ``model_from_dict`` (the
``model:`` key of YAML networks, by :attr:`NeuronModel.kind`) find it without other edits.

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
from typing import ClassVar, NamedTuple

import numpy as np

from spinnray.checks import check_int, check_real, show
from spinnray.errors import NetworkError

__all__ = ["NeuronModel", "LIF", "ALIF", "LI", "SpikeSource", "AnalogSource", "model_from_dict",
           "LIFState", "ALIFState", "LIState"]


def _decay(tau_ms: float, dt_ms: float) -> float:
    return 0.0 if tau_ms == 0 else math.exp(-dt_ms / tau_ms)


class NeuronModel:
    """Base of every model.  ``kind`` names it in configs; ``spiking`` says whether it sends
    spikes; ``has_core``: False for a population written by the host (no core, no keys)."""

    kind: ClassVar[str] = ""
    spiking: ClassVar[bool] = False
    has_core: ClassVar[bool] = True
    _KINDS: ClassVar[dict[str, type]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            NeuronModel._KINDS[cls.kind] = cls

    def _positive(self, name: str, allow_zero: bool = False) -> None:
        check_real(f"{type(self).__name__}.{name}", getattr(self, name), 0.0, strict=not allow_zero,
                   error=NetworkError)

    def _finite(self, name: str) -> None:
        check_real(f"{type(self).__name__}.{name}", getattr(self, name), error=NetworkError)

    def consts(self, dt_ms: float) -> dict[str, float]:
        """The per-step constants of a step of ``dt_ms``."""
        return {}

    def init_state(self, batch: int, n: int, dtype) -> tuple:
        """Zero state of ``n`` neurons for ``batch`` samples."""
        return ()

    def state_bytes(self, itemsize: int) -> int:
        """Bytes of state per neuron and sample at a working dtype of ``itemsize`` bytes."""
        return 0

    def step(self, inp: np.ndarray, state: tuple, c: dict) -> tuple[np.ndarray | None, tuple]:
        """Advance ``state`` by one step under input ``inp`` (batch, n); returns
        ``(spikes bool (batch, n) or None for a non-spiking model, new_state)``.  The
        arithmetic stays in the dtype of ``inp`` (python floats do not promote)."""
        raise NetworkError(f"model {self!r} has no step function (a source replays its input)")

    @staticmethod
    def voltage(state: tuple) -> np.ndarray:
        """The membrane potential recorded as ``v`` (before reset, where the model keeps it)."""
        return state.v


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


@dataclass(frozen=True)
class LIF(NeuronModel):
    """Current-based leaky integrate-and-fire neuron with exponential synapse."""

    tau_mem_ms: float = 20.0
    tau_syn_ms: float = 5.0
    v_th: float = 1.0
    v_reset: float = 0.0
    reset: str = "zero"

    kind: ClassVar[str] = "lif"
    spiking: ClassVar[bool] = True

    def __post_init__(self):
        self._positive("tau_mem_ms")
        self._positive("tau_syn_ms", allow_zero=True)
        self._finite("v_th")
        self._finite("v_reset")
        if self.reset not in ("zero", "subtract"):
            raise NetworkError(f"LIF.reset = {show(self.reset)}: expected 'zero' or 'subtract'")

    def consts(self, dt_ms):
        return {"a": _decay(self.tau_syn_ms, dt_ms), "b": _decay(self.tau_mem_ms, dt_ms)}

    def init_state(self, batch, n, dtype):
        return LIFState(*(np.zeros((batch, n), dtype) for _ in range(3)))

    def state_bytes(self, itemsize):
        return 3 * itemsize

    def step(self, inp, state, c):
        i = c["a"] * state.i + inp
        v = c["b"] * state.v + (1.0 - c["b"]) * i
        s = v > self.v_th
        if self.reset == "zero":
            v_new = np.where(s, np.asarray(self.v_reset, v.dtype), v)
        else:
            v_new = v - s.astype(v.dtype) * np.asarray(self.v_th, v.dtype)
        return s, LIFState(i, v_new, v)

    @staticmethod
    def voltage(state):
        return state.v_pre


@dataclass(frozen=True)
class ALIF(NeuronModel):
    """Adaptive LIF neuron of Bellec et al. 2020 (reset by subtraction)."""

    tau_mem_ms: float = 20.0
    tau_adapt_ms: float = 200.0
    beta: float = 0.07
    v_th: float = 1.0
    refractory_steps: int = 0

    kind: ClassVar[str] = "alif"
    spiking: ClassVar[bool] = True

    def __post_init__(self):
        self._positive("tau_mem_ms")
        self._positive("tau_adapt_ms")
        self._positive("v_th")
        self._positive("beta", allow_zero=True)
        if not isinstance(self.refractory_steps, int):
            raise NetworkError(f"ALIF.refractory_steps = {show(self.refractory_steps)}: expected an integer >= 0")
        check_int("ALIF.refractory_steps", self.refractory_steps, 0, error=NetworkError)

    def consts(self, dt_ms):
        return {"alpha": _decay(self.tau_mem_ms, dt_ms), "rho": _decay(self.tau_adapt_ms, dt_ms)}

    def init_state(self, batch, n, dtype):
        z = lambda: np.zeros((batch, n), dtype)  # noqa: E731
        return ALIFState(z(), z(), z(), np.zeros((batch, n), np.int32))

    def state_bytes(self, itemsize):
        return 3 * itemsize + 4

    def step(self, inp, state, c):
        a = c["rho"] * state.a + (1.0 - c["rho"]) * state.z
        thr = self.v_th + self.beta * a
        v = c["alpha"] * state.v + (1.0 - c["alpha"]) * inp - state.z * thr
        s = v > thr
        r = state.r
        if self.refractory_steps:
            s &= r == 0
            r = np.where(s, self.refractory_steps, np.maximum(r - 1, 0)).astype(np.int32)
        return s, ALIFState(v, a, s.astype(v.dtype), r)


@dataclass(frozen=True)
class LI(NeuronModel):
    """Leaky integrator (non-spiking readout); ``V`` is its output."""

    tau_mem_ms: float = 20.0
    tau_syn_ms: float = 0.0

    kind: ClassVar[str] = "li"

    def __post_init__(self):
        self._positive("tau_mem_ms")
        self._positive("tau_syn_ms", allow_zero=True)

    def consts(self, dt_ms):
        return {"a": _decay(self.tau_syn_ms, dt_ms), "b": _decay(self.tau_mem_ms, dt_ms)}

    def init_state(self, batch, n, dtype):
        return LIState(np.zeros((batch, n), dtype), np.zeros((batch, n), dtype))

    def state_bytes(self, itemsize):
        return 2 * itemsize

    def step(self, inp, state, c):
        i = c["a"] * state.i + inp
        v = c["b"] * state.v + (1.0 - c["b"]) * i
        return None, LIState(i, v)


@dataclass(frozen=True)
class SpikeSource(NeuronModel):
    """Replays the spikes given to each run (input population)."""

    kind: ClassVar[str] = "source"
    spiking: ClassVar[bool] = True


@dataclass(frozen=True)
class AnalogSource(NeuronModel):
    """Real-valued input written by the host into the cores it projects to."""

    kind: ClassVar[str] = "analog"
    has_core: ClassVar[bool] = False


def model_from_dict(d: dict, where: str = "model") -> NeuronModel:
    """Build a model from ``{"model": kind, **params}`` (configs and YAML)."""
    d = dict(d)
    kind = d.pop("model", None)
    kinds = NeuronModel._KINDS
    if kind not in kinds:
        raise NetworkError(f"{where}.model = {show(kind)}: expected one of {sorted(kinds)}")
    cls = kinds[kind]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise NetworkError(f"{where}: unknown parameter(s) {unknown} for model {kind!r}; "
                           f"expected some of {sorted(known)}")
    return cls(**d)
