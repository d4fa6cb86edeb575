"""Partition -> place -> allocate keys -> route (PACMAN's pipeline, in small).

* **Partition**: every population is cut into contiguous :class:`Slice`\\ s so
  that a slice holds at most ``machine.neurons_per_core`` neurons and the
  bytes its core will really hold (incoming weights, delays, neuron state,
  spike history, key table) fit ``machine.sram_per_pe_bytes``.
* **Place**: slices go onto (chip, PE) in order, filling a chip before the
  next.
* **Keys**: slice ``s`` owns keys ``s << key_bits | local_index``; its routing
  entry is ``(s << key_bits, ~(2**key_bits - 1))``.
* **Route**: each slice that sends has one entry whose destinations are the
  cores holding a post-synaptic slice it really connects to (a masked
  projection with no synapse between two slices is not routed, as SpiNNaker
  prunes empty synaptic blocks).

:func:`check_routes` is the invariant the tests lean on: every key of every
sending slice reaches exactly the cores that need it, and no other key
matches an entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .config import MachineConfig
from .errors import BudgetError, MappingError, RoutingError
from .network import Network, Population, Projection
from .neuron import ALIF, LI, LIF, AnalogSource
from .router import RoutingEntry, RoutingTable

__all__ = ["Slice", "Placement", "Mapping", "map_network", "estimate_core_memory", "check_routes"]

KEY_SPACE_BITS = 32


@dataclass(frozen=True)
class Slice:
    """Neurons ``[lo, hi)`` of one population."""

    population: str
    lo: int
    hi: int

    def __post_init__(self):
        if not 0 <= self.lo < self.hi:
            raise MappingError(f"Slice of {self.population!r}: lo = {self.lo}, hi = {self.hi}; "
                               "expected 0 <= lo < hi")

    @property
    def n(self) -> int:
        return self.hi - self.lo


@dataclass(frozen=True)
class Placement:
    """Where a slice lives: global core id, chip and PE; its key base if it sends."""

    core_id: int
    chip: int
    pe: int
    slice: Slice
    key_base: int | None
    replica: int = 0
    error_key_base: int | None = None   # keys of error events *about* this slice's neurons


@dataclass
class Mapping:
    """The result of mapping a network onto the machine."""

    network: Network
    machine: MachineConfig
    placements: list[Placement]
    key_bits: int
    table: RoutingTable
    memory: list[dict[str, int]]                   # per core, bytes by category (estimate)
    chip_entries: dict[int, int] = field(default_factory=dict)  # routing-table occupancy per chip

    replicas: int = 1

    @property
    def n_cores(self) -> int:
        return len(self.placements)

    def cores_of(self, population: str, replica: int = 0) -> list[Placement]:
        return [p for p in self.placements if p.slice.population == population and p.replica == replica]

    def summary(self) -> dict:
        return {
            "cores": self.n_cores,
            "chips_used": len({p.chip for p in self.placements}),
            "key_bits": self.key_bits,
            "routing_entries": len(self.table.entries),
            "routing_entries_per_chip": {str(k): v for k, v in sorted(self.chip_entries.items())},
            "replicas": self.replicas,
            "slices": {name: [[p.slice.lo, p.slice.hi] for p in self.cores_of(name)]
                       for name, pop in self.network.populations.items()
                       if not isinstance(pop.model, AnalogSource)},
        }


def _state_arrays(model) -> tuple[int, int]:
    """(float arrays, int32 arrays) of neuron state per neuron per sample."""
    if isinstance(model, LIF):
        return 3, 0
    if isinstance(model, ALIF):
        return 3, 1
    if isinstance(model, LI):
        return 2, 0
    return 0, 0


def history_depth(network: Network, post: Population) -> dict[str, int]:
    """Steps of spike history the cores of ``post`` keep per pre population."""
    depth: dict[str, int] = {}
    for proj in network.incoming(post):
        if isinstance(proj.pre.model, AnalogSource):
            continue              # host-written input: no spike history
        depth[proj.pre.name] = max(depth.get(proj.pre.name, 0), proj.max_delay)
    return depth


def estimate_core_memory(network: Network, pop: Population, lo: int, hi: int, dtype: str,
                         batch: int, n_source_slices: int = 0) -> dict[str, int]:
    """Bytes by category that a core holding ``pop[lo:hi]`` will allocate.

    The :class:`~spinnray.core.Core` computes the same categories from the
    arrays it really holds; a test asserts they agree.
    """
    n = hi - lo
    item = np.dtype(dtype).itemsize
    weights = delays = 0
    for proj in network.incoming(pop):
        weights += proj.pre.size * n * item
        if not np.isscalar(proj.delays):
            delays += proj.pre.size * n
    n_float, n_int = _state_arrays(pop.model)
    history = sum(d * batch * network.populations[name].size
                  for name, d in history_depth(network, pop).items())
    analog = sum(p.pre.size for p in network.incoming(pop) if isinstance(p.pre.model, AnalogSource))
    return {
        # host-written analog input, double-buffered per step (the host streams it in)
        **({"input_buffer": 2 * batch * analog * item} if analog else {}),
        "weights": weights,
        "delays": delays,
        "neuron_state": batch * n * (n_float * item + n_int * 4),
        "spike_history": history,
        "key_table": n_source_slices * 4 * 8,   # prefix, population, lo, size (int64)
    }


def _fits(mem: dict[str, int], budget: int) -> bool:
    return sum(mem.values()) <= budget


def _edges(size: int, k: int) -> list[int]:
    return [(i * size) // k for i in range(k + 1)]


class _OverBudget(Exception):
    def __init__(self, population: str, cores: int, message: str):
        super().__init__(message)
        self.population, self.cores, self.message = population, cores, message


def map_network(network: Network, machine: MachineConfig | None = None,
                cores_per_population: int | dict[str, int] | None = None,
                batch: int = 1, replicas: int = 1, error_populations=(),
                learning_bytes=None) -> Mapping:
    """Partition, place, allocate keys and build the routing table.

    ``cores_per_population``: None (as few cores as cap and budget allow), an
    int for every population (clamped to the population size: a core holds at
    least one neuron) or a dict population -> cores.  ``replicas`` copies of
    the whole network are placed one after the other, each with its own keys
    and routes (data parallelism).  Slices of ``error_populations`` get a
    second key block, ``(n_cores + core_id) << key_bits``, for the error
    events sent about their neurons, routed to the core that owns them.
    ``learning_bytes(pop, n) -> dict`` adds a learning rule's per-core state
    to the budget.
    Raises :class:`BudgetError` (population, bytes needed, budget) or
    :class:`MappingError` (cap, machine size, routing-table capacity).
    """
    machine = machine or MachineConfig()
    if not network.populations:
        raise MappingError("the network has no populations")
    if isinstance(cores_per_population, dict):
        unknown = sorted(set(cores_per_population) - set(network.populations))
        if unknown:
            raise MappingError(f"cores_per_population names {unknown[0]!r}; the network has populations "
                               f"{sorted(network.populations)}")
    # Slicing estimates each slice without its key table (its size depends on
    # how the other populations are sliced); the full check below can then
    # refuse a slice, and an automatically sliced population gets one more core.
    more: dict[str, int] = {}
    while True:
        try:
            return _map_once(network, machine, cores_per_population, batch, replicas, error_populations,
                             learning_bytes, more)
        except _OverBudget as e:
            forced = cores_per_population.get(e.population) if isinstance(cores_per_population, dict) \
                else cores_per_population
            if forced is not None or e.cores >= network[e.population].size:
                raise BudgetError(e.message) from None
            more[e.population] = e.cores + 1


def _map_once(network, machine, cores_per_population, batch, replicas, error_populations, learning_bytes,
              more) -> Mapping:
    budget = machine.sram_per_pe_bytes
    cap = machine.neurons_per_core

    # Partition.  Source slices are counted for the key tables after slicing,
    # so slicing uses a first estimate without them and is checked again below.
    slices: list[Slice] = []
    for pop in network.populations.values():
        if isinstance(pop.model, AnalogSource):
            continue              # written by the host into its targets' memory: no core of its own
        want = cores_per_population.get(pop.name) if isinstance(cores_per_population, dict) \
            else cores_per_population
        if want is not None:
            if not isinstance(want, int) or want < 1:
                raise MappingError(f"cores for population {pop.name!r} = {want!r}: expected an int >= 1")
            k = min(want, pop.size)
            if -(-pop.size // k) > cap:
                raise MappingError(
                    f"population {pop.name!r}: {pop.size} neurons on {k} cores is "
                    f"{-(-pop.size // k)} neurons per core, over the cap machine.neurons_per_core = {cap}")
        else:
            k = max(-(-pop.size // cap), more.get(pop.name, 0))
            while k < pop.size and not all(
                    _fits(estimate_core_memory(network, pop, a, b, machine.dtype, batch), budget)
                    for a, b in zip(_edges(pop.size, k)[:-1], _edges(pop.size, k)[1:])):
                k += 1
        e = _edges(pop.size, k)
        slices.extend(Slice(pop.name, a, b) for a, b in zip(e[:-1], e[1:]))

    if not isinstance(replicas, int) or replicas < 1:
        raise MappingError(f"parallel.replicas = {replicas!r}: expected an int >= 1")
    n_cores = len(slices) * replicas
    if n_cores > machine.total_pes:
        raise MappingError(f"the network needs {n_cores} cores ({len(slices)} x {replicas} replicas); the machine "
                           f"has {machine.chips} chips x {machine.pes_per_chip} PEs = {machine.total_pes}")

    # Keys: one block of 2**key_bits per slice that sends (and one per slice
    # that receives error events).
    senders = {p.pre.name for p in network.projections if not isinstance(p.pre.model, AnalogSource)}
    error_populations = set(error_populations)
    if not slices:
        raise MappingError("the network has only AnalogSource populations: nothing to place on cores")
    key_bits = max(1, math.ceil(math.log2(max(s.n for s in slices))))
    blocks = 2 * n_cores if error_populations else n_cores
    if (blocks << key_bits) > 2 ** KEY_SPACE_BITS:
        raise MappingError(f"{blocks} key blocks x 2**{key_bits} keys exceed the 32-bit key space")

    placements = []
    for r in range(replicas):
        for j, s in enumerate(slices):
            i = r * len(slices) + j
            placements.append(Placement(
                i, i // machine.pes_per_chip, i % machine.pes_per_chip, s,
                (i << key_bits) if s.population in senders else None, r,
                ((n_cores + i) << key_bits) if s.population in error_populations else None))

    # Routes.
    mask = (~((1 << key_bits) - 1)) & 0xFFFFFFFF
    entries = []
    for src in placements:
        if src.key_base is None:
            continue
        dests = sorted({dst.core_id
                        for proj in network.outgoing(network[src.slice.population])
                        for dst in placements
                        if dst.replica == src.replica and dst.slice.population == proj.post.name
                        and _connected(proj, src.slice, dst.slice)})
        if dests:
            entries.append(RoutingEntry(src.key_base, mask, tuple(dests)))
    for dst in placements:
        if dst.error_key_base is not None:
            entries.append(RoutingEntry(dst.error_key_base, mask, (dst.core_id,)))
    table = RoutingTable(entries)

    chip_entries: dict[int, int] = {}
    chip_of = {p.core_id: p.chip for p in placements}
    for entry in entries:
        src_chip = chip_of[(entry.key >> key_bits) % n_cores]
        for chip in {src_chip} | {chip_of[d] for d in entry.destinations}:
            chip_entries[chip] = chip_entries.get(chip, 0) + 1
    for chip, used in sorted(chip_entries.items()):
        if used > machine.routing_entries_per_chip:
            raise MappingError(f"chip {chip} needs {used} routing entries; "
                               f"machine.routing_entries_per_chip = {machine.routing_entries_per_chip}")

    # Memory, with the real size of each key table, against the budget.
    memory = []
    for p in placements:
        pop = network[p.slice.population]
        n_src = sum(1 for q in placements
                    if q.replica == p.replica and q.slice.population in history_depth(network, pop))
        mem = estimate_core_memory(network, pop, p.slice.lo, p.slice.hi, machine.dtype, batch, n_src)
        if learning_bytes is not None:
            mem.update(learning_bytes(pop, p.slice.n))
        if not _fits(mem, budget):
            cores_now = sum(1 for q in placements if q.replica == 0 and q.slice.population == pop.name)
            raise _OverBudget(pop.name, cores_now,
                f"population {pop.name!r} slice [{p.slice.lo}, {p.slice.hi}) needs {sum(mem.values())} bytes "
                f"({', '.join(f'{k} {v}' for k, v in mem.items() if v)}); the budget is "
                f"machine.sram_per_pe_bytes = {budget} bytes per core")
        memory.append(mem)

    return Mapping(network, machine, placements, key_bits, table, memory, chip_entries, replicas)


def _connected(proj: Projection, pre: Slice, post: Slice) -> bool:
    if proj.mask is None:
        return True
    return bool(proj.mask[pre.lo:pre.hi, post.lo:post.hi].any())


def check_routes(mapping: Mapping) -> None:
    """Assert the routing invariant; raise :class:`RoutingError` naming the key.

    For every sending slice and every neuron in it, the table delivers the key
    to exactly the cores that hold a post-synaptic slice connected to it; keys
    of a non-sending slice match no entry; no key matches two entries.
    """
    net = mapping.network
    table = mapping.table
    for src in mapping.placements:
        n = src.slice.n
        if src.key_base is None:
            continue
        keys = src.key_base + np.arange(n, dtype=np.uint64)
        want = {dst.core_id
                for proj in net.outgoing(net[src.slice.population])
                for dst in mapping.placements
                if dst.replica == src.replica and dst.slice.population == proj.post.name
                and _connected(proj, src.slice, dst.slice)}
        for key in keys:
            hits = [e for e in table.entries if (int(key) & e.mask) == e.key]
            if len(hits) > 1:
                raise RoutingError(f"key {int(key):#010x} of core {src.core_id} matches {len(hits)} entries")
            got = set(hits[0].destinations) if hits else set()
            if got != want:
                raise RoutingError(f"key {int(key):#010x} of core {src.core_id} ({src.slice.population}"
                                   f"[{src.slice.lo + int(key) - src.key_base}]) reaches cores {sorted(got)}; "
                                   f"expected {sorted(want)}")
    # Error keys about a slice's neurons reach exactly the core that owns it.
    for p in mapping.placements:
        if p.error_key_base is not None:
            keys = p.error_key_base + np.arange(p.slice.n, dtype=np.int64)
            hit = table.lookup(keys.astype(np.uint32))
            if (hit < 0).any() or any(table.entries[h].destinations != (p.core_id,) for h in set(hit.tolist())):
                raise RoutingError(f"error keys of core {p.core_id} do not all reach exactly core {p.core_id}")
    # A block that belongs to a slice that sends nothing is routed nowhere.
    for p in mapping.placements:
        if p.key_base is None:
            key = p.core_id << mapping.key_bits
            if key < 2 ** KEY_SPACE_BITS and table.lookup(np.array([key], np.uint32))[0] >= 0:
                raise RoutingError(f"key {key:#010x} of non-sending core {p.core_id} is routed")
    # Batch lookup agrees with the scalar walk above.
    for e in table.entries:
        idx = table.lookup(np.array([e.key], np.uint32))[0]
        if idx < 0 or table.entries[idx] is not e:
            raise RoutingError(f"lookup of entry key {e.key:#010x} does not return its own entry")
