"""A core that learns with EventProp (see :mod:`spinnray.rules.eventprop.numerics` for the equations).

Forward, the core records what its reverse pass will need, sparsely, as
events: its own spikes with ``I - V_pre`` at each, and the pre-synaptic spikes
it received.  An output core (``learning["loss"]`` set) also records its
neurons' first spikes and, at the end of the forward run, computes the loss
from them and the labels it was given.

Reverse, round ``i`` (from T-1 down to 0) on every learning core:

1. *send*: for each pre-synaptic spike at step i, the partial sum
   ``W[pre, local] . (lamV[i+1] - lamI[i+1])`` over this core's neurons, as an
   error event keyed by the pre neuron's error key (zero sums are not sent);
2. *adjoint*: ``lamV[i], lamI[i]`` from the values at i+1, the core's spikes at
   i+1 and the errors that arrived for them;
3. *gradient*: ``dW[pre] -= tau_syn lamI[i][sample]`` for each pre spike at i;
4. *receive*: error events about this core's neurons at step i, summed in
   arrival order (ascending source core), for use in round i-1.

Until the first error reaches a core its adjoint is exactly zero, and those
rounds send nothing and add nothing (they only count guarded spikes), so they
are skipped.  With the layered schedule (:mod:`spinnray.machine.core`) a core runs
all its reverse rounds in one go (:meth:`EventPropCore.backward_layer`), the
error events of every step having arrived before, each carrying its step.

Weights never leave the core; gradients are read out, reduced across
replicas by the trainer, and applied by each core's own Adam.

Weight storage (``spec.learning.weight_store``, the
:class:`~spinnray.rules.learning.WeightStoreSpec` from ``machine.weight_bits``,
``rounding``, ``accumulate``, ``transfer``, ``weight_max``, ``weight_range``,
``weight_range_scope``, ``synapse``, ``pcm``, ``weight_seed``): absent (or
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

from spinnray.errors import BudgetError, NetworkError, SpinnrayError
from spinnray.machine.core import CoreShape, CoreSpec, forward_memory
from spinnray.model.neurons import LIF
from spinnray.rules.eventprop.numerics import (TTFSLoss, adjoint_step, predict, silent_injection_factor, silent_times,
                                               spike_times, ttfs_loss)
from spinnray.rules.learning import LearningCore, WeightStoreSpec, learning_memory
from spinnray.rules.optim import AdamSpec

__all__ = ["EventPropCoreSpec", "EventPropCore"]


@dataclass(frozen=True)
class EventPropCoreSpec:
    """What an EventProp core is built with (typed ``learning`` of its :class:`CoreSpec`).

    ``loss`` is set on the output core (it computes the loss from its first spikes);
    ``interpolate``: spike times inside the step; ``silent_ms``: the silent-neuron surrogate
    of :func:`~spinnray.rules.eventprop.numerics.silent_times` (0 = off);
    ``spikes_per_neuron``: the mapper's estimate of the spike records (checked after every
    forward run against what the core really holds)."""

    adam: AdamSpec
    tau_syn_ms: float
    guard: float
    interpolate: bool = True
    loss: TTFSLoss | None = None
    silent_ms: float = 0.0
    weight_store: WeightStoreSpec | None = None
    spikes_per_neuron: float = 2.0

    @property
    def core_class(self):
        return EventPropCore

    def static_memory(self, shape: CoreShape) -> dict[str, int]:
        """Stores, gradients, Adam, masks, error keys and the adjoint (lamV, lamI, err_in)."""
        mem = learning_memory(shape, self.weight_store)
        mem.setdefault("masks", 0)
        mem.setdefault("error_keys", 0)
        mem["adjoint"] = 3 * shape.batch * shape.n * shape.itemsize
        return mem

    def memory(self, shape: CoreShape) -> dict[str, int]:
        """The mapper's estimate: forward arrays, :meth:`static_memory`, and spike records at
        ``spikes_per_neuron`` spikes per neuron and sample (own spikes 10 bytes each: step,
        sample, neuron as int16 and I - V_pre; pre-synaptic spikes 6 bytes)."""
        pre_neurons = sum(size for _, size in shape.history)
        records = int(shape.batch * self.spikes_per_neuron * (10 * shape.n + 6 * pre_neurons))
        return {**forward_memory(shape), **self.static_memory(shape), "spike_records": records}


class EventPropCore(LearningCore):
    """A LIF slice trained with EventProp (:class:`EventPropCoreSpec`).

    With ``silent_ms > 0`` the output core also tracks each neuron's highest
    pre-reset voltage and its step, and in the reverse round of that step adds
    ``c * dL/dt~`` (:func:`spinnray.rules.eventprop.numerics.silent_injection_factor`) to
    ``lamV`` of every neuron that stayed silent.
    """

    def __init__(self, spec: CoreSpec):
        m = spec.model
        if not (isinstance(m, LIF) and m.v_th == 1.0 and m.v_reset == 0.0 and m.reset == "zero"):
            raise NetworkError(f"EventProp needs LIF neurons with v_th 1, v_reset 0 and reset 'zero'; "
                               f"population {spec.population!r} has {m!r}")
        for inc in spec.incoming:
            if inc.delay_values != (1,):
                raise NetworkError(f"EventProp needs every delay to be 1 step; projection {inc.name!r} has "
                                   f"{list(inc.delay_values)}")
        super().__init__(spec)
        L = spec.learning
        self.tau_syn_ms = float(L.tau_syn_ms)
        self.guard = float(L.guard)
        self.loss = L.loss
        self.interpolate = bool(L.interpolate)
        self.silent_ms = float(L.silent_ms)
        if not self.silent_ms >= 0:
            raise SpinnrayError(f"core {self.id}: silent_ms = {self.silent_ms!r}; expected >= 0")
        self.error_keys = [inc.error_keys for inc in spec.incoming]
        n = spec.n
        self.lam_v = np.zeros((spec.batch, n), self.dtype)
        self.lam_i = np.zeros((spec.batch, n), self.dtype)
        self.err_in = np.zeros((spec.batch, n), self.dtype)
        self.guarded = 0
        self.guarded_total = 0
        self._received = self._no_errors()
        self._received_peak = 0
        self._err_dirty = False
        self._clear_records()

    def _clear_records(self) -> None:
        self._own = []                                   # chunks of (t, b, i, I - V_pre)
        self._pre = {name: [] for name in self.hist}     # chunks of (t, b, pre)
        self.own_events = None
        self.pre_events = {}
        self.first_step = self.v_before = self.v_at = None
        self.v_max = self.v_max_step = None
        self.labels = None
        self.loss_grad = None
        self.silent_grad = None

    def memory(self) -> dict[str, int]:
        """The static arrays of :class:`EventPropCoreSpec` and what the current run holds: spike
        records and, layered, the error events of the whole reverse pass (at their peak)."""
        mem = super().memory()
        if self.layered:
            mem["error_events"] = max(sum(a.nbytes for a in self._received), self._received_peak)
        records = 0
        if self.own_events is not None:
            records += sum(a.nbytes for a in self.own_events)
            records += sum(a.nbytes for ev in self.pre_events.values() for a in ev)
        if self.first_step is not None:
            records += self.first_step.nbytes + self.v_before.nbytes + self.v_at.nbytes
        if self.v_max is not None:
            records += self.v_max.nbytes + self.v_max_step.nbytes
        mem["spike_records"] = records
        return mem

    # ---------------------------------------------------------------- forward
    def reset(self, steps, batch=None, inputs=None, record=("spikes",), layered=False) -> None:
        """``inputs`` of an output core are the labels ``(batch,)`` of the run (or None).
        With weight stores: the run's effective weights are read (PCM: with read noise)
        at the device clock, which then advances by ``spec.batch x steps x dt``."""
        super().reset(steps, batch, None, record, layered)
        self._clear_records()
        self.steps = steps
        self._read_stores(self.spec.batch, steps)
        if self.loss is not None:
            shape = (self.batch, self.spec.n)
            self.first_step = np.full(shape, -1, np.int32)
            self.v_before = np.zeros(shape, self.dtype)
            self.v_at = np.zeros(shape, self.dtype)
            if self.silent_ms > 0:
                self.v_max = np.full(shape, -np.inf, self.dtype)
                self.v_max_step = np.full(shape, -1, np.int32)
            if inputs is not None:
                labels = np.asarray(inputs)
                if labels.shape != (self.batch,) or not np.issubdtype(labels.dtype, np.integer) \
                        or (labels.size and (labels.min() < 0 or labels.max() >= self.spec.n)):
                    raise SpinnrayError(f"core {self.id}: labels of shape {labels.shape}; expected ({self.batch},) "
                                        f"ints in [0, {self.spec.n})")
                self.labels = labels.astype(np.int64)

    def _after_step(self, t, s, before, fired) -> None:
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
        """Index the records by step; an output core computes loss and predictions."""
        def stack(chunks, dtypes):
            """Concatenate (t, ...) chunks and sort them by step t (stable)."""
            if not chunks:
                return tuple(np.zeros(0, dt) for dt in dtypes)
            cols = [np.concatenate(c) for c in zip(*chunks)]
            order = np.argsort(cols[0], kind="stable")
            return tuple(c[order].astype(dt, copy=False) for c, dt in zip(cols, dtypes))

        self.own_events = stack(self._own, (np.int16, np.int16, np.int16, self.dtype))
        self.pre_events = {name: stack(chunks, (np.int16,) * 3) for name, chunks in self._pre.items()}
        # First record of each step t (t = 0 .. steps + 1): the records of step t are [bound[t], bound[t+1]).
        edges = np.arange(self.steps + 2)
        self._own_bounds = np.searchsorted(self.own_events[0], edges, "left").tolist()
        self._pre_bounds = {name: np.searchsorted(ev[0], edges, "left").tolist()
                            for name, ev in self.pre_events.items()}
        fired = np.zeros((self.batch, self.spec.n), bool)
        fired[self.own_events[1].astype(np.int64), self.own_events[2].astype(np.int64)] = True
        self.recorded["silent"] = (~fired).sum(axis=1)          # (batch,) neurons of this core that never fired
        self._own, self._pre = [], {name: [] for name in self.hist}
        used = sum(self.memory().values())
        if used > self.spec.budget_bytes:
            raise BudgetError(f"core {self.id} ({self.spec.population}): spike records of {self.steps} steps x "
                              f"{self.batch} samples make {used} bytes; the budget is machine.sram_per_pe_bytes = "
                              f"{self.spec.budget_bytes}: use a smaller learning.batch_size, more "
                              "parallel.cores_per_population, or more parallel.replicas (each takes a share of the batch)")
        if self.loss is not None:
            fired = self.first_step >= 0
            t_ms = spike_times(self.first_step, self.v_before.astype(np.float64), self.v_at.astype(np.float64),
                               self.steps, self.spec.dt_ms, self.interpolate)
            self.recorded["t_first_ms"] = t_ms
            self.recorded["pred"] = predict(t_ms, fired)
            if self.labels is not None:
                if self.silent_ms > 0:
                    t_loss = silent_times(t_ms, fired, self.v_max, self.steps, self.spec.dt_ms, self.silent_ms)
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

    # ---------------------------------------------------------------- reverse
    def begin_backward(self, steps: int, scale: float) -> None:
        if self.own_events is None:
            raise SpinnrayError(f"core {self.id}: backward before a forward run")
        self.lam_v[:] = 0
        self.lam_i[:] = 0
        self.err_in[:] = 0
        self._err_dirty = False                 # err_in holds received errors (zeroed after each reverse step)
        self._lam_zero = True                   # the adjoint is still exactly zero (nothing arrived yet)
        self._received = self._no_errors()      # layered: (step, source, sample, neuron, value) of the error events
        self._received_peak = 0
        for g in self.grads:
            g[:] = 0
        self.guarded = 0
        self.loss_scale = scale
        # Output core: dL/dt at each first spike, and the surrogate's lamV term at each silent
        # neuron's V_max step, grouped by the reverse round that uses them.
        self._err_at, self._inject_at = {}, {}
        if self.loss_grad is not None:
            self._err_at = self._by_step(self.first_step - 1, self.first_step >= 0,
                                         (self.loss_grad * scale).astype(self.dtype))
        if self.silent_grad is not None:
            c = self.consts
            fac = silent_injection_factor(self.silent_ms, self.tau_syn_ms, c["a"], c["b"]) * scale
            self._inject_at = self._by_step(self.v_max_step, self.silent_grad != 0,
                                            (fac * self.silent_grad).astype(self.dtype))

    def backward_block(self, i: int) -> list[bytes]:
        """Reverse round ``i`` (module docstring); the error frames to send."""
        return self._error_frames(i, *self._reverse_step(i))

    def backward_layer(self, steps: int) -> list[bytes]:
        """The layered schedule's reverse pass: every round ``steps-1 .. 0`` in turn,
        the error events that arrived for step ``i+1`` (kept by :meth:`deliver_errors`,
        in arrival order) added before round ``i`` as the rounds would have added them.
        One frame; each event's offset is its reverse step.  BudgetError when the
        error events received do not fit the core's SRAM."""
        self._received_peak = sum(a.nbytes for a in self._received)
        used = sum(self.memory().values())
        if used > self.spec.budget_bytes:
            raise BudgetError(f"core {self.id} ({self.spec.population}): the error events of a layered reverse "
                              f"pass of {steps} steps make {used} bytes; the budget is {self.spec.budget_bytes} "
                              f"(use parallel.schedule=lockstep, fewer samples per core or more cores)")
        t, src, b, local, value = self._received
        if len(t):
            # by step, then source core (the order the router delivers a round's frames in), then as sent
            order = np.lexsort((src, t))
            t, b, local, value = t[order], b[order], local[order], value[order]
        bounds = np.searchsorted(t, np.arange(steps + 2), "left").tolist()
        self._received = self._no_errors()
        keys, bidx, payload, offsets = [], [], [], []
        for i in reversed(range(steps)):
            lo, hi = bounds[i + 1], bounds[i + 2]
            if hi > lo:
                np.add.at(self.err_in, (b[lo:hi], local[lo:hi]), value[lo:hi])
                self._err_dirty = True
            k, bi, p = self._reverse_step(i)
            keys += k
            bidx += bi
            payload += p
            offsets += [np.full(len(x), i, np.uint16) for x in k]
        return self._error_frames(0, keys, bidx, payload, offsets)

    def _no_errors(self) -> tuple:
        """No received error events: (step, source core, sample, neuron, value)."""
        return tuple(np.zeros(0, dt) for dt in (np.int32, np.int32, np.int32, np.int32, self.dtype))

    def _reverse_step(self, i: int) -> tuple[list, list, list]:
        """Reverse step ``i`` on this core: the error events (keys, batch indices,
        payloads, per incoming projection) it sends; the adjoint and gradient updated."""
        B = self.batch
        if self._lam_zero:
            # Until the first error reaches this core the adjoint stays exactly 0 (0 decays to 0,
            # a spike's jump is err / denom = 0): nothing to send, a zero gradient; only the
            # guard still counts this core's spikes at i+1.  Event-driven, and bit for bit the
            # arithmetic below would give.
            if not self._err_dirty and i not in self._err_at and i not in self._inject_at:
                lo, hi = self._own_bounds[i + 1], self._own_bounds[i + 2]
                if hi > lo:
                    low = int((self.own_events[3][lo:hi] < self.guard).sum())
                    self.guarded += low
                    self.guarded_total += low
                return [], [], []
            self._lam_zero = False
        lam_v, lam_i = self.lam_v[:B], self.lam_i[:B]
        keys, payload, batch_idx = [], [], []
        pre_at = []                                        # per projection: (sample, pre) of the pre spikes at i
        diff = None
        for w, inc, ekeys in zip(self.weights, self.spec.incoming, self.error_keys):
            bounds = self._pre_bounds[inc.pre]
            lo, hi = bounds[i], bounds[i + 1]
            if hi == lo:
                pre_at.append(None)
                continue
            _, b, pre = self.pre_events[inc.pre]
            b, pre = b[lo:hi], pre[lo:hi]
            pre_at.append((b, pre))
            if ekeys is None:
                continue
            if diff is None:
                diff = lam_v - lam_i                       # at i+1
            e = np.einsum("ej,ej->e", w[pre], diff[b])
            nz = e != 0                                    # zero sums are not sent
            keys.append(ekeys[pre[nz]])
            payload.append(e[nz])
            batch_idx.append(b[nz])
        # Adjoint step with this core's spikes at i+1 and their errors.
        c = self.consts
        lo, hi = self._own_bounds[i + 1], self._own_bounds[i + 2]
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
            new_v, new_i, low = adjoint_step(lam_v, lam_i, spiked, denom, err, c["a"], c["b"], self.guard)
        if i in self._inject_at:                   # the surrogate's term at the silent neurons' V_max step
            jb, jk, jv = self._inject_at[i]
            new_v[jb, jk] += jv
        self.guarded += low
        self.guarded_total += low
        if B == self.spec.batch:                   # fresh arrays: keep them instead of copying
            self.lam_v, self.lam_i = new_v, new_i
        else:
            self.lam_v[:B], self.lam_i[:B] = new_v, new_i
        if self._err_dirty:
            self.err_in[:B] = 0
            self._err_dirty = False
        # Gradient at the pre spikes of step i.
        for g, at in zip(self.grads, pre_at):
            if at is not None:
                np.add.at(g, at[1], -self.tau_syn_ms * new_i[at[0]])
        return keys, batch_idx, payload

    def deliver_errors(self, frames: list[bytes], i: int, span: int = 1) -> None:
        """Error events about this core's neurons at reverse step ``i``, added to
        ``err_in`` for the next round; layered (``span > 1``: frames of the whole
        run), kept with their steps until :meth:`backward_layer`."""
        got = list(self._error_events(frames, i, "error events", span=span))
        if span == 1:
            for b, local, value, _, _ in got:
                np.add.at(self.err_in, (b, local), value)
                self._err_dirty = True
            return
        if got:
            parts = [self._received] + [(i + off, np.full(len(b), src), b, local, value)
                                        for b, local, value, off, src in got]
            self._received = tuple(np.concatenate(c).astype(r.dtype, copy=False)
                                   for c, r in zip(zip(*parts), self._received))

    def report(self) -> dict:
        rep = super().report()
        rep["guarded_spikes"] = self.guarded_total
        return rep

    # ------------------------------------------------------------ parameters
    def bump(self, amount: float, columns=None) -> None:
        """Add ``amount`` to incoming weights (the silent-neuron remedy of
        Wunderlich & Pehle's training code; masked synapses stay absent).

        ``columns``: only these of the core's neurons (local indices; the
        trainer passes the labels that stayed silent in the whole mini-batch,
        the same on every replica); None = all.  With weight stores the bump
        is an update given to the store (it may wait in the accumulator)."""
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
        return {**super().learning_state(), "guarded_total": self.guarded_total}

    def load_learning_state(self, state: dict) -> None:
        super().load_learning_state(state)      # weights or stores, Adam, counters
        self.guarded_total = int(state.get("guarded_total", self.guarded_total))
