"""One emulated processing element (PE), forward phases only: a plain class, no Ray import.

A :class:`Core` owns a slice of one population: the neurons' state, the incoming weights of
those neurons (stored at the target, as on SpiNNaker), their delays, and a ring of recent
pre-synaptic spikes per source population.  It runs in rounds of K steps (the tick phases of
one round, driven by :mod:`spinnray.machine.schedule`):

1. ``run_block(t0, K)``: for each step, *synapse* (sum the rows of the spikes that arrive now,
   in canonical order: :mod:`spinnray.machine.synapses`), *neuron* (the model's step),
   *record*; then *send*: one spike packet with every event of the K steps.
2. ``deliver(frames, t0, K)``: *receive* the packets the router multicast to this core for the
   same round, into the spike history.

Delays are at least K steps, so a spike emitted in a round is never needed before the next
round begins (NEST's min-delay rule); that makes the results identical for every K <= min delay.

The *layered* schedule (``reset(..., layered=True)``, feed-forward networks only) runs one
round per level of the network instead: in round r the cores of level r step through the whole
run, ``run_block(0, T)``, and send one packet with all their events; every core keeps what it
receives as a sorted list of input events (counted as ``input_events``) instead of a ring, and
reads step t's input from it.  The sums are taken in the same order as in rounds of K steps,
so the results are identical.

Learning cores (:mod:`spinnray.rules`) extend this class; they observe each step through
:meth:`Core._after_step` and each delivery through :meth:`Core._on_delivered`.

Memory: :func:`forward_memory` is the one model of what a forward core holds, used by the
mapping to check the budget before any core exists and by :meth:`Core.memory` for the report
(tests check it against the arrays a core really holds).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from spinnray.errors import BudgetError, PacketError, SpinnrayError
from spinnray.machine import packet
from spinnray.machine.counters import CoreCounters
from spinnray.machine.synapses import ANALOG_BLOCK_ELEMENTS, accumulate_events, analog_input_block
from spinnray.model.neurons import NeuronModel, SpikeSource

__all__ = ["IncomingSpec", "CopySpec", "Port", "CoreSpec", "CoreShape", "Core", "build_core", "forward_memory", "invoke"]

_MAX_REASONS = 20


@dataclass(frozen=True, eq=False)
class IncomingSpec:
    """One projection into this core's slice: rows of all pre neurons."""

    name: str
    pre: str
    pre_size: int
    weights: np.ndarray | None         # (pre_size, n_local); absent synapses hold 0; None in a built core's spec
    delays: int | np.ndarray           # int, or (pre_size, n_local) uint8
    delay_values: tuple[int, ...]      # distinct delays, ascending
    mask: np.ndarray | None = None     # (pre_size, n_local) bool, kept only by learning cores
    error_keys: np.ndarray | None = None  # (pre_size,) uint32 error key of each pre neuron, or None
    analog: bool = False               # pre is an AnalogSource: host-written x[t], no events


@dataclass(frozen=True)
class SynapseShape:
    """What the memory of one incoming projection depends on (no arrays)."""

    pre_size: int
    per_synapse_delays: bool = False
    masked: bool = False
    error_keyed: bool = False
    analog: bool = False


@dataclass(frozen=True)
class CoreShape:
    """What a core's memory depends on, known before the core exists: the mapping builds it from
    the network, a core from its spec (:attr:`CoreSpec.shape`)."""

    model: NeuronModel
    n: int
    batch: int
    dtype: str
    incoming: tuple[SynapseShape, ...]
    history: tuple[tuple[int, int], ...]        # (depth in steps, pre population size) per pre population
    n_sources: int                              # source slices in the key table

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def synapses(self) -> int:
        """Weights held: sum over projections of pre_size x n."""
        return sum(s.pre_size for s in self.incoming) * self.n


def forward_memory(shape: CoreShape, state_batch: int | None = None) -> dict[str, int]:
    """Bytes by category of what a forward core holds (``state_batch``: the samples of the
    current run, whose neuron state is allocated per run; default the mapped batch)."""
    item, n, batch = shape.itemsize, shape.n, shape.batch
    analog = sum(s.pre_size for s in shape.incoming if s.analog)
    return {
        # host-written analog input, double-buffered per step (the host streams it in)
        **({"input_buffer": 2 * batch * analog * item} if analog else {}),
        "weights": shape.synapses * item,
        "delays": sum(s.pre_size * n for s in shape.incoming if s.per_synapse_delays),
        "neuron_state": (batch if state_batch is None else state_batch) * n * shape.model.state_bytes(item),
        "spike_history": sum(depth * batch * size for depth, size in shape.history),
        "key_table": shape.n_sources * 4 * 8,   # prefix, population, lo, size (int64)
    }


@dataclass(frozen=True, eq=False)
class CopySpec:
    """One PE among data-parallel copies of a slice that one core object steps together (the
    ``local`` backend's copies engine): what differs between the copies.  Their weights, model
    and incoming projections are the same at every step; their samples, keys and counters are not."""

    core_id: int
    chip: int
    pe: int
    replica: int
    key_base: int | None
    error_key_base: int | None
    sources: tuple[tuple[int, str, int, int], ...]
    batch: int                                           # the copy's mapped batch
    error_keys: tuple = ()                               # per incoming projection: its pre neurons' error keys

    @classmethod
    def of(cls, spec: "CoreSpec") -> "CopySpec":
        return cls(spec.core_id, spec.chip, spec.pe, spec.replica, spec.key_base, spec.error_key_base,
                   spec.sources, spec.batch, tuple(inc.error_keys for inc in spec.incoming))


class Port:
    """A core object's face as one PE: its copy, counters, notes and rows of the run's batch."""

    __slots__ = ("copy", "counters", "reasons", "lo", "n")

    def __init__(self, copy: CopySpec):
        self.copy = copy
        self.counters = CoreCounters()
        self.reasons: list[str] = []
        self.lo, self.n = 0, copy.batch


@dataclass(frozen=True, eq=False)
class CoreSpec:
    """Everything needed to build one core (picklable: sent to a Ray actor).

    ``learning`` is None for a forward core, or the typed spec of a learning rule's core
    (:mod:`spinnray.rules`), whose ``core_class`` builds it (:func:`build_core`)."""

    core_id: int
    chip: int
    pe: int
    population: str
    model: NeuronModel
    lo: int
    hi: int
    key_base: int | None
    key_bits: int
    dt_ms: float
    dtype: str
    batch: int
    budget_bytes: int
    incoming: tuple[IncomingSpec, ...] = ()
    history: dict = field(default_factory=dict)          # pre population -> (depth, pre_size)
    sources: tuple[tuple[int, str, int, int], ...] = ()  # (key prefix, pre population, lo, hi)
    replica: int = 0
    replicas: int = 1                                    # data-parallel copies of the network
    error_key_base: int | None = None                    # error events about this slice's neurons
    learning: Any = None                                 # a rule's typed core spec, or None
    copies: tuple[CopySpec, ...] = ()                    # () = one PE; else the copies stepped together

    @property
    def n(self) -> int:
        return self.hi - self.lo

    @property
    def shape(self) -> CoreShape:
        return CoreShape(
            self.model, self.n, self.batch, self.dtype,
            tuple(SynapseShape(inc.pre_size, not np.isscalar(inc.delays), inc.mask is not None,
                               inc.error_keys is not None, inc.analog) for inc in self.incoming),
            tuple(self.history.values()), len(self.sources))


def invoke(core: "Core", method, args: tuple = ()):
    """``method`` of the cores' classes (``Core.checksum``, ``LearningCore.gradients``, ...) on
    ``core``, dispatched to the core's own override.  Backends call cores through this: the
    caller names a real method of a class (a typo fails where it is written), never a string."""
    if not callable(method) or not hasattr(type(core), method.__name__):
        raise SpinnrayError(f"core {core.id} ({type(core).__name__}) has no method {getattr(method, '__name__', method)!r}")
    return getattr(core, method.__name__)(*args)


def build_core(spec: CoreSpec) -> "Core":
    """The core of ``spec`` (a learning rule's class where ``spec.learning`` names one), checked
    against the PE's memory budget."""
    cls = Core if spec.learning is None else spec.learning.core_class
    core = cls(spec)
    core.check_budget("holds")
    return core


class Core:
    """The behaviour of one PE; see the module docstring for the phases."""

    learns = False          # takes part in reverse passes (the learning cores of spinnray.rules)
    steps_copies = True     # may step data-parallel copies together (spinnray.machine.copies)

    def __init__(self, spec: CoreSpec):
        self.spec = spec
        self.id = spec.core_id
        self._last_step = -1                  # the last step of the current round (run_block)
        self.dtype = np.dtype(spec.dtype)
        self.model = spec.model
        self.consts = spec.model.consts(spec.dt_ms)
        # The core owns its weights: a copy, never the network's array nor another
        # replica's (and writable even when the spec came read-only from Ray).
        self.weights = [np.array(inc.weights, order="C", copy=True) for inc in spec.incoming]
        # ...and holds no second one: the spec it keeps drops the weights it was built from
        self.spec = replace(spec, incoming=tuple(replace(inc, weights=None) for inc in spec.incoming))
        self.delays = [None if np.isscalar(inc.delays) else inc.delays for inc in spec.incoming]
        self.hist = {name: np.zeros((d, spec.batch, size), bool) for name, (d, size) in spec.history.items()}
        pre_names = list(spec.history)
        # one port per PE this object stands for: itself, or each copy it steps (CopySpec)
        self.ports = [Port(c) for c in (spec.copies or (CopySpec.of(spec),))]
        src = sorted((*s, r) for r, port in enumerate(self.ports) for s in port.copy.sources)
        self._src_prefix = np.array([s[0] for s in src], np.int64)
        self._src_pre = np.array([pre_names.index(s[1]) for s in src], np.int64)
        self._src_lo = np.array([s[2] for s in src], np.int64)
        self._src_port = np.array([s[4] for s in src], np.int64)
        self._pre_names = pre_names
        self._src_n = np.array([s[3] - s[2] for s in src], np.int64)
        self.state = spec.model.init_state(spec.batch, spec.n, self.dtype)
        self.inputs: np.ndarray | None = None   # (steps, batch, n) bool for a SpikeSource
        self.analog_pres = tuple(inc.pre for inc in spec.incoming if inc.analog)
        self.analog: dict[str, np.ndarray] = {}  # pre -> (steps, batch, pre_size) host-written input
        self.batch = spec.batch
        self.port = 0                               # the copy a backend's call addresses (LocalBackend.call)
        self.row_port = np.zeros(0, np.int64)       # the port of every row of the run (reset)
        self.counters = self.ports[0].counters      # a single PE's (with copies: use each port's)
        self.reasons = self.ports[0].reasons
        self.record_vars: tuple[str, ...] = ("spikes",)
        self.recorded: dict[str, np.ndarray] = {}
        self.layered = False                     # the schedule of the current run (reset)
        self._no_input = np.zeros((spec.batch, spec.n), self.dtype)
        self._inbox: dict[str, list] = {}        # layered: pre -> chunks of (step, sample, pre) as delivered
        self._events: dict[str, tuple] | None = None   # layered: pre -> (sample, pre, bounds by step), sorted
        self._events_peak = 0                    # layered: bytes of this run's input events once indexed

    def check_budget(self, what: str = "", why=None) -> None:
        """BudgetError when what this core (or a copy it steps) holds now exceeds its PE's SRAM: "core
        ... {what} {used} bytes; the budget is ...", or ``why(copy index, used bytes)`` when given."""
        spec = self.spec
        for r, port in enumerate(self.ports):
            used = sum(self.port_memory(r).values())
            if used > spec.budget_bytes:
                raise BudgetError(why(r, used) if why is not None else
                                  f"core {port.copy.core_id} ({spec.population}[{spec.lo}, {spec.hi})) {what} "
                                  f"{used} bytes; the budget is {spec.budget_bytes} bytes")

    # ------------------------------------------------------------ extensions
    def _after_step(self, t: int, spikes: np.ndarray | None, before: tuple, fired: tuple | None) -> None:
        """After step ``t``: the spikes, the state before the step and ``fired = np.nonzero(spikes)``
        (a learning core records what its reverse pass needs here)."""

    def _on_delivered(self, pre: str, steps: np.ndarray, b: np.ndarray, idx: np.ndarray) -> None:
        """The pre-synaptic spikes a round delivered (a learning core records them here)."""

    def finish(self) -> None:
        """After the last round of a forward run (an output core computes its loss here)."""

    def flush(self) -> None:
        """Do the work of the round's last step that the exchange does not wait for (a
        learning core's trace update).  A backend may call it between sending the round's
        frames and taking the reply; :meth:`run_block` and :meth:`finish` call it anyway."""

    # ------------------------------------------------------------ parameters
    def get_weights(self) -> list[np.ndarray]:
        """Copies of the incoming weight matrices this core holds, one per projection."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        for w, new in zip(self.weights, weights):
            w[...] = new

    def checksum(self) -> int:
        """CRC32 of the weights' bytes: equal on every replica or they diverged."""
        crc = 0
        for w in self.weights:
            crc = zlib.crc32(np.ascontiguousarray(w).tobytes(), crc)
        return crc

    def learning_state(self) -> dict:
        """What a checkpoint keeps of a core: its counters (a learning core adds its own)."""
        return {"counters": self.ports[self.port].counters.as_dict()}

    def load_learning_state(self, state: dict) -> None:
        for k, v in state.get("counters", {}).items():
            setattr(self.ports[self.port].counters, k, v)

    def events_sent(self) -> int:
        """Spike and error events this core (every copy it steps) has sent since it was built."""
        return sum(p.counters.spike_events_sent + p.counters.error_events_sent for p in self.ports)

    # ------------------------------------------------------------------ memory
    def memory(self) -> dict[str, int]:
        """Bytes by category of what this core holds now: :func:`forward_memory` and the run's
        input spikes or (layered) input events."""
        mem = forward_memory(self.spec.shape, state_batch=self.batch)
        if self.inputs is not None:
            mem["input_spikes"] = self.inputs.nbytes
        if self.layered:   # the run's input events, at their peak (held from the core's round to its last step)
            mem["input_events"] = max(self._event_bytes(), self._events_peak)
        return mem

    def port_memory(self, r: int) -> dict[str, int]:
        """Bytes by category that copy ``r`` would hold as a PE of its own (a single core: :meth:`memory`)."""
        if len(self.ports) == 1:
            return self.memory()
        port = self.ports[r]
        mem = forward_memory(replace(self.spec.shape, batch=port.copy.batch), state_batch=port.n)
        if self.inputs is not None:
            mem["input_spikes"] = self.inputs.shape[0] * port.n * self.spec.n
        return mem

    # ------------------------------------------------------------------- setup
    def reset(self, steps: int, batch: int | None = None, inputs: np.ndarray | None = None,
              record: tuple[str, ...] = ("spikes",), layered: bool = False) -> None:
        """Zero state and history for a new run of ``steps`` steps of ``batch`` samples;
        ``layered``: the run follows the layered schedule (module docstring).  A core stepping
        copies takes one batch per copy (a tuple): their rows follow each other in copy order."""
        batch = self._set_rows(self.spec.batch if batch is None else batch)
        self.layered = layered
        self.batch = batch
        self._no_input = np.zeros((batch, self.spec.n), self.dtype)
        self._no_input.flags.writeable = False
        self.state = self.model.init_state(batch, self.spec.n, self.dtype)
        for h in self.hist.values():
            h[:] = False
        self._inbox = {name: [] for name in self.hist}
        self._events = None
        self._events_peak = 0
        if isinstance(self.model, SpikeSource):
            want = (steps, batch, self.spec.n)
            if inputs is None or inputs.shape != want:
                got = None if inputs is None else inputs.shape
                raise SpinnrayError(f"core {self.id} ({self.spec.population}[{self.spec.lo}, {self.spec.hi})): "
                                    f"input spikes of shape {got}; expected {want} (steps, batch, neurons)")
            self.inputs = np.ascontiguousarray(inputs, bool)
            self.check_budget(f"with input spikes of {steps} steps holds")
        self.analog = {}
        self._analog_block = {}                  # pre -> (first step, (steps, batch, n) projected input)
        if self.analog_pres:
            got = inputs if isinstance(inputs, dict) else {}
            for inc in self.spec.incoming:
                if not inc.analog:
                    continue
                x = got.get(inc.pre)
                want = (steps, batch, inc.pre_size)
                if x is None or np.shape(x) != want:
                    raise SpinnrayError(f"core {self.id} ({self.spec.population}[{self.spec.lo}, {self.spec.hi})): "
                                        f"analog input {inc.pre!r} of shape {None if x is None else np.shape(x)}; "
                                        f"expected {want} (steps, batch, inputs)")
                self.analog[inc.pre] = np.ascontiguousarray(x, self.dtype)
        self.record_vars = tuple(record)
        self.recorded = {}
        if "spikes" in record and self.model.spiking:
            self.recorded["spikes"] = np.zeros((steps, batch, self.spec.n), bool)
        if "v" in record and not isinstance(self.model, SpikeSource):
            self.recorded["v"] = np.zeros((steps, batch, self.spec.n), self.dtype)

    def _set_rows(self, batch) -> int:
        """Each port's rows of the run (its samples, in copy order); the total."""
        sizes = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        if len(sizes) != len(self.ports):
            raise SpinnrayError(f"core {self.id}: {len(sizes)} batch size(s) for {len(self.ports)} PE(s)")
        lo = 0
        for port, n in zip(self.ports, sizes):
            if not isinstance(n, (int, np.integer)) or not 0 <= n <= port.copy.batch:
                raise SpinnrayError(f"core {port.copy.core_id}: batch {n} outside [0, {port.copy.batch}] "
                                    "(the mapped batch)")
            port.lo, port.n = lo, int(n)
            lo += int(n)
        self.row_port = np.repeat(np.arange(len(self.ports)), [p.n for p in self.ports])   # the port of every row
        self._port_n = np.array([p.n for p in self.ports], np.int64)
        self._port_lo = np.array([p.lo for p in self.ports], np.int64)
        return lo

    # -------------------------------------------------------------------- tick
    def synaptic_input(self, t: int) -> np.ndarray:
        """Input arriving at step ``t``: sum of the rows of spikes emitted at t - d,
        plus ``x[t] @ W`` of every analog input (summed in input order)."""
        bs, rows = [], []
        analog = None
        for inc, w, dmat in zip(self.spec.incoming, self.weights, self.delays):
            if inc.analog:
                part = self._analog_part(inc.pre, t, w)
                analog = part if analog is None else analog + part
                continue
            ring = self.hist[inc.pre]
            for d in inc.delay_values:
                if self.layered:        # the events of step t - d, ordered as np.nonzero of the ring orders them
                    eb, ei, bounds = self._events[inc.pre]
                    lo, hi = (bounds[t - d], bounds[t - d + 1]) if t >= d else (0, 0)
                    b, i = eb[lo:hi], ei[lo:hi]
                else:
                    b, i = np.nonzero(ring[(t - d) % len(ring), :self.batch])
                if len(b):
                    bs.append(b)
                    rows.append(w[i] if dmat is None else w[i] * (dmat[i] == d))
        if not bs:
            out = self._no_input        # read only (step() never writes its input)
        else:
            out = accumulate_events(self.batch, np.concatenate(bs), np.concatenate(rows))
        return out if analog is None else out + analog

    def _analog_part(self, pre: str, t: int, w: np.ndarray) -> np.ndarray:
        """``x[t] @ w`` of the analog input ``pre``, from blocks of steps projected at once (the
        weights do not change within a run): fewer, larger numpy operations than step by step."""
        first, block = self._analog_block.get(pre, (0, None))
        if block is None or not first <= t < first + len(block):
            x = self.analog[pre]
            k = max(1, ANALOG_BLOCK_ELEMENTS // max(1, x.shape[1] * w.shape[1]))
            block = analog_input_block(x[t:t + k], w)
            self._analog_block[pre] = (t, block)
            first = t
        return block[t - first]

    def _index_events(self, steps: int) -> None:
        """Layered: sort the delivered input events by (step, sample, neuron) and
        bound them by step; the chunks as delivered are freed.  BudgetError when
        they do not fit the core's SRAM."""
        self._events = {}
        for name, chunks in self._inbox.items():
            if chunks:
                t, b, i = (np.concatenate(c) for c in zip(*chunks))
            else:
                t = b = i = np.zeros(0, np.int64)
            order = np.lexsort((i, b, t))
            bounds = np.searchsorted(t[order], np.arange(steps + 1), "left").tolist()
            self._events[name] = (b[order].astype(np.int32), i[order].astype(np.int32), bounds)
        self._inbox = {name: [] for name in self.hist}
        self._events_peak = self._event_bytes()
        used = sum(self.memory().values())
        if used > self.spec.budget_bytes:
            raise BudgetError(f"core {self.id} ({self.spec.population}): the input events of a layered run of "
                              f"{steps} steps make {used} bytes; the budget is {self.spec.budget_bytes} "
                              f"(use parallel.schedule=lockstep, fewer samples per core or more cores)")

    def _event_bytes(self) -> int:
        """Bytes of the layered input events held now: sample and neuron as int32 per
        event and one int32 bound per step."""
        held = sum(8 * sum(len(c[0]) for c in chunks) for chunks in self._inbox.values())
        if self._events is not None:
            held += sum(b.nbytes + i.nbytes + 4 * len(bounds) for b, i, bounds in self._events.values())
        return held

    def run_block(self, t0: int, k: int) -> list[bytes]:
        """Steps ``t0 .. t0+k-1``; returns this round's outgoing frames.

        Layered (``self.layered``): called once, for the whole run; the input
        events delivered before it are indexed first and freed after it."""
        self.flush()
        self._last_step = t0 + k - 1
        if self.layered:
            if t0 != 0:
                raise SpinnrayError(f"core {self.id}: a layered run steps from 0, not from step {t0}")
            if k > 65536:
                raise SpinnrayError(f"core {self.id}: a layered run of {k} steps exceeds the 65,536 step offsets "
                                    f"one packet can carry; use parallel.schedule=lockstep")
            self._index_events(k)
        try:
            return self._run_steps(t0, k)
        finally:
            if self.layered:
                self._events = None

    def _run_steps(self, t0: int, k: int) -> list[bytes]:
        sends = self.spec.key_base is not None
        out_t, out_b, out_i = [], [], []
        if isinstance(self.model, SpikeSource):        # replay: every step of the block at once
            s = self.inputs[t0:t0 + k]
            if "spikes" in self.recorded:
                self.recorded["spikes"][t0:t0 + k] = s
            if sends:
                t, b, i = np.nonzero(s)                 # ordered by step, then as np.nonzero(s[t])
                if len(b):
                    out_t.append(t.astype(np.uint16))
                    out_b.append(b)
                    out_i.append(i)
                    if len(self.ports) == 1:
                        per_step = int(np.bincount(t).max())
                        self.counters.max_events_per_step = max(self.counters.max_events_per_step, per_step)
            k_steps = range(0)
        else:
            k_steps = range(t0, t0 + k)
        record_v = "v" in self.recorded
        record_s = "spikes" in self.recorded
        for t in k_steps:
            before = self.state
            s, self.state = self.model.step(self.synaptic_input(t), self.state, self.consts)
            if s is None:                               # a non-spiking readout
                self._after_step(t, s, before, None)
            else:
                fired = np.nonzero(s)
                self._after_step(t, s, before, fired)
                if record_s:
                    self.recorded["spikes"][t] = s
                b, i = fired
                if sends and len(b):
                    out_t.append(np.full(len(b), t - t0, np.uint16))
                    out_b.append(b)
                    out_i.append(i)
                    if len(self.ports) == 1:
                        self.counters.max_events_per_step = max(self.counters.max_events_per_step, len(b))
            if record_v:
                self.recorded["v"][t] = self.model.voltage(self.state)
        for port in self.ports:
            port.counters.steps += k
        if len(self.ports) > 1:
            return self._copies_frames(t0, out_t, out_b, out_i)
        if not out_i:
            return []
        i = np.concatenate(out_i)
        frame = packet.encode(
            packet.Kind.SPIKE, self.id, t0,
            keys=(self.spec.key_base + i).astype(np.uint32),
            offsets=np.concatenate(out_t),
            batch=np.concatenate(out_b).astype(np.uint16) if self.spec.batch > 1 else None,
        )
        self.counters.packets_sent += 1
        self.counters.spike_events_sent += len(i)
        self.counters.bytes_sent += len(frame)
        return [frame]

    def _copies_frames(self, t0: int, out_t: list, out_b: list, out_i: list) -> dict[int, list[bytes]]:
        """A round's spike frames of every copy: each copy's events (in the order one PE would send
        them), with its keys and its own sample indices; counted per copy."""
        out: dict[int, list[bytes]] = {p.copy.core_id: [] for p in self.ports}
        if not out_i:
            return out
        t, b, i = np.concatenate(out_t), np.concatenate(out_b), np.concatenate(out_i)
        port_of = self.row_port[b]
        one_step = len(out_t) == 1 and not isinstance(self.model, SpikeSource)
        if not one_step:                         # one step's events come by row, so by copy, already
            order = np.argsort(port_of, kind="stable")
            t, b, i, port_of = t[order], b[order], i[order], port_of[order]
        bounds = np.searchsorted(port_of, np.arange(len(self.ports) + 1)).tolist()
        for r, port in enumerate(self.ports):
            lo, hi = bounds[r], bounds[r + 1]
            if hi == lo:
                continue
            c, copy = port.counters, port.copy
            steps = t[lo:hi]
            c.max_events_per_step = max(c.max_events_per_step, hi - lo if one_step else int(np.bincount(steps).max()))
            frame = packet.encode(packet.Kind.SPIKE, copy.core_id, t0, keys=(copy.key_base + i[lo:hi]).astype(np.uint32),
                                  offsets=steps,
                                  batch=(b[lo:hi] - port.lo).astype(np.uint16) if copy.batch > 1 else None)
            c.packets_sent += 1
            c.spike_events_sent += hi - lo
            c.bytes_sent += len(frame)
            out[copy.core_id] = [frame]
        return out

    def deliver(self, frames, t0: int, k: int) -> None:
        """Receive the frames of the round that covered steps ``t0 .. t0+k-1``
        (layered: of the run, ``t0 = 0``, ``k = T``: kept as input events).  A core stepping
        copies takes ``{copy's core id: frames}``."""
        for ring in () if self.layered else self.hist.values():
            depth = len(ring)
            if k >= depth:
                ring[:] = False
            elif k == 1:
                ring[t0 % depth] = False
            else:
                ring[(t0 + np.arange(k)) % depth] = False
        if len(self.ports) == 1:
            parts = [self._take_spikes(0, frames, t0, k)] if frames else []
        else:
            by_port = [frames.get(p.copy.core_id, []) for p in self.ports]
            parts = self._take_copies_spikes(by_port, t0, k)
        parts = [ev for ev in parts if ev is not None]
        if not parts:
            return
        if len(parts) == 1:
            self._store_events(*parts[0], t0)
        else:
            self._store_events(*(np.concatenate(x) for x in zip(*parts)), t0)

    def _take_copies_spikes(self, by_port: list[list[bytes]], t0: int, k: int) -> list:
        """Every copy's frames of the round decoded at once when all are valid (each sample index
        below its own copy's batch), counted per copy; else copy by copy (:meth:`_take_spikes`
        names what is wrong)."""
        flat = [f for fs in by_port for f in fs]
        if not flat:
            return []
        fast = packet.spike_round(flat, step=t0, max_offset=k - 1, n_batch=int(self._port_n.max()))
        if fast is not None:
            keys, offsets, bat, counts = fast
            frame_port = np.repeat(np.arange(len(self.ports)), [len(fs) for fs in by_port])
            port_of = np.repeat(frame_port, counts)
            if np.all(bat < self._port_n[port_of]):
                events = np.bincount(frame_port, weights=counts, minlength=len(self.ports)).astype(np.int64).tolist()
                for port, fs, n in zip(self.ports, by_port, events):
                    if fs:
                        c = port.counters
                        c.packets_received += len(fs)
                        c.bytes_received += sum(map(len, fs))
                        c.spike_events_received += n
                if not len(keys):
                    return []
                return [(keys.astype(np.int64), offsets, bat.astype(np.int64) + self._port_lo[port_of], port_of)]
        return [self._take_spikes(r, fs, t0, k) for r, fs in enumerate(by_port) if fs]

    def _take_spikes(self, r: int, frames: list[bytes], t0: int, k: int):
        """Port ``r``'s frames of the round, counted on it: ``(int64 keys, step offsets, rows of
        the batch, port of each event)`` of the accepted events, or None."""
        port = self.ports[r]
        c = port.counters
        fast = packet.spike_round(frames, step=t0, max_offset=k - 1, n_batch=port.n)
        if fast is not None:                    # the usual round: every frame valid, decoded at once
            keys, offsets, bat, counts = fast
            c.packets_received += len(frames)
            c.bytes_received += sum(len(f) for f in frames)
            c.spike_events_received += len(keys)
            if not len(keys):
                return None
            return keys.astype(np.int64), offsets, bat.astype(np.int64) + port.lo, np.full(len(keys), r)
        keys_l, offs_l, b_l = [], [], []
        for frame in frames:
            c.packets_received += 1
            c.bytes_received += packet.frame_nbytes(frame)
            try:
                p = packet.decode(frame, max_offset=k - 1, n_batch=port.n)
                if p.step != t0:
                    raise PacketError(f"packet of step {p.step} arrived in the round of step {t0}")
                if p.kind != packet.Kind.SPIKE:
                    raise PacketError(f"core {port.copy.core_id} takes no error events (kind {int(p.kind)})")
            except PacketError as e:
                c.rejected += 1
                self._note(f"core {port.copy.core_id}: rejected frame: {e.reason}", r)
                continue
            c.spike_events_received += p.n
            keys_l.append(p.keys)
            offs_l.append(p.offsets)
            b_l.append(p.batch if p.batch is not None else np.zeros(p.n, np.uint16))
        if not keys_l:
            return None
        # All frames of the round at once: one key lookup and one ring write per
        # pre population (frames are kept in arrival order, as before).
        keys = np.concatenate(keys_l).astype(np.int64)
        return keys, np.concatenate(offs_l), np.concatenate(b_l).astype(np.int64) + port.lo, np.full(len(keys), r)

    def _store_events(self, keys: np.ndarray, offsets: np.ndarray, rows: np.ndarray, ports: np.ndarray,
                      t0: int) -> None:
        """The accepted events of a round (int64 keys, their step offsets from ``t0``, rows of the
        batch and the port each came in by): looked up by key and stored per pre population.  A
        key must come from a source of the port's own copy."""
        mask = (1 << self.spec.key_bits) - 1
        prefix, local = keys >> self.spec.key_bits, keys & mask
        if len(self._src_prefix) and len(prefix):
            j = np.minimum(np.searchsorted(self._src_prefix, prefix), len(self._src_prefix) - 1)
            ok = (self._src_prefix[j] == prefix) & (local < self._src_n[j]) & (self._src_port[j] == ports)
        else:
            j, ok = np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
        if not ok.all():
            bad = ~ok
            for r in np.unique(ports[bad]):
                mine = bad & (ports == r)
                self.ports[r].counters.dropped += int(mine.sum())
                self._note(f"core {self.ports[r].copy.core_id}: {int(mine.sum())} event(s) with unknown key, "
                           f"first {int(keys[mine][0]):#010x}", int(r))
            j, local, offsets, rows = j[ok], local[ok], offsets[ok], rows[ok]
        if not len(j):
            return
        steps = t0 + offsets.astype(np.int64)
        pre = self._src_lo[j] + local
        which = self._src_pre[j]
        if len(self._pre_names) == 1:
            self._store(self._pre_names[0], steps, rows, pre)
            return
        for w in np.unique(which):
            sel = which == w
            self._store(self._pre_names[w], steps[sel], rows[sel], pre[sel])

    def _store(self, name: str, steps: np.ndarray, b: np.ndarray, pre: np.ndarray) -> None:
        """Delivered spikes of pre population ``name``: into its ring, or (layered) the input events."""
        if self.layered:
            self._inbox[name].append((steps, b, pre))
        else:
            ring = self.hist[name]
            ring[steps % len(ring), b, pre] = True
        self._on_delivered(name, steps, b, pre)

    def problems(self) -> int:
        """Frames rejected and events dropped at this core so far."""
        return self.counters.rejected + self.counters.dropped

    def _note(self, reason: str, port: int = 0) -> None:
        reasons = self.ports[port].reasons
        if len(reasons) < _MAX_REASONS:
            reasons.append(reason)

    # ----------------------------------------------------------------- readout
    def port_reports(self) -> list[dict]:
        """One report per PE this object stands for, in copy order (a single core: :meth:`report`)."""
        shared = self.report()                  # what the copies share (a learning core's weight stores)
        if len(self.ports) == 1:
            return [shared]
        return [{**shared, "core_id": p.copy.core_id, "chip": p.copy.chip, "pe": p.copy.pe,
                 "counters": p.counters.as_dict(), "memory": self.port_memory(r), "reasons": list(p.reasons)}
                for r, p in enumerate(self.ports)]

    def report(self) -> dict:
        """Counters, memory and notes of this core (plain data)."""
        return {"core_id": self.id, "chip": self.spec.chip, "pe": self.spec.pe,
                "population": self.spec.population, "slice": [self.spec.lo, self.spec.hi],
                "counters": self.counters.as_dict(), "memory": self.memory(), "reasons": list(self.reasons)}
