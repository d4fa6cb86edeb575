"""A core that learns with EventProp (see :mod:`spinnray.rules.eventprop.numerics` for the equations).

Forward, the core records what its reverse pass will need, sparsely, as
events: its own spikes with ``I - V_pre`` at each, and the pre-synaptic spikes
it received (its own population's too, through a recurrent projection).  An
output core (``learning.loss`` set) also keeps, per sample and neuron, what its
loss reads: the first spike (TTFS losses on LIF outputs) or the running sum and
maximum of the voltage (:class:`~spinnray.rules.eventprop.numerics.VoltageLoss`
on a leaky-integrator output); at the end of the forward run it computes the
loss from them and the labels it was given.  Nothing is kept per step: the
records grow with the spikes, not with T.

Reverse, step ``i`` (from T-1 down to 0) on every learning core:

1. *send*: for each pre-synaptic spike at step s whose delay d brings it to
   ``s + d = i + 1``, the partial sum ``W[pre, local] . (lamV[i+1] - lamI[i+1])``
   over this core's neurons (with per-synapse delays: over the synapses of delay d,
   kept until the projection's smallest delay completes the sum), as an error
   event keyed by the pre neuron's error key and stamped with its spike step s
   (zero sums are not sent);
2. *adjoint*: ``lamV[i], lamI[i]`` from the values at i+1, the core's spikes at
   i+1 and the errors that arrived for them; an LI output adds its loss's
   ``c dL/dV[i]``;
3. *gradient*: ``dW[pre] -= tau_syn lamI[i][sample]`` for each such pre spike;
4. *receive*: error events about this core's spikes, summed in arrival order
   (ascending source core) into the step they are about.

An error about a spike at s through delay d is complete in step s+d-1 and needed
in step s-1, so in rounds of K <= min delay reverse steps (``backward_block(i, K)``,
the lockstep schedule) nothing a core needs comes from its own round; errors that
arrive rounds ahead of the step that uses them (about spikes before the round's first
step) wait in a sparse buffer (``error_buffers`` in the memory account, with the
partial sums of step 1).  Until the first error
reaches a core its adjoint is exactly zero, and those steps send nothing and add
nothing (they only count guarded spikes), so they are skipped.  With the layered
schedule (feed-forward networks, :mod:`spinnray.machine.core`) a core runs all its
reverse steps in one go (:meth:`EventPropCore.backward_layer`), the error events of
every step having arrived before, each carrying its step.

Weights never leave the core; gradients are read out, reduced across
replicas by the trainer, and applied by each core's own Adam.  Stepping
data-parallel copies (:mod:`spinnray.machine.copies`), a core keeps per copy
what the copy would keep alone: its gradients, the moment its adjoint stops
being zero (a copy wakes on its own rows' errors and loss terms), its error
buffers and guarded spikes, and the first step stamped on its error frames.

Weight storage (``spec.learning.weight_store``, the
:class:`~spinnray.rules.learning.WeightStoreSpec` from ``machine.weight_bits``,
``rounding``, ``accumulate``, ``transfer``, ``weight_max``, ``weight_range``,
``weight_range_scope``, ``weight_range_growth``, ``synapse``, ``pcm``, ``weight_seed``): absent (or
None) the core keeps float weights and Adam updates them in place; given, each
incoming projection's slice lives in a :mod:`spinnray.machine.quant` store, built,
seeded, read, updated and counted as :mod:`spinnray.rules.learning` describes,
exactly as on the e-prop cores.  Forward and reverse passes use the effective
weights read when a run starts; the device clock ``elapsed_s`` advances by
``spec.batch x T x dt`` per run (the mapped lockstep batch, the same on every
replica whatever its shard, so data-parallel replicas age their devices alike;
for full batches on one replica this is the e-prop cores' ``B T dt``).  Adam's
step and a weight bump (:meth:`EventPropCore.bump`) are given to the store as
deltas.  Replicas receive the same reduced gradient, hold the same Adam state
and the same per-projection, per-column random streams (stochastic rounding,
PCM noise), so their stores stay bit-identical; so does any split of a
population over cores.
"""

from __future__ import annotations

import numpy as np
from dataclasses import dataclass

from spinnray.errors import NetworkError, SpinnrayError
from spinnray.machine.core import CoreShape, CoreSpec, forward_memory
from spinnray.model.neurons import LI, LIF
from spinnray.rules.eventprop.numerics import (CountRegulariser, TTFSLoss, VoltageLoss, adjoint_step, predict, predict_voltage,
                                               reset_jump, silent_injection_factor, silent_times, spike_times,
                                               ttfs_loss, voltage_injection_factor, voltage_logits, voltage_loss)
from spinnray.rules.learning import LearningCore, WeightStoreSpec, learning_memory
from spinnray.rules.optim import AdamSpec

__all__ = ["EventPropCoreSpec", "EventPropCore", "model_problem", "MAX_STEPS"]

#: steps of a run: the spike records keep steps as int16
MAX_STEPS = 32767


def model_problem(model, loss) -> str | None:
    """Why EventProp's adjoint does not hold for a learning population of ``model`` (None: it
    does).  ``loss``: the population computes this loss (the output), or None (hidden).

    Hidden populations and TTFS outputs are LIF with a threshold crossing the adjoint can
    jump at: ``v_th > 0`` (the rest state 0 lies below it), ``v_reset < v_th`` when the reset
    is to ``v_reset`` (else the neuron fires again with no crossing), and a synaptic filter
    ``tau_syn_ms > 0`` (the gradient is ``-tau_syn lamI``; without it input spikes make ``V``
    jump and a spike time has no derivative).  A voltage loss needs a leaky-integrator output
    with ``tau_syn_ms > 0`` (same reason)."""
    voltage = isinstance(loss, VoltageLoss)
    if voltage:
        if not isinstance(model, LI):
            return f"learning.loss = {loss.kind!r} reads a leaky-integrator (model li) output; it is {model!r}"
    elif not isinstance(model, LIF):
        what = f"a TTFS loss ({loss.kind!r}) needs" if loss is not None else "hidden populations need"
        hint = (" (an li output takes a voltage loss: learning.loss = mean_voltage, sum_voltage or max_voltage)"
                if isinstance(model, LI) and loss is not None else "")
        return f"{what} LIF neurons (model lif){hint}; it is {model!r}"
    if not model.tau_syn_ms > 0:
        return f"tau_syn_ms = {model.tau_syn_ms!r}: EventProp needs a synaptic filter, tau_syn_ms > 0"
    if voltage:
        return None
    if not model.v_th > 0:
        return f"v_th = {model.v_th!r}: expected v_th > 0 (above the rest state 0, so that every spike is a crossing)"
    if model.reset == "zero" and not model.v_reset < model.v_th:
        return (f"v_reset = {model.v_reset!r} with v_th = {model.v_th!r}: expected v_reset < v_th (a reset at or "
                "above threshold fires again without a crossing)")
    return None


@dataclass(frozen=True)
class EventPropCoreSpec:
    """What an EventProp core is built with (typed ``learning`` of its :class:`CoreSpec`).

    ``tau_syn_ms``: its population's synaptic time constant (the gradient's factor);
    ``loss`` is set on the output core (it computes the loss: a :class:`TTFSLoss` from its
    first spikes, a :class:`VoltageLoss` from an LI output's voltage); ``interpolate``: spike
    times inside the step; ``silent_ms``: the silent-neuron surrogate of
    :func:`~spinnray.rules.eventprop.numerics.silent_times` (TTFS only; 0 = off);
    ``spikes_per_neuron``: the mapper's estimate of the spike records (checked after every
    forward run against what the core really holds); ``regulariser``: the hidden spike-count
    term (:class:`~spinnray.rules.eventprop.numerics.CountRegulariser`; hidden cores only, None = off)."""

    adam: AdamSpec
    tau_syn_ms: float
    guard: float
    interpolate: bool = True
    loss: TTFSLoss | VoltageLoss | None = None
    silent_ms: float = 0.0
    weight_store: WeightStoreSpec | None = None
    spikes_per_neuron: float = 2.0
    regulariser: CountRegulariser | None = None

    @property
    def core_class(self):
        return EventPropCore

    def static_memory(self, shape: CoreShape) -> dict[str, int]:
        """Stores, gradients, Adam, masks, error keys and the adjoint (lamV, lamI, err_in)."""
        mem = learning_memory(shape, self.weight_store)
        mem.setdefault("masks", 0)
        mem.setdefault("error_keys", 0)
        mem["adjoint"] = 3 * shape.batch * shape.n * shape.itemsize
        if self.regulariser is not None:
            mem["regulariser"] = shape.batch * shape.n * shape.itemsize     # the lamV jump per sample and neuron
        return mem

    def memory(self, shape: CoreShape) -> dict[str, int]:
        """The mapper's estimate: forward arrays, :meth:`static_memory`, and spike records at
        ``spikes_per_neuron`` spikes per neuron and sample (own spikes 10 bytes each: step,
        sample, neuron as int16 and I - V_pre; pre-synaptic spikes 6 bytes)."""
        pre_neurons = sum(size for _, size in shape.history)
        records = int(shape.batch * self.spikes_per_neuron * (10 * shape.n + 6 * pre_neurons))
        return {**forward_memory(shape), **self.static_memory(shape), "spike_records": records}


class EventPropCore(LearningCore):
    """A LIF slice, or the LI output, trained with EventProp (:class:`EventPropCoreSpec`).

    With ``silent_ms > 0`` a TTFS output core also tracks each neuron's highest
    pre-reset voltage and its step, and in the reverse step of that step adds
    ``c * dL/dt~`` (:func:`spinnray.rules.eventprop.numerics.silent_injection_factor`) to
    ``lamV`` of every neuron that stayed silent.  An LI output adds ``c dL/dV[i]``
    (:func:`~spinnray.rules.eventprop.numerics.voltage_injection_factor`) at every step
    (mean and sum of the voltage) or at the step of the maximum.  A hidden core with a
    ``regulariser`` counts each neuron's spikes per sample after the forward run, records its
    part of the regulariser's loss (``reg_loss``, per sample) and adds the slope's jump to
    ``lamV`` at each of its spikes in the reverse pass (local: no extra events).
    """

    steps_copies = True         # every sum over samples and every count is kept per copy (port_grads, guarded, buffers)

    def __init__(self, spec: CoreSpec):
        L = spec.learning
        problem = model_problem(spec.model, L.loss)
        if problem:
            raise NetworkError(f"EventProp cannot train population {spec.population!r}: {problem}")
        for inc in spec.incoming:
            if inc.analog:
                raise NetworkError(f"EventProp takes spike inputs only; projection {inc.name!r} comes from the "
                                   f"analog source {inc.pre!r} (its gradient is not EventProp's)")
        super().__init__(spec)
        m = spec.model
        self.spiking = isinstance(m, LIF)
        self.voltage_loss = L.loss if isinstance(L.loss, VoltageLoss) else None
        self.loss = L.loss if isinstance(L.loss, TTFSLoss) else None
        self.jump = reset_jump(m.v_th, m.v_reset, m.reset) if self.spiking else 0.0
        self.v_th = float(m.v_th) if self.spiking else 0.0
        self.tau_syn_ms = float(L.tau_syn_ms)
        self.guard = float(L.guard)
        self.interpolate = bool(L.interpolate)
        self.silent_ms = float(L.silent_ms)
        reg = getattr(L, "regulariser", None)
        self.regulariser = reg if reg is not None and reg.active and self.spiking and L.loss is None else None
        if not self.silent_ms >= 0:
            raise SpinnrayError(f"core {self.id}: silent_ms = {self.silent_ms!r}; expected >= 0")
        self.error_keys = [inc.error_keys for inc in spec.incoming]
        n = spec.n
        self.lam_v = np.zeros((spec.batch, n), self.dtype)
        self.lam_i = np.zeros((spec.batch, n), self.dtype)
        self.err_in = np.zeros((spec.batch, n), self.dtype)
        R = len(self.ports)                      # stepping copies: every count below is kept per copy
        self.guarded = np.zeros(R, np.int64)     # this reverse pass's guarded spikes
        self.guarded_total = np.zeros(R, np.int64)
        self._received = self._no_errors()
        self._received_peak = 0
        self._pending: dict[int, list] = {}      # lockstep: spike step -> chunks of (copy, sample, neuron, value)
        self._partial: dict[tuple, tuple] = {}   # (projection, spike step) -> (partial error sums, bytes per copy)
        self._buffer_bytes = np.zeros(R, np.int64)
        self._buffer_peak = np.zeros(R, np.int64)
        self._err_dirty = False
        self._err_ports = np.zeros(R, bool)      # the copies whose err_in holds errors
        self._port_zero = np.ones(R, bool)       # the copies whose adjoint is still exactly zero
        self._clear_records()

    def _clear_records(self) -> None:
        self._own = []                                   # chunks of (t, b, i, I - V_pre)
        self._pre = {name: [] for name in self.hist}     # chunks of (t, b, pre)
        self.own_events = None
        self.pre_events = {}
        self.first_step = self.v_before = self.v_at = None
        self.v_max = self.v_max_step = self.v_sum = None
        self.labels = None
        self.loss_grad = None
        self.silent_grad = None
        self.v_grad = None
        self.reg_slope = None
        self._reg_jump = None

    def memory(self) -> dict[str, int]:
        """The static arrays of :class:`EventPropCoreSpec` and what the current run holds: spike
        records (and the output's per-neuron loss records), layered, the error events of the
        whole reverse pass (at their peak), and lockstep, the error buffers at their peak (only
        when errors arrive ahead of the next step or sums span several delays)."""
        mem = super().memory()
        if self.layered:
            mem["error_events"] = max(sum(a.nbytes for a in self._received), self._received_peak)
        elif self._buffer_peak.any():
            mem["error_buffers"] = int(self._buffer_peak.sum())
        records = 0
        if self.own_events is not None:
            records += sum(a.nbytes for a in self.own_events)
            records += sum(a.nbytes for ev in self.pre_events.values() for a in ev)
        for a in (self.first_step, self.v_before, self.v_at, self.v_max, self.v_max_step, self.v_sum):
            if a is not None:
                records += a.nbytes
        mem["spike_records"] = records
        if self.regulariser is not None:
            mem["regulariser"] = self.spec.batch * self.spec.n * self.dtype.itemsize
        return mem

    def port_memory(self, r: int) -> dict[str, int]:
        """Copy ``r``'s memory as a PE of its own: what :meth:`memory` counts, of its rows only."""
        if len(self.ports) == 1:
            return self.memory()
        mem = super().port_memory(r)
        if self._buffer_peak[r]:
            mem["error_buffers"] = int(self._buffer_peak[r])
        n = self.ports[r].n
        records = 0
        if self.own_events is not None:
            for ev in (self.own_events, *self.pre_events.values()):
                records += self._events_in(ev[1], r) * sum(a.itemsize for a in ev)
        for a in (self.first_step, self.v_before, self.v_at, self.v_max, self.v_max_step, self.v_sum):
            if a is not None:
                records += a.itemsize * int(np.prod(a.shape[1:])) * n
        mem["spike_records"] = records
        return mem

    def _events_in(self, rows: np.ndarray, r: int) -> int:
        """How many of the events at ``rows`` (rows of the run's batch) are copy ``r``'s."""
        return int(np.count_nonzero(self.row_port[rows] == r)) if len(rows) else 0

    def _bytes_per_port(self, rows: np.ndarray, per_event: int) -> np.ndarray:
        """Bytes per copy of events at ``rows`` of ``per_event`` bytes each."""
        return np.bincount(self.row_port[rows], minlength=len(self.ports)) * per_event

    # ---------------------------------------------------------------- forward
    def reset(self, steps, batch=None, inputs=None, record=("spikes",), layered=False) -> None:
        """``inputs`` of an output core are the labels ``(batch,)`` of the run (or None).
        With weight stores: the run's effective weights are read (PCM: with read noise)
        at the device clock, which then advances by ``spec.batch x steps x dt``."""
        if steps > MAX_STEPS:
            raise SpinnrayError(f"core {self.id}: a run of {steps} steps; EventProp's spike records hold steps as "
                                f"int16, at most {MAX_STEPS}")
        super().reset(steps, batch, None, record, layered)
        self._clear_records()
        self.steps = steps
        self._read_stores(self.ports[0].copy.batch, steps)      # the mapped batch of a copy (module docstring)
        if self.loss is None and self.voltage_loss is None:
            return
        shape = (self.batch, self.spec.n)
        if self.loss is not None:
            self.first_step = np.full(shape, -1, np.int32)
            self.v_before = np.zeros(shape, self.dtype)
            self.v_at = np.zeros(shape, self.dtype)
        if self.silent_ms > 0 or self.voltage_loss is not None:
            self.v_max = np.full(shape, -np.inf, self.dtype)
            self.v_max_step = np.full(shape, -1, np.int32)
        if self.voltage_loss is not None:
            self.v_sum = np.zeros(shape, self.dtype)
        if inputs is not None:
            labels = np.asarray(inputs)
            if labels.shape != (self.batch,) or not np.issubdtype(labels.dtype, np.integer) \
                    or (labels.size and (labels.min() < 0 or labels.max() >= self.spec.n)):
                raise SpinnrayError(f"core {self.id}: labels of shape {labels.shape}; expected ({self.batch},) "
                                    f"ints in [0, {self.spec.n})")
            self.labels = labels.astype(np.int64)

    def _after_step(self, t, s, before, fired) -> None:
        if s is None:                                   # the LI output: its voltage is the loss's input
            if self.v_sum is not None:
                v = self.state.v
                self.v_sum += v
                higher = v > self.v_max
                self.v_max[higher] = v[higher]
                self.v_max_step[higher] = t
            return
        if self.v_max is not None:
            higher = self.state.v_pre > self.v_max
            self.v_max[higher] = self.state.v_pre[higher]
            self.v_max_step[higher] = t
        b, i = fired
        if len(b):
            d = self.state.i[b, i] - self.state.v_pre[b, i]
            self._own.append((np.full(len(b), t, np.int16), b.astype(np.int16), i.astype(np.int16), d))
            if self.loss is not None:
                new = s & (self.first_step < 0)
                self.first_step[new] = t
                self.v_before[new] = before.v[new]
                self.v_at[new] = self.state.v_pre[new]

    def _on_delivered(self, pre, steps, b, idx) -> None:
        self._pre[pre].append((steps.astype(np.int16), b.astype(np.int16), idx.astype(np.int16)))

    def finish(self) -> None:
        """Sort the records by step; an output core computes loss and predictions."""
        def stack(chunks, dtypes):
            """Concatenate (t, ...) chunks and sort them by step t (stable)."""
            if not chunks:
                return tuple(np.zeros(0, dt) for dt in dtypes)
            cols = [np.concatenate(c) for c in zip(*chunks)]
            order = np.argsort(cols[0], kind="stable")
            return tuple(c[order].astype(dt, copy=False) for c, dt in zip(cols, dtypes))

        self.own_events = stack(self._own, (np.int16, np.int16, np.int16, self.dtype))
        self.pre_events = {name: stack(chunks, (np.int16,) * 3) for name, chunks in self._pre.items()}
        self._own_at = self._index(self.own_events[0])
        self._pre_at = {name: self._index(ev[0]) for name, ev in self.pre_events.items()}
        if self.spiking:
            fired = np.zeros((self.batch, self.spec.n), bool)
            fired[self.own_events[1].astype(np.int64), self.own_events[2].astype(np.int64)] = True
            self.recorded["silent"] = (~fired).sum(axis=1)      # (batch,) neurons of this core that never fired
            if self.regulariser is not None:
                counts = np.zeros((self.batch, self.spec.n), np.int64)
                np.add.at(counts, (self.own_events[1].astype(np.int64), self.own_events[2].astype(np.int64)), 1)
                self.recorded["reg_loss"], self.reg_slope = self.regulariser.loss_and_slope(counts)
        self._own, self._pre = [], {name: [] for name in self.hist}
        one = len(self.ports) == 1
        self.check_budget(why=lambda r, used: (
            f"core {self.ports[r].copy.core_id} ({self.spec.population}): spike records of {self.steps} steps x "
            f"{self.batch if one else self.ports[r].n} samples make {used} bytes; the budget is "
            f"machine.sram_per_pe_bytes = {self.spec.budget_bytes}: use a smaller learning.batch_size, more "
            "parallel.cores_per_population, or more parallel.replicas (each takes a share of the batch)"))
        if self.voltage_loss is not None:
            logits = voltage_logits(self.voltage_loss, self.v_sum, self.v_max, self.steps)
            self.recorded["logits"] = logits
            self.recorded["pred"] = predict_voltage(logits)
            if self.labels is not None:
                value, self.v_grad = voltage_loss(self.voltage_loss, logits, self.labels, self.steps)
                self.recorded["loss"] = value
        if self.loss is not None:
            fired = self.first_step >= 0
            t_ms = spike_times(self.first_step, self.v_before.astype(np.float64), self.v_at.astype(np.float64),
                               self.steps, self.spec.dt_ms, self.interpolate, self.v_th)
            self.recorded["t_first_ms"] = t_ms
            self.recorded["pred"] = predict(t_ms, fired)
            if self.labels is not None:
                if self.silent_ms > 0:
                    t_loss = silent_times(t_ms, fired, self.v_max, self.steps, self.spec.dt_ms, self.silent_ms,
                                          self.v_th)
                    value, grad = ttfs_loss(t_loss, np.ones_like(fired), self.labels, self.loss, self.spec.dt_ms)
                    self.loss_grad = np.where(fired, grad, 0.0)
                    self.silent_grad = np.where(fired, 0.0, grad)
                else:
                    value, self.loss_grad = ttfs_loss(t_ms, fired, self.labels, self.loss, self.spec.dt_ms)
                self.recorded["loss"] = value
                self.recorded["label_silent"] = ~fired[np.arange(self.batch), self.labels]

    @staticmethod
    def _by_step(step: np.ndarray, where: np.ndarray, values: np.ndarray) -> dict:
        """{t: (sample, neuron, value)} for the True entries of ``where`` (batch, n) at ``step[where]``."""
        b, k = np.nonzero(where)
        out = {}
        for t in np.unique(step[b, k]).tolist():
            sel = step[b, k] == t
            out[t] = (b[sel], k[sel], values[b[sel], k[sel]])
        return out

    @staticmethod
    def _index(steps: np.ndarray) -> dict[int, tuple[int, int]]:
        """``{t: (lo, hi)}``: where the records of step ``t`` lie in ``steps`` (sorted), for the steps
        that have records only -- as big as the records, not as T (on a chip: a pointer walking
        the sorted records down as the reverse pass does)."""
        if not len(steps):
            return {}
        starts = np.flatnonzero(np.diff(steps)) + 1
        lo = [0] + starts.tolist()
        hi = starts.tolist() + [len(steps)]
        return dict(zip(steps[lo].tolist(), zip(lo, hi)))

    # ---------------------------------------------------------------- reverse
    def begin_backward(self, steps: int, scale: float) -> None:
        if self.own_events is None:
            raise SpinnrayError(f"core {self.id}: backward before a forward run")
        self.lam_v[:] = 0
        self.lam_i[:] = 0
        self.err_in[:] = 0
        self._err_dirty = False                 # err_in holds received errors (zeroed after each reverse step)
        self._err_ports[:] = False
        self._lam_zero = True                   # the adjoint is still exactly zero (nothing arrived yet)
        self._port_zero[:] = True
        self._received = self._no_errors()      # layered: (step, source, sample, neuron, value) of the error events
        self._received_peak = 0
        self._pending, self._partial = {}, {}
        self._buffer_bytes[:] = 0
        self._buffer_peak[:] = 0
        self._begin_update()                    # every copy's gradients from zero
        self.guarded[:] = 0
        self.loss_scale = scale
        # Output core: dL/dt at each first spike, the surrogate's lamV term at each silent
        # neuron's V_max step, an LI output's c dL/dV: grouped by the reverse step that uses them.
        self._err_at, self._inject_at, self._inject_all = {}, {}, None
        c = self.consts
        if self.loss_grad is not None:
            self._err_at = self._by_step(self.first_step - 1, self.first_step >= 0,
                                         (self.loss_grad * scale).astype(self.dtype))
        if self.silent_grad is not None:
            fac = silent_injection_factor(self.silent_ms, self.tau_syn_ms, c["a"], c["b"]) * scale
            self._inject_at = self._by_step(self.v_max_step, self.silent_grad != 0,
                                            (fac * self.silent_grad).astype(self.dtype))
        if self.reg_slope is not None:
            self._reg_jump = (-scale * self.reg_slope).astype(self.dtype)
        if self.v_grad is not None:
            inj = (voltage_injection_factor(self.tau_syn_ms, c["a"], c["b"]) * scale * self.v_grad).astype(self.dtype)
            if self.voltage_loss.kind == "max_voltage":
                self._inject_at = self._by_step(self.v_max_step, np.ones(inj.shape, bool), inj)
            else:
                self._inject_all = inj

    def backward_block(self, i: int, k: int = 1) -> list[bytes]:
        """Reverse steps ``i+k-1 .. i`` (module docstring; ``k`` <= the smallest delay); the error
        frames to send: one per group of incoming projections with the same smallest delay, its
        events' spike steps within ``k`` of each other (offsets from the frame's step)."""
        groups: dict[int, list] = {}
        for j in reversed(range(i, i + k)):
            for dmin, keys, bidx, payload, s, present in self._reverse_step(j):
                g = groups.setdefault(dmin, ([], [], [], [], []))
                g[0].append(keys)
                g[1].append(bidx)
                g[2].append(payload)
                g[3].append(s)
                g[4].append(present)
        if len(self.ports) > 1:
            frames = self._copies_error_frames(groups)
        else:
            frames = []
            for dmin in sorted(groups):
                keys, bidx, payload, steps, _ = groups[dmin]
                first = min(steps)
                frames += self._error_frames(first, keys, bidx, payload,
                                             [np.full(len(x[1]), s - first, np.uint16) for x, s in zip(keys, steps)])
        if self._buffer_peak.any():
            self._check_buffers()
        return frames

    def _copies_error_frames(self, groups: dict) -> dict[int, list[bytes]]:
        """Stepping copies: each copy's error frames of the round, as it would send them alone: per
        group of projections one frame, stamped with the first spike step among the copy's own
        records (``present``), its events in the same order."""
        out: dict[int, list[bytes]] = {p.copy.core_id: [] for p in self.ports}
        for dmin in sorted(groups):
            keys, bidx, payload, steps, present = groups[dmin]
            for r, port in enumerate(self.ports):
                mine = [c for c, pr in enumerate(present) if pr[r]]
                if not mine:
                    continue
                first = min(steps[c] for c in mine)
                js, pres, bs, vals, offs = [], [], [], [], []
                for c in mine:
                    sel = self.row_port[bidx[c]] == r
                    j, pre = keys[c]
                    js.append(np.full(int(sel.sum()), j))
                    pres.append(pre[sel])
                    bs.append(bidx[c][sel])
                    vals.append(payload[c][sel])
                    offs.append(np.full(int(sel.sum()), steps[c] - first, np.uint16))
                pre = np.concatenate(pres)
                if not len(pre):
                    continue
                b = np.concatenate(bs).astype(np.int64)
                out[port.copy.core_id] += self._error_frame(
                    r, first, self._error_keys_of(port.copy.error_keys, np.concatenate(js), pre),
                    np.concatenate(offs), b - port.lo, np.concatenate(vals).astype(np.float32), False)
        return out

    def backward_layer(self, steps: int) -> list[bytes]:
        """The layered schedule's reverse pass: every step ``steps-1 .. 0`` in turn,
        the error events that arrived about spikes at ``i+1`` (kept by :meth:`deliver_errors`,
        in arrival order) added before step ``i`` as the lockstep rounds would have added them.
        One frame; each event's offset is the step of the spike it is about.  BudgetError
        when the error events received do not fit the core's SRAM."""
        self._received_peak = sum(a.nbytes for a in self._received)
        self.check_budget(why=lambda r, used: (
            f"core {self.ports[r].copy.core_id} ({self.spec.population}): the error events of a layered reverse "
            f"pass of {steps} steps make {used} bytes; the budget is {self.spec.budget_bytes} "
            f"(use parallel.schedule=lockstep, fewer samples per core or more cores)"))
        t, src, b, local, value = self._received
        if len(t):
            # by step, then source core (the order the router delivers a round's frames in), then as sent
            order = np.lexsort((src, t))
            t, b, local, value = t[order], b[order], local[order], value[order]
        self._received = self._no_errors()
        at = self._index(t)
        keys, bidx, payload, offsets = [], [], [], []
        for i in reversed(range(steps)):
            lo, hi = at.get(i + 1, (0, 0))
            if hi > lo:
                np.add.at(self.err_in, (b[lo:hi], local[lo:hi]), value[lo:hi])
                self._err_dirty = True
            for _, k, bi, p, s, _ in self._reverse_step(i):
                keys.append(k)
                bidx.append(bi)
                payload.append(p)
                offsets.append(np.full(len(k[1]), s, np.uint16))
        if self._buffer_peak.any():
            self._check_buffers()
        return self._error_frames(0, keys, bidx, payload, offsets)

    def _no_errors(self) -> tuple:
        """No received error events: (step, source core, sample, neuron, value)."""
        return tuple(np.zeros(0, dt) for dt in (np.int32, np.int32, np.int32, np.int32, self.dtype))

    def _reverse_step(self, i: int) -> list[tuple]:
        """Reverse step ``i`` on this core: the error events it sends, per incoming projection
        and delay ``(smallest delay of the projection, keys, batch indices, payloads, spike
        step, the copies that computed sums for them)``; the adjoint and gradient updated."""
        B = self.batch
        one = len(self.ports) == 1
        self._pull(i + 1)
        if self._lam_zero:
            # Until the first error reaches this core the adjoint stays exactly 0 (0 decays to 0,
            # a spike's jump is err / denom = 0; a regulariser's jump ends it): nothing to send, a zero
            # gradient; only the guard still counts this core's spikes at i+1.  Event-driven, and bit for bit the
            # arithmetic below would give.  Stepping copies, each copy wakes on its own rows' events.
            lo, hi = self._own_at.get(i + 1, (0, 0))
            if one:
                asleep = not self._err_dirty and i not in self._err_at and i not in self._inject_at \
                    and self._inject_all is None and (self._reg_jump is None or hi == lo)
            else:
                self._port_zero &= ~self._woken(i, lo, hi)
                asleep = bool(self._port_zero.all())
            if asleep:
                if hi > lo:
                    self._count_guarded(lo, hi)
                return []
            self._lam_zero = not one and bool(self._port_zero.any())
        awake = None if one else ~self._port_zero
        lam_v, lam_i = self.lam_v[:B], self.lam_i[:B]
        sends = []
        pre_at = []                                        # (projection, sample, pre, delay mask or None)
        diff = None
        for j, (w, inc, ekeys, dmat) in enumerate(zip(self.weights, self.spec.incoming, self.error_keys,
                                                       self.delays)):
            ev, ev_at = self.pre_events[inc.pre], self._pre_at[inc.pre]
            dmin = inc.delay_values[0]
            several = len(inc.delay_values) > 1
            for d in reversed(inc.delay_values):           # the spikes whose delay d brings them to i+1
                s = i + 1 - d
                if s < 0:
                    continue
                lo, hi = ev_at.get(s, (0, 0))
                if hi == lo:
                    continue
                b, pre = ev[1][lo:hi], ev[2][lo:hi]
                sel = None if dmat is None else dmat[pre] == d
                pre_at.append((j, b, pre, sel))
                if ekeys is None:
                    continue
                if diff is None:
                    diff = lam_v - lam_i                   # at i+1
                e = np.einsum("ej,ej->e", w[pre] if sel is None else w[pre] * sel, diff[b])
                if several:                                # a sum over delays: complete at the smallest
                    e = self._partial_sum(j, s, e, b, awake, last=d == dmin)
                    if e is None:
                        continue
                present = None
                if awake is not None:                      # the copies these records are of (a copy still
                    present = np.zeros(len(self.ports), bool)   # asleep has only zeros here, and its chunks come
                    present[self.row_port[b]] = True           # at later spike steps than its first awake one)
                nz = e != 0                                # zero sums are not sent
                sends.append((dmin, (j, pre[nz]), b[nz], e[nz], s, present))  # errors to the pre neurons' keys
        # Adjoint step with this core's spikes at i+1 and their errors.
        c = self.consts
        lo, hi = self._own_at.get(i + 1, (0, 0))
        if hi == lo and i not in self._err_at:             # no spike at i+1: no jump, errors unread
            new_v, new_i, low = adjoint_step(lam_v, lam_i, None, None, None, c["a"], c["b"], self.guard)
        else:
            _, b, idx, d = (a[lo:hi] for a in self.own_events)
            spiked = np.zeros((B, self.spec.n), bool)
            denom = np.ones((B, self.spec.n), self.dtype)
            spiked[b, idx] = True
            denom[b, idx] = d
            err = self.err_in[:B]
            if i in self._err_at:                      # output spikes at i+1: dL/dt
                eb, ek, ev = self._err_at[i]
                err = err.copy()
                err[eb, ek] += ev
            new_v, new_i, low = adjoint_step(lam_v, lam_i, spiked, denom, err, c["a"], c["b"], self.guard,
                                             self.jump)
            if self._reg_jump is not None:         # the count regulariser's slope, after the spike's jump
                new_v[b, idx] += self._reg_jump[b, idx]
        if i in self._inject_at:                   # the surrogate's term at the silent neurons' V_max step
            jb, jk, jv = self._inject_at[i]
            new_v[jb, jk] += jv
        if self._inject_all is not None:           # an LI output's mean or sum of the voltage: every step
            new_v += self._inject_all[:B]
        if one:
            self.guarded[0] += low
            self.guarded_total[0] += low
        elif hi > lo:
            self._count_guarded(lo, hi)
        if B == self.spec.batch:                   # fresh arrays: keep them instead of copying
            self.lam_v, self.lam_i = new_v, new_i
        else:
            self.lam_v[:B], self.lam_i[:B] = new_v, new_i
        if self._err_dirty:
            self.err_in[:B] = 0
            self._err_dirty = False
            self._err_ports[:] = False
        # Gradient at the pre spikes that arrived at i+1 (stepping copies: into each copy's own sums;
        # a copy still asleep adds zeros, which change nothing).
        for j, b, pre, sel in pre_at:
            g = -self.tau_syn_ms * new_i[b]
            if sel is not None:
                g = g * sel
            if one:
                np.add.at(self.grads[j], pre, g)
                continue
            rows = self.row_port[b]
            for r in np.unique(rows).tolist():
                mine = rows == r
                np.add.at(self.port_grads[r][j], pre[mine], g[mine])
        return sends

    def _woken(self, i: int, lo: int, hi: int) -> np.ndarray:
        """Stepping copies: the copies whose adjoint stops being zero at reverse step ``i`` (errors
        received, a loss term at ``i``, a regulariser's jump at their spikes at ``i+1``)."""
        w = self._err_ports.copy() if self._err_dirty else np.zeros(len(self.ports), bool)
        if self._inject_all is not None:
            w[:] = True
        for at in (self._err_at, self._inject_at):
            if i in at:
                w[self.row_port[at[i][0]]] = True
        if self._reg_jump is not None and hi > lo:
            w[self.row_port[self.own_events[1][lo:hi].astype(np.int64)]] = True
        return w

    def _count_guarded(self, lo: int, hi: int) -> None:
        """Count the spikes at own records ``lo:hi`` (one step's) whose denominator the guard raises, per copy."""
        low = self.own_events[3][lo:hi] < self.guard
        if len(self.ports) == 1:
            n = np.array([int(low.sum())])
        else:
            n = np.bincount(self.row_port[self.own_events[1][lo:hi][low].astype(np.int64)],
                            minlength=len(self.ports))
        self.guarded += n
        self.guarded_total += n

    # ------------------------------------------------------------ error buffers
    def _partial_sum(self, j: int, s: int, e: np.ndarray, b: np.ndarray, awake: np.ndarray | None,
                     last: bool) -> np.ndarray | None:
        """Per-synapse delays: the partial error sums of projection ``j``'s spikes at ``s`` (the
        same records every time, at rows ``b``) add up over its delays, largest first; the smallest
        delay (``last``) completes and returns them, the others keep them (None).  Counted per copy:
        a copy still asleep (``awake``) would hold none."""
        held = self._partial.pop((j, s), None)
        if held is not None:
            e = held[0] + e
            self._buffer_bytes -= held[1]
        if last:
            return e
        nbytes = np.array([e.nbytes]) if awake is None else self._bytes_per_port(b, e.itemsize) * awake
        self._partial[(j, s)] = (e, nbytes)
        self._buffer_bytes += nbytes
        np.maximum(self._buffer_peak, self._buffer_bytes, out=self._buffer_peak)
        return None

    def _pull(self, s: int) -> None:
        """The buffered error events about this core's spikes at step ``s``, into ``err_in``
        (in the order they arrived)."""
        chunks = self._pending.pop(s, None)
        if chunks is None:
            return
        for r, b, local, value in chunks:
            np.add.at(self.err_in, (b, local), value)
            self._buffer_bytes[r] -= b.nbytes + local.nbytes + value.nbytes
            self._err_ports[r] = True
        self._err_dirty = True

    def _check_buffers(self) -> None:
        self.check_budget(why=lambda r, used: (
            f"core {self.ports[r].copy.core_id} ({self.spec.population}): the error buffers of the reverse pass "
            f"(errors waiting for their step, sums over several delays) make {used} bytes; the "
            f"budget is {self.spec.budget_bytes} (fewer samples per core or more cores)"))

    def deliver_errors(self, frames: list[bytes], i: int, span: int = 1) -> None:
        """Error events about this core's spikes; lockstep, after reverse steps ``i+span-1 .. i``:
        those about step ``i`` (the next step needs them) go into ``err_in``, later ones wait in
        a buffer; layered (frames of the whole run), kept with their steps until
        :meth:`backward_layer`."""
        if self.layered:                               # (never stepping copies: LocalBackend)
            got = list(self._error_events(frames, i, "error events", span=span))
            if got:
                parts = [self._received] + [(steps, np.full(len(b), src), b, local, value)
                                            for b, local, value, steps, src in got]
                self._received = tuple(np.concatenate(c).astype(r.dtype, copy=False)
                                       for c, r in zip(zip(*parts), self._received))
            return
        self._pull(i)                                  # what arrived earlier comes first
        for r, port in enumerate(self.ports):          # copy by copy: each copy's errors wake it
            got = frames if len(self.ports) == 1 else frames.get(port.copy.core_id, [])
            for b, local, value, steps, _ in self._copy_error_events(r, got, i, "error events", None, span, i):
                b = b + port.lo
                now = steps == i
                if not now.all():
                    later = ~now
                    for s in np.unique(steps[later]).tolist():
                        sel = steps == s
                        chunk = (b[sel].astype(np.int32), local[sel].astype(np.int32), value[sel])
                        self._pending.setdefault(s, []).append((r, *chunk))
                        self._buffer_bytes[r] += sum(a.nbytes for a in chunk)
                    self._buffer_peak[r] = max(self._buffer_peak[r], self._buffer_bytes[r])
                    b, local, value = b[now], local[now], value[now]
                np.add.at(self.err_in, (b, local), value)
                self._err_dirty = True
                self._err_ports[r] = True

    def report(self) -> dict:
        rep = super().report()
        rep["guarded_spikes"] = int(self.guarded_total.sum())
        return rep

    def port_reports(self) -> list[dict]:
        reps = super().port_reports()
        if len(self.ports) > 1:
            for rep, n in zip(reps, self.guarded_total.tolist()):
                rep["guarded_spikes"] = n
        return reps

    # ------------------------------------------------------------ parameters
    def bump(self, amount: float, columns=None) -> None:
        """Add ``amount`` to incoming weights (the silent-neuron remedy of
        Wunderlich & Pehle's training code; masked synapses stay absent).

        ``columns``: only these of the core's neurons (local indices; the
        trainer passes the labels that stayed silent in the whole mini-batch,
        the same on every replica); None = all.  With weight stores the bump
        is an update given to the store (it may wait in the accumulator)."""
        if self._later_call("bump", (amount, columns)):
            return
        cols = slice(None) if columns is None else np.asarray(columns, np.int64)
        if columns is not None and len(cols) == 0:
            return
        for j, (w, m) in enumerate(zip(self.weights, self.masks)):
            if self.stores is not None:
                delta = np.zeros_like(w)
                delta[:, cols] = amount
                self._update_weights(j, delta)
                continue
            w[:, cols] += amount if m is None else amount * m[:, cols]

    def learning_state(self) -> dict:
        """The learning state of :class:`~spinnray.rules.learning.LearningCore` and the guard count."""
        return {**super().learning_state(), "guarded_total": int(self.guarded_total[self.port])}

    def load_learning_state(self, state: dict) -> None:
        super().load_learning_state(state)      # weights or stores, Adam, counters
        self.guarded_total[self.port] = int(state.get("guarded_total", self.guarded_total[self.port]))
