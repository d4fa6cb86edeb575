"""Low-precision and PCM weight storage of the learning cores (e-prop and EventProp), written once.

Both learning cores (:class:`~spinnray.rules.eprop.core.EPropCore`,
:class:`~spinnray.rules.eventprop.core.EventPropCore`) keep their incoming weights,
their gradients and one Adam optimiser per projection; :class:`WeightStoreMixin`
holds what they do with them alike.

Weight storage (``spec.learning["weight_store"]``, the dict of
:func:`weight_store_options`, from ``machine.weight_bits``, ``rounding``,
``accumulate``, ``transfer``, ``weight_max``, ``weight_range``,
``weight_range_scope``, ``synapse``, ``pcm``, ``weight_seed``).  Absent (or
None) the core keeps float weights and Adam updates them in place.  Given, each
incoming projection's slice lives in a :mod:`spinnray.machine.quant` store:

* ``synapse = ideal``: :class:`~spinnray.machine.quant.MixedPrecisionWeights` with
  ``weight_bits`` per weight on the grid ``k weight_max / (2^(bits-1) - 1)``,
  saturating at ``+-weight_max``; with ``accumulate`` a float32 accumulator keeps
  the updates not yet worth a level;
* ``synapse = pcm``: :class:`~spinnray.machine.quant.PCMWeights`, differential PCM pairs.

The forward (and reverse) pass uses the *effective* weights, read from the
store when a run starts (:meth:`WeightStoreMixin._read_stores`: one read per
run, PCM with fresh read noise, at the core's device clock ``elapsed_s``),
times the projection's mask; the clock then advances by ``samples x T x dt``
(each core says which ``samples``).  An update ``delta`` (Adam's step
``-lr m_hat / (sqrt(v_hat) + eps)`` computed into a zero array, or an EventProp
weight bump) is masked and given to ``store.apply(delta, elapsed_s)``
(:meth:`WeightStoreMixin._update_weights`); a digital store is deterministic, so
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

import numpy as np

from spinnray.errors import ConfigError, DataError
from spinnray.machine.quant import PCMParams, make_weight_store

__all__ = ["PCM_BYTES_PER_WEIGHT", "WeightStoreMixin", "weight_store_bytes", "weight_store_options"]

#: bytes per weight of the PCM model's device state: two devices x (G, t_p, nu), float32 each
PCM_BYTES_PER_WEIGHT = 24


def weight_store_options(machine, network) -> dict | None:
    """``learning["weight_store"]`` for the learning cores from ``machine`` (a MachineConfig).

    None when the machine stores float weights (``weight_bits = 32``, ``synapse = ideal``).
    Otherwise a dict of the ``machine.*`` weight options in which ``weight_max`` maps every
    projection name to its range: ``machine.weight_max``, or when that is null
    ``machine.weight_range x`` the largest |initial weight| (1.0 if all are zero) of

    * ``weight_range_scope = population`` (default): all projections into the same population,
      so a core's input and recurrent weights share one grid (one fixed-point format per PE);
    * ``weight_range_scope = projection``: the projection alone.

    ``machine.weight_ranges`` (projection name -> factor) replaces ``weight_range`` for the
    projections it names, written ``pre->post`` or, on the command line where Hydra takes no
    ``->`` in keys, ``pre_to_post`` (an unknown name is a ConfigError listing the projections).

    The range covers the whole projection, so every core holding a slice uses the same grid.
    A projection initialised much smaller than its neighbours (recurrent weights) grows during
    training far past its own initial peak (about 10x on the keyword task, bench/RESULTS.md);
    a per-projection range then saturates it.
    """
    ws = getattr(machine, "weight_store", None)
    if ws is None:
        return None
    factor = float(ws.get("weight_range", 2.0))
    scope = ws.get("weight_range_scope", "population")
    peaks = {p.name: float(np.abs(p.weights).max()) if p.weights.size else 0.0 for p in network.projections}
    if scope == "population":
        into: dict[str, float] = {}
        for p in network.projections:
            into[p.post.name] = max(into.get(p.post.name, 0.0), peaks[p.name])
        peaks = {p.name: into[p.post.name] for p in network.projections}
    factors = {k.replace("_to_", "->"): v for k, v in (ws.get("weight_ranges") or {}).items()}   # CLI-safe names
    unknown = sorted(set(factors) - set(peaks))
    if unknown:
        raise ConfigError(f"machine.weight_ranges: no projection named {unknown[0]!r}; this network's projections "
                          f"are {sorted(peaks)}")
    ranges = {}
    for p in network.projections:
        peak, f = peaks[p.name], float(factors.get(p.name, factor))
        ranges[p.name] = float(ws["weight_max"]) if ws["weight_max"] is not None else (f * peak if peak > 0 else 1.0)
    return dict(ws, weight_max=ranges)


def _store_bytes(weights: int, ws: dict | None) -> dict[str, int]:
    """``weights`` and ``weight_accumulator`` bytes of a store of ``weights`` weights."""
    if ws is None:
        return {}
    if ws.get("synapse", "ideal") == "pcm":
        return {"weights": PCM_BYTES_PER_WEIGHT * weights, "weight_accumulator": 4 * weights}
    bits = int(ws["weight_bits"])
    out = {"weights": -(-weights * bits // 8)}
    if ws.get("accumulate", True) and bits < 32:
        out["weight_accumulator"] = 4 * weights
    return out


def weight_store_bytes(network, pop, n: int, weight_store: dict | None) -> dict[str, int]:
    """``weights`` and ``weight_accumulator`` bytes of the stores of a core holding ``n`` neurons
    of ``pop``: summed over its incoming projections, each packed separately ({} for None)."""
    out: dict[str, int] = {}
    if weight_store is not None:
        for p in network.incoming(pop):
            for k, v in _store_bytes(p.pre.size * n, weight_store).items():
                out[k] = out.get(k, 0) + v
    return out


class WeightStoreMixin:
    """Weights, their Adam optimisers and optional stores of a learning core (module docstring).

    Mixed in before :class:`~spinnray.machine.core.Core` (``class C(WeightStoreMixin, Core)``); the core
    sets ``self.grads``, ``self.opts`` (one :class:`~spinnray.rules.eventprop.numerics.Adam` per projection) and
    ``self.masks`` (None or a 0/1 array per projection) in ``_init_learning`` and then calls
    :meth:`_init_stores`.  ``self.stores`` is None (float weights) or one store per projection;
    ``self.elapsed_s`` is the device clock in seconds.
    """

    # ------------------------------------------------------------------ state
    def _init_stores(self, ws: dict | None) -> None:
        """One weight store per incoming projection; None = float weights."""
        self.stores = None
        self.elapsed_s = 0.0            # emulated time of this core's device clock (s)
        if ws is None:
            return
        spec = self.spec
        pcm = ws.get("pcm")
        if isinstance(pcm, dict):
            pcm = PCMParams(**pcm)
        ranges = ws.get("weight_max")
        cols = np.arange(spec.lo, spec.hi)
        self.stores = []
        for j, (inc, w) in enumerate(zip(spec.incoming, self.weights)):
            w_max = ranges.get(inc.name) if isinstance(ranges, dict) else ranges
            seed = np.random.SeedSequence(int(ws.get("seed", 0)), spawn_key=(zlib.crc32(inc.name.encode()),))
            self.stores.append(make_weight_store(
                w.astype(np.float64), weight_bits=int(ws.get("weight_bits", 32)), rounding=ws.get("rounding", "nearest"),
                synapse=ws.get("synapse", "ideal"), w_max=w_max, accumulate=bool(ws.get("accumulate", True)),
                transfer=ws.get("transfer", "round"),
                pcm=pcm, seed=seed, t_s=0.0, columns=cols))
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
        """dL/dW of each incoming projection, (pre_size, n_local), masked."""
        return [g if m is None else g * m for g, m in zip(self.grads, self.masks)]

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
        ``lr`` (None: unchanged) becomes the optimiser's rate first.  Float weights are stepped in
        place and masked; with a store the step ``delta = -lr m_hat / (sqrt(v_hat) + eps)`` is
        computed into a zero array and given to :meth:`_update_weights`."""
        w, m, opt = self.weights[j], self.masks[j], self.opts[j]
        if lr is not None:
            opt.lr = lr
        if self.stores is None:
            opt.step(w, g)
            if m is not None:
                w *= m
            return
        delta = np.zeros_like(w)
        opt.step(delta, g)
        self._update_weights(j, delta)

    # ---------------------------------------------------------------- memory
    def memory(self) -> dict[str, int]:
        """The core's memory with the stores' bytes as ``weights`` (and ``weight_accumulator``),
        plus ``gradients`` and the Adam moments (``optimizer``)."""
        mem = super().memory()
        if getattr(self, "stores", None) is not None:
            mem["weights"] = sum(st.stored_bytes for st in self.stores)
            acc = sum(st.accumulator_bytes for st in self.stores)
            if acc:
                mem["weight_accumulator"] = acc
        mem["gradients"] = sum(g.nbytes for g in self.grads)
        mem["optimizer"] = sum(o.m.nbytes + o.v.nbytes for o in self.opts)
        return mem

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
            arrs = (st.conductances(self.elapsed_s), st.accumulator) if self._is_pcm(j) else (st.codes, st.accumulator)
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
