"""What every learning core has in common: weights in optional low-precision or PCM stores, one
Adam per incoming projection, gradients, error events, and the learner interface the schedule
and the trainers use.

:class:`LearningCore` is a :class:`~spinnray.machine.core.Core` that takes part in reverse
passes (``learns = True``).  Its learner interface, called by :mod:`spinnray.machine.schedule`
and by trainers through ``Simulator.call(LearningCore.method, ...)``:

* ``begin_backward(steps, scale)``, ``backward_block(i, k) -> frames`` (reverse steps
  ``i+k-1 .. i`` of a lockstep round),
  ``backward_layer(steps) -> frames``, ``deliver_errors(frames, i, span)``: the reverse pass;
* ``gradients()``: dL/dW of each incoming projection; ``reduction_terms()``: what data-parallel
  replicas sum elementwise (by default the gradients; a rule whose gradient is not a sum over
  samples adds the batch sums it is formed from); ``apply(grads, lr)``: one Adam step with
  ``grads``, the replicas' sums of ``reduction_terms()`` (None: its own gradient);
* ``learning_state()`` / ``load_learning_state(state)``: what a checkpoint keeps.

Weight storage (``spec.learning.weight_store``, the :class:`WeightStoreSpec` of
:func:`weight_store_options`, from ``machine.weight_bits``, ``rounding``,
``accumulate``, ``transfer``, ``weight_max``, ``weight_range``,
``weight_range_scope``, ``weight_range_growth``, ``synapse``, ``pcm``, ``weight_seed``).  Absent (or
None) the core keeps float weights and Adam updates them in place.  Given, each
incoming projection's slice lives in a :mod:`spinnray.machine.quant` store:

* ``synapse = ideal``: :class:`~spinnray.machine.quant.MixedPrecisionWeights` with
  ``weight_bits`` per weight on the grid ``k weight_max / (2^(bits-1) - 1)``,
  saturating at ``+-weight_max``; with ``accumulate`` a float32 accumulator keeps
  the updates not yet worth a level; with ``weight_range_growth > 1`` each post
  neuron's grid doubles its step when an update would pass its limit (up to that factor);
* ``synapse = pcm``: :class:`~spinnray.machine.quant.PCMWeights`, differential PCM pairs.

The forward (and reverse) pass uses the *effective* weights, read from the
store when a run starts (:meth:`LearningCore._read_stores`: one read per
run, PCM with fresh read noise, at the core's device clock ``elapsed_s``),
times the projection's mask; the clock then advances by ``samples x T x dt``
(each core says which ``samples``).  An update ``delta`` (Adam's step
``-lr m_hat / (sqrt(v_hat) + eps)`` computed into a zero array, or an EventProp
weight bump) is masked and given to ``store.apply(delta, elapsed_s)``
(:meth:`LearningCore._update_weights`); a digital store is deterministic, so
the core's float copy is refreshed at once, a PCM copy at the next read.

Seeds: a projection's store is seeded by
``SeedSequence(weight_seed, spawn_key=(crc32(projection name),))`` with one
random stream per post neuron (its global index, :class:`~spinnray.machine.quant.Noise`).
Stochastic rounding and PCM noise are therefore the same whatever the split of
a population over cores or the number of replicas, on ``local`` and ``ray``.

Memory with a store: ``weights`` = the bytes the store holds (packed codes,
``ceil(n_weights bits / 8)`` per projection; for PCM the emulator's device
state, :data:`PCM_BYTES_PER_WEIGHT` bytes per weight: on a chip the conductances
sit in the crossbar), ``weight_accumulator`` = the float32 accumulator (4 bytes
per weight, when there is one).  The decoded float copy the emulator computes
with is not counted: a PE multiplies by the codes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

import numpy as np

from spinnray.errors import ConfigError, DataError, PacketError, SpinnrayError
from spinnray.machine import packet
from spinnray.machine.core import Core, CoreShape, CoreSpec
from spinnray.config import PCMParams, check_projection_factors
from spinnray.machine.quant import make_weight_store
from spinnray.rules.optim import Adam

__all__ = ["PCM_BYTES_PER_WEIGHT", "WeightStoreSpec", "weight_store_options", "LearningCore", "learning_memory",
           "lr_scales", "check_lr_scale", "LR_SCALE_HELP", "store_summary"]

#: the help of ``learning.lr_scale`` (the same option in every rule that learns on the cores)
LR_SCALE_HELP = ("per-projection factors on lr, keyed by projection name, pre->post or pre_to_post (e.g. "
                 "{input_to_hidden: 5}): Adam moves every weight by about lr per step whatever its scale, so "
                 "weights 30x apart in scale learn at 30x different relative speeds under one lr; null = 1 for all")

#: bytes per weight of the PCM model's device state: two devices x (G, t_p, nu), float32 each
PCM_BYTES_PER_WEIGHT = 24


@dataclass(frozen=True)
class WeightStoreSpec:
    """How a learning core stores its weights (from the ``machine.*`` weight options):
    ``ranges`` maps every projection name to its grid's initial range ``w_max``; ``growth`` is how
    far each post neuron's grid may widen (``machine.weight_range_growth`` resolved)."""

    weight_bits: int
    rounding: str
    accumulate: bool
    transfer: str
    synapse: str
    pcm: PCMParams
    seed: int
    ranges: dict = field(default_factory=dict)
    growth: float = 1.0

    def bytes(self, weights: int, columns: int = 0) -> dict[str, int]:
        """``weights`` and ``weight_accumulator`` bytes of a store of ``weights`` weights in
        ``columns`` post neurons (a grid that widens keeps one shift byte per post neuron:
        ``weight_shifts``)."""
        if self.synapse == "pcm":
            return {"weights": PCM_BYTES_PER_WEIGHT * weights, "weight_accumulator": 4 * weights}
        out = {"weights": -(-weights * self.weight_bits // 8)}
        if self.accumulate and self.weight_bits < 32:
            out["weight_accumulator"] = 4 * weights
        if self.growth > 1 and self.weight_bits < 32:
            out["weight_shifts"] = columns
        return out


def weight_store_options(machine, network) -> WeightStoreSpec | None:
    """``learning["weight_store"]`` for the learning cores from ``machine`` (a MachineConfig).

    None when the machine stores float weights (``weight_bits = 32``, ``synapse = ideal``).
    Otherwise the ``machine.*`` weight options with ``ranges``, every projection name -> its
    range: ``machine.weight_max``, or when that is null ``f x peak`` where

    * ``f`` (the headroom) is ``machine.weight_ranges[name]`` if given, else
      ``machine.weight_range_recurrent`` for a recurrent projection (pre is post), else
      ``machine.weight_range`` (both resolved by :class:`~spinnray.config.MachineConfig`);
    * ``peak`` is the largest |initial weight| (1.0 if all are zero) of the projection alone
      (``weight_range_scope = projection``; null: the default for digital weights) or of all
      projections into the same population (``population``, the default for PCM, whose
      measured recipe predates this rule: a core's input and recurrent weights share one peak).

    The default needs no calibration run.  A digital grid with an accumulator widens per post
    neuron when its weights outgrow it (``machine.weight_range_growth``, 64), so it starts at
    1 x the initial peak for every projection: as fine as the initial weights allow (4 bits: a
    step of 1/7 of the peak).  A fixed grid (``weight_range_growth = 1``) must hold the trained
    weights from the start: 2 x the peak for feed-forward weights (they grow 1-3x) and 7 x for
    recurrent ones (they start 5-40x smaller than the input weights and grow 6-10x).  That rule
    left the small recurrent weights of the cue network below one level, where no update moved
    them, and 1 x the peak saturated 35 % of the keyword network's recurrent weights
    (bench/RESULTS.md, issue 26 part 4): no single fixed factor served both tasks.

    ``machine.weight_ranges`` is written ``pre->post`` or, on the command line where Hydra takes
    no ``->`` in keys, ``pre_to_post`` (an unknown name is a ConfigError listing the projections).
    The range covers the whole projection, so every core and replica holding a slice uses the
    same grid, computed once from the initial weights: identical on every backend.
    """
    if machine.float_weights:
        return None
    factor = machine.range_factor
    recurrent = machine.range_recurrent
    scope = machine.range_scope
    peaks = {p.name: float(np.abs(p.weights).max()) if p.weights.size else 0.0 for p in network.projections}
    if scope == "population":
        into: dict[str, float] = {}
        for p in network.projections:
            into[p.post.name] = max(into.get(p.post.name, 0.0), peaks[p.name])
        peaks = {p.name: into[p.post.name] for p in network.projections}
    factors = {k.replace("_to_", "->"): v for k, v in (machine.weight_ranges or {}).items()}   # CLI-safe names
    unknown = sorted(set(factors) - set(peaks))
    if unknown:
        raise ConfigError(f"machine.weight_ranges: no projection named {unknown[0]!r}; this network's projections "
                          f"are {sorted(peaks)}")
    ranges = {}
    for p in network.projections:
        peak = peaks[p.name]
        f = float(factors.get(p.name, recurrent if p.pre.name == p.post.name else factor))
        ranges[p.name] = float(machine.weight_max) if machine.weight_max is not None else \
            (f * peak if peak > 0 else 1.0)
    return WeightStoreSpec(machine.weight_bits, machine.rounding, machine.accumulate, machine.transfer,
                           machine.synapse, machine.pcm, machine.weight_seed, ranges, machine.range_growth)



def lr_scales(lr_scale: dict | None, network) -> tuple[tuple[str, float], ...]:
    """``learning.lr_scale`` resolved against ``network``: ``(projection name, factor)`` pairs in
    the network's projection order.  Keys are written ``pre->post`` or, on the command line
    (Hydra takes no ``->`` in keys), ``pre_to_post``; an unknown name is a ConfigError listing
    the projections.  Adam moves a weight by about its rate per step whatever the weight's
    scale, so projections whose weights differ in scale by 10x or more learn at very different
    relative speeds under one rate; a factor per projection evens that out."""
    factors = {k.replace("_to_", "->"): float(v) for k, v in (lr_scale or {}).items()}
    names = [p.name for p in network.projections]
    unknown = sorted(set(factors) - set(names))
    if unknown:
        raise ConfigError(f"learning.lr_scale: no projection named {unknown[0]!r}; this network's projections "
                          f"are {sorted(names)}")
    return tuple((n, factors[n]) for n in names if n in factors)


def check_lr_scale(value) -> None:
    """ConfigError unless ``learning.lr_scale`` is null or maps names to finite factors > 0."""
    check_projection_factors("learning.lr_scale", value)


def store_summary(cores: list[dict]) -> dict | None:
    """Per projection, what the weight stores of ``cores`` (their reports) did, over one copy of
    the network (data-parallel copies hold identical stores, so each slice is counted once):
    weights, ``at_limit`` and its ``at_limit_fraction`` (digital grids), ``updates`` (per store) and the
    summed counters
    (``levels_moved``, ``dropped_abs``: update refused at the limit, in weight units; ``widened``:
    post neurons' grid doublings; PCM: pulses, ``saturated``) and the largest ``growth_reached`` of a
    grid that widens.  None when no core has a store."""
    seen, out = set(), {}
    for rep in cores:
        key = (rep.get("population"), tuple(rep.get("slice") or ()))
        if "weight_store" not in rep or key in seen:
            continue
        seen.add(key)
        for name, c in rep["weight_store"].items():
            tot = out.setdefault(name, {})
            for k, v in c.items():      # a store updates once per step: its count is not summed
                tot[k] = max(tot.get(k, 0), v) if k in ("updates", "growth_reached") else tot.get(k, 0) + v
    for tot in out.values():
        if "at_limit" in tot:
            tot["at_limit_fraction"] = tot["at_limit"] / tot["weights"] if tot["weights"] else 0.0
    return out or None


def learning_memory(shape: CoreShape, store: WeightStoreSpec | None) -> dict[str, int]:
    """What every learning core holds beyond the forward arrays: the weight stores (replacing the
    float ``weights``), gradients, Adam's two moments, masks and the error keys of pre neurons."""
    item = shape.itemsize
    mem: dict[str, int] = {}
    if store is not None:
        for s in shape.incoming:
            for k, v in store.bytes(s.pre_size * shape.n, shape.n).items():
                mem[k] = mem.get(k, 0) + v
    w = shape.synapses
    mem["gradients"] = w * item
    mem["optimizer"] = 2 * w * item
    masks = sum(s.pre_size * shape.n for s in shape.incoming if s.masked)
    if masks:
        mem["masks"] = masks
    keys = sum(s.pre_size * 4 for s in shape.incoming if s.error_keyed)
    if keys:
        mem["error_keys"] = keys
    return mem


class LearningCore(Core):
    """A core that learns (module docstring).  Subclasses implement the reverse pass."""

    learns = True
    steps_copies = False        # a rule's cores that keep their sums per copy say so

    def __init__(self, spec: CoreSpec):
        super().__init__(spec)
        L = spec.learning
        self.grads = [np.zeros_like(w) for w in self.weights]
        # with copies (spinnray.machine.copies): each copy's gradients, summed over its own samples
        self.port_grads = [self.grads] + [[np.zeros_like(w) for w in self.weights] for _ in self.ports[1:]]
        self._to_apply: set[int] = set()        # copies not yet told this step's update
        self._applied: list | None = None        # the update's sums, for the copies told after the first
        self._told: dict[str, tuple] = {}         # what -> (copies not yet told, its arguments)
        self.lr_factors = [L.adam.factor(inc.name) for inc in spec.incoming]
        self.opts = [Adam.of(L.adam, w.shape, w.dtype, f) for w, f in zip(self.weights, self.lr_factors)]
        self.masks = [inc.mask for inc in spec.incoming]
        self._init_stores(L.weight_store)

    # ------------------------------------------------------- learner interface
    def begin_backward(self, steps: int, scale: float) -> None:
        raise NotImplementedError

    def backward_block(self, i: int, k: int = 1) -> list[bytes]:
        raise NotImplementedError

    def backward_layer(self, steps: int) -> list[bytes]:
        raise NotImplementedError

    def deliver_errors(self, frames: list[bytes], i: int, span: int = 1) -> None:
        raise NotImplementedError

    def reduction_terms(self) -> list[np.ndarray]:
        """What data-parallel replicas sum elementwise (in replica order) before :meth:`apply`: the
        gradients, each a sum over this core's samples (with copies: the addressed copy's)."""
        return [g if m is None else g * m for g, m in zip(self.port_grads[self.port], self.masks)]

    def _later_copy(self, grads) -> bool:
        """Whether this :meth:`apply` is a copy's after the first of the same update (stepping
        copies): the update is taken once, and every copy must be given the same sums."""
        if len(self.ports) == 1:
            self._to_apply.clear()
            return False
        r = self.port
        if r not in self._to_apply:
            raise SpinnrayError(f"core {self.ports[r].copy.core_id}: apply twice for one update, or before a backward round")
        first = len(self._to_apply) == len(self.ports)
        self._to_apply.discard(r)
        if first:
            self._applied = None if grads is None else [np.array(g, copy=True) for g in grads]
            return False
        same = (grads is None) == (self._applied is None) and (grads is None or all(
            np.array_equal(a, np.asarray(g)) for a, g in zip(self._applied, grads)))
        if not same:
            raise SpinnrayError(f"core {self.ports[r].copy.core_id}: copies of one slice were given different "
                                "sums to apply; they would diverge")
        return True

    def _later_call(self, what: str, args: tuple) -> bool:
        """Whether this call of ``what`` (e.g. a weight bump) is a later copy's of one the first copy
        already made (stepping copies: it acts once on the weights they share).  Every copy must make
        it once, with the same ``args``, before the next one starts."""
        if len(self.ports) == 1:
            return False
        r, cid = self.port, self.ports[self.port].copy.core_id
        round_ = self._told.get(what)
        if round_ is None:
            self._told[what] = (set(range(len(self.ports))) - {r}, args)
            return False
        left, first = round_
        if r not in left:
            raise SpinnrayError(f"core {cid}: {what} twice before every copy of the slice was given it")
        same = len(args) == len(first) and all(
            (a is None) == (b is None) and (a is None or np.array_equal(np.asarray(a), np.asarray(b)))
            for a, b in zip(args, first))
        if not same:
            raise SpinnrayError(f"core {cid}: copies of one slice were given different {what} arguments; "
                                "they would diverge")
        left.discard(r)
        if not left:
            del self._told[what]
        return True

    def _begin_update(self) -> None:
        """A backward round starts: every copy's gradients from zero, every copy to be told the update."""
        for grads in self.port_grads:
            for g in grads:
                g[:] = 0
        self._to_apply = set(range(len(self.ports)))

    def apply(self, grads: list[np.ndarray] | None = None, lr: float | None = None) -> None:
        """One Adam step of every incoming projection with ``grads``, the replicas' sums of
        :meth:`reduction_terms` (None: this core's own gradient)."""
        if self._later_copy(grads):
            return
        if grads is None:
            grads = self.gradients()
        for j, (w, g) in enumerate(zip(self.weights, grads)):
            self._adam_step(j, np.asarray(g, w.dtype), lr)

    # ------------------------------------------------------------------ memory
    def memory(self) -> dict[str, int]:
        """The forward arrays with the rule's own (:meth:`static_memory` of the spec) and what
        the current run holds."""
        mem = super().memory()
        mem.update(self.spec.learning.static_memory(self.spec.shape))
        return mem

    def port_memory(self, r: int) -> dict[str, int]:
        """Copy ``r``'s memory as a PE of its own: the forward part and the rule's static part at
        the copy's batch (a rule whose cores hold run-dependent arrays adds them)."""
        if len(self.ports) == 1:
            return self.memory()
        mem = super().port_memory(r)
        mem.update(self.spec.learning.static_memory(replace(self.spec.shape, batch=self.ports[r].copy.batch)))
        return mem

    def report(self) -> dict:
        """The core's report with, for a weight store, ``weight_store``: per incoming projection its
        counters, weights held and (digital grids) how many sit at the grid's limit."""
        rep = super().report()
        if self.stores is not None:
            rep["weight_store"] = {
                inc.name: {"weights": int(np.prod(st.shape)), **st.counters,
                           **({"at_limit": st.at_limit()} if hasattr(st, "at_limit") else {}),
                           **({"growth_reached": st.growth_reached()} if getattr(st, "max_shift", 0) else {})}
                for inc, st in zip(self.spec.incoming, self.stores)}
        return rep

    # ------------------------------------------------------------ error events
    def _error_frames(self, i: int, about: list, batch_idx: list, payload: list,
                      offsets: list | None = None):
        """One error frame of reverse step ``i`` (counted as sent; none when there is no event)
        from lists of ``(projection, pre neurons)``, batch-index and payload arrays: each event
        goes to the error key of its pre neuron.  ``offsets``: per event, its step minus ``i``
        (the layered schedule's frame of the whole run); None = all 0.  Stepping copies: one
        frame per copy, ``{copy's core id: frames}``, with the copy's keys and sample indices."""
        if not about or not sum(len(pre) for _, pre in about):
            return [] if len(self.ports) == 1 else {}
        j = np.concatenate([np.full(len(pre), jj) for jj, pre in about])
        pre = np.concatenate([pre for _, pre in about])
        b = np.concatenate(batch_idx).astype(np.int64)
        off = np.zeros(len(pre), np.uint16) if offsets is None else np.concatenate(offsets).astype(np.uint16)
        val = np.concatenate(payload).astype(np.float32)
        if len(self.ports) == 1:
            keys = self._error_keys_of([inc.error_keys for inc in self.spec.incoming], j, pre)
            return self._error_frame(0, i, keys, off, b, val, offsets is None)
        port_of = self.row_port[b]
        out = {}
        for r, port in enumerate(self.ports):
            sel = np.flatnonzero(port_of == r)
            out[port.copy.core_id] = [] if not len(sel) else self._error_frame(
                r, i, self._error_keys_of(port.copy.error_keys, j[sel], pre[sel]), off[sel], b[sel] - port.lo,
                val[sel], offsets is None)
        return out

    @staticmethod
    def _error_keys_of(error_keys, j: np.ndarray, pre: np.ndarray) -> np.ndarray:
        """The error key of each (projection, pre neuron)."""
        keys = np.zeros(len(pre), np.uint32)
        for jj in np.unique(j):
            sel = j == jj
            keys[sel] = error_keys[int(jj)][pre[sel]]
        return keys

    def _error_frame(self, r: int, i: int, keys, off, b, val, one_step: bool) -> list[bytes]:
        """Copy ``r``'s error frame (the core itself for a single core), counted on it."""
        port = self.ports[r]
        frame = packet.encode(packet.Kind.ERROR, port.copy.core_id, i, keys=keys, offsets=off,
                              batch=b.astype(np.uint16) if port.copy.batch > 1 else None, payload=val)
        c = port.counters
        c.packets_sent += 1
        c.error_events_sent += len(keys)
        c.bytes_sent += len(frame)
        # per step, not per frame: a layered frame carries every step of the reverse pass
        per_step = len(keys) if one_step else int(np.bincount(off).max())
        c.max_events_per_step = max(c.max_events_per_step, per_step)
        return [frame]

    def _error_events(self, frames: list[bytes], i: int, what: str, refuse: str | None = None, span: int = 1,
                      latest: int | None = None):
        """The valid error events of reverse step ``i`` addressed to this core's neurons.

        Yields ``(batch index, local neuron, payload, event step, source core)`` per frame; an
        event's step is the frame's step plus its offset, offsets lie below ``span`` (1: all 0;
        the layered schedule's frames cover a run).  ``latest`` None: the frame's step must be
        ``i``; else any frame whose events' steps are all ``<= latest`` (EventProp's lockstep
        rounds: errors about spikes of earlier steps, which the core keeps until it needs them).
        A frame that does not decode, breaks these bounds or arrives while ``refuse`` (a reason)
        is set is rejected; events whose keys are not this core's are dropped; both are counted
        and noted.  ``what`` names the events in the notes ("error events", "learning signals").
        """
        if len(self.ports) == 1:
            yield from self._copy_error_events(0, frames, i, what, refuse, span, latest)
            return
        for r, port in enumerate(self.ports):
            for b, local, value, step, src in self._copy_error_events(r, frames.get(port.copy.core_id, []), i, what,
                                                                      refuse, span, latest):
                yield b + port.lo, local, value, step, src

    def _copy_error_events(self, r: int, frames: list[bytes], i: int, what: str, refuse: str | None, span: int,
                           latest: int | None):
        """:meth:`_error_events` of copy ``r``'s frames (sample indices its own), counted on it."""
        port = self.ports[r]
        c = port.counters
        base = port.copy.error_key_base
        cid = port.copy.core_id
        for frame in frames:
            c.packets_received += 1
            c.bytes_received += packet.frame_nbytes(frame)
            try:
                p = packet.decode(frame, max_offset=span - 1, n_batch=port.n)
                if p.kind != packet.Kind.ERROR:
                    raise PacketError(f"expected {what} of reverse step {i}, got kind {int(p.kind)} step {p.step}")
                if latest is None and p.step != i:
                    raise PacketError(f"expected {what} of reverse step {i}, got kind {int(p.kind)} step {p.step}")
                if latest is not None and p.n and p.step + int(p.offsets.max()) > latest:
                    raise PacketError(f"{what} about step {p.step + int(p.offsets.max())} arrived after reverse "
                                      f"step {i}; expected steps <= {latest}")
                if refuse:
                    raise PacketError(refuse)
            except PacketError as e:
                c.rejected += 1
                self._note(f"core {cid}: rejected frame: {e.reason}", r)
                continue
            c.error_events_received += p.n
            local = p.keys.astype(np.int64) - (base if base is not None else 0)
            ok = (base is not None) & (local >= 0) & (local < self.spec.n)
            if not np.all(ok):
                c.dropped += int((~ok).sum())
                self._note(f"core {cid}: {int((~ok).sum())} {what} with foreign keys", r)
            b = p.batch[ok].astype(np.int64) if p.batch is not None else np.zeros(int(ok.sum()), np.int64)
            yield b, local[ok], p.payload[ok].astype(self.dtype), p.step + p.offsets[ok].astype(np.int64), p.src

    # ------------------------------------------------------------------ state
    def _init_stores(self, ws: "WeightStoreSpec | None") -> None:
        """One weight store per incoming projection; None = float weights."""
        self.stores = None
        self.elapsed_s = 0.0            # emulated time of this core's device clock (s)
        if ws is None:
            return
        spec = self.spec
        cols = np.arange(spec.lo, spec.hi)
        self.stores = []
        for j, (inc, w) in enumerate(zip(spec.incoming, self.weights)):
            seed = np.random.SeedSequence(ws.seed, spawn_key=(zlib.crc32(inc.name.encode()),))
            self.stores.append(make_weight_store(
                w.astype(np.float64), weight_bits=ws.weight_bits, rounding=ws.rounding, synapse=ws.synapse,
                w_max=ws.ranges[inc.name], accumulate=ws.accumulate, transfer=ws.transfer,
                pcm=ws.pcm, seed=seed, t_s=0.0, columns=cols, growth=ws.growth))
            self.weights[j][...] = self._stored(j)

    def _is_pcm(self, j: int) -> bool:
        """Whether projection ``j``'s store is analog (PCM devices) rather than digital codes."""
        return hasattr(self.stores[j], "conductances")

    def _stored(self, j: int) -> np.ndarray:
        """Projection ``j``'s stored weights, noise-free, now (PCM: drifted to ``elapsed_s``), masked."""
        st = self.stores[j]
        w = st.read(self.elapsed_s, noise=False) if self._is_pcm(j) else st.read()
        m = self.masks[j]
        return w if m is None else w * m

    def _read_stores(self, samples: int, steps: int) -> None:
        """At a run's start: the run's effective weights, one read per store at the device clock
        (PCM: noisy), masked; then the clock advances by ``samples x steps x dt``.  No store: nothing."""
        if self.stores is None:
            return
        for j, (st, m) in enumerate(zip(self.stores, self.masks)):
            r = st.read(self.elapsed_s)
            self.weights[j][...] = r if m is None else r * m
        self.elapsed_s += samples * steps * self.spec.dt_ms / 1000.0

    # --------------------------------------------------------------- updates
    def gradients(self) -> list[np.ndarray]:
        """dL/dW of each incoming projection, (pre_size, n_local), masked (with copies: the addressed copy's)."""
        return [g if m is None else g * m for g, m in zip(self.port_grads[self.port], self.masks)]

    def _update_weights(self, j: int, delta: np.ndarray) -> None:
        """Give projection ``j``'s store the update ``delta`` (masked here, in place) at the device clock."""
        m = self.masks[j]
        if m is not None:
            delta *= m
        self.stores[j].apply(delta, self.elapsed_s)
        if not self._is_pcm(j):
            self.weights[j][...] = self._stored(j)      # digital: deterministic, so current at once

    def _adam_step(self, j: int, g: np.ndarray, lr: float | None = None) -> None:
        """One Adam step of projection ``j`` with gradient ``g`` (its weights' shape and dtype);
        ``lr`` (None: unchanged) times the projection's ``lr_scale`` factor becomes the optimiser's
        rate first.  Float weights are stepped in
        place and masked; with a store the step ``delta = -lr m_hat / (sqrt(v_hat) + eps)`` is
        computed into a zero array and given to :meth:`_update_weights`."""
        w, m, opt = self.weights[j], self.masks[j], self.opts[j]
        if lr is not None:
            opt.lr = lr * self.lr_factors[j]
        if self.stores is None:
            opt.step(w, g)
            if m is not None:
                w *= m
            return
        delta = np.zeros_like(w)
        opt.step(delta, g)
        self._update_weights(j, delta)

    # ------------------------------------------------------------ parameters
    def get_weights(self) -> list[np.ndarray]:
        """The weights held; with a store, the stored weights noise-free now (PCM: drifted), masked."""
        if self.stores is not None:
            return [self._stored(j).astype(self.dtype) for j in range(len(self.stores))]
        return super().get_weights()

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Write new weights; a store programs them (rounded onto its grid, accumulator cleared)."""
        if self.stores is None:
            return super().set_weights(weights)
        for j, (w, new) in enumerate(zip(self.weights, weights)):
            self.stores[j].program(np.asarray(new, np.float64), self.elapsed_s)
            w[...] = self._stored(j)

    def checksum(self) -> int:
        """CRC32 of the weights; with stores, of the stored state (codes and accumulators, or the
        devices' drifted conductances and accumulators): equal on every replica or they diverged."""
        if self.stores is None:
            return super().checksum()
        crc = 0
        for j, st in enumerate(self.stores):
            arrs = (st.conductances(self.elapsed_s), st.accumulator) if self._is_pcm(j) else \
                (st.codes, st.accumulator) + ((st.shifts,) if st.shifts is not None else ())
            for a in arrs:
                crc = zlib.crc32(np.ascontiguousarray(a).tobytes(), crc)
        return crc

    def learning_state(self) -> dict:
        """Weights, Adam moments and step counts, and the counters (for checkpoints); with weight
        stores also each store's :meth:`~spinnray.machine.quant.MixedPrecisionWeights.state` (codes,
        accumulators, devices, random streams: plain numbers, strings and arrays, no objects) and the
        device clock, so that a resume continues bit for bit."""
        out = {"weights": self.get_weights(), "opts": [o.state() for o in self.opts], **super().learning_state()}
        if self.stores is not None:
            out["stores"] = [st.state() for st in self.stores]
            out["elapsed_s"] = self.elapsed_s
        return out

    def load_learning_state(self, state: dict) -> None:
        """Restore what :meth:`learning_state` returned (a state without stores is programmed).

        Stores are given their saved state in place (they were built from the same options); a
        state that does not fit them (other shapes, settings or number of stores) is refused with
        a DataError naming the core and the store, before anything changes."""
        if self.stores is not None and "stores" in state:
            spec = self.spec
            where = f"core {spec.core_id} ({spec.population}[{spec.lo}:{spec.hi}])"
            got, t = state["stores"], state.get("elapsed_s")
            if not isinstance(got, list) or len(got) != len(self.stores):
                raise DataError(f"{where}: {len(got) if isinstance(got, list) else 'no list of'} weight stores "
                                f"in the state; this core has {len(self.stores)}")
            if type(t) is not float or not np.isfinite(t) or t < 0:
                raise DataError(f"{where}: elapsed_s = {t!r}: expected a finite time >= 0 in seconds")
            backup = [st.state() for st in self.stores]
            try:
                for j, (st, s) in enumerate(zip(self.stores, got)):
                    st.load_state(s, f"{where} stores[{j}] ({spec.incoming[j].name})")
            except DataError:
                for st, b in zip(self.stores, backup):      # the ones already loaded go back
                    st.load_state(b)
                raise
            self.elapsed_s = t
            for j, w in enumerate(self.weights):
                w[...] = self._stored(j)
        else:
            self.set_weights(state["weights"])
        for o, s in zip(self.opts, state["opts"]):
            o.load(s)
        super().load_learning_state(state)      # the counters
