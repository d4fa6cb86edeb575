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
* **Nodes and routers** (:func:`assign_nodes`): chips go onto cluster nodes
  in contiguous blocks; the cores of a chip always share its node.  Each
  *routing unit* has a router of its own: a chip (``router_per="chip"``, the
  default, as the hardware has) or a whole node (``router_per="node"``).
  :func:`router_tables` splits the routing table into one table per router
  (its own destinations plus links to the other routers), and
  :func:`~spinnray.mapping.routes.check_router_routes` checks that routing
  through them reaches exactly the same cores.

:func:`check_routes` is the invariant the tests lean on: every key of every
sending slice reaches exactly the cores that need it, and no other key
matches an entry.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


from spinnray.config import ROUTER_UNITS, MachineConfig
from spinnray.errors import BudgetError, MappingError
from spinnray.model.network import Network, Projection
from spinnray.machine.router import RoutingEntry, RoutingTable
from spinnray.mapping.specs import Learning, estimate_core_memory, history_depth

__all__ = ["Slice", "Placement", "Mapping", "map_network", "assign_nodes", "router_tables", "ROUTER_UNITS",
           "KEY_SPACE_BITS"]

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
    """Where a slice lives: global core id, chip, PE and cluster node; its key base if it sends."""

    core_id: int
    chip: int
    pe: int
    slice: Slice
    key_base: int | None
    replica: int = 0
    error_key_base: int | None = None   # keys of error events *about* this slice's neurons
    node: int = 0                       # cluster node of the chip (see assign_nodes)


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
    nodes: int = 1                                 # cluster nodes the chips are spread over
    router_per: str = "chip"                       # the routing unit: one router per chip or per node
    _router_tables: dict | None = field(default=None, repr=False, compare=False)

    @property
    def n_cores(self) -> int:
        return len(self.placements)

    def node_of(self) -> dict[int, int]:
        """Core id -> node index."""
        return {p.core_id: p.node for p in self.placements}

    def router_of(self) -> dict[int, int]:
        """Core id -> router index: the rank of its chip among the chips in use (``router_per``
        "chip") or its node (``router_per`` "node").  The routers of a node are consecutive, as
        chips go onto nodes in contiguous blocks."""
        if self.router_per == "node":
            return self.node_of()
        rank = {c: i for i, c in enumerate(sorted({p.chip for p in self.placements}))}
        return {p.core_id: rank[p.chip] for p in self.placements}

    @property
    def routers(self) -> int:
        return max(self.router_of().values(), default=0) + 1

    def router_node(self) -> list[int]:
        """Router index -> node index."""
        node, out = self.node_of(), {}
        for cid, r in self.router_of().items():
            out[r] = node[cid]
        return [out[r] for r in range(len(out))]

    def router_tables(self) -> dict[int, RoutingTable]:
        """One routing table per router (:func:`router_tables`), built once."""
        if self._router_tables is None:
            self._router_tables = router_tables(self)
        return self._router_tables

    def cores_of(self, population: str, replica: int = 0) -> list[Placement]:
        return [p for p in self.placements if p.slice.population == population and p.replica == replica]

    def summary(self) -> dict:
        router_node = self.router_node()
        return {
            "cores": self.n_cores,
            "chips_used": len({p.chip for p in self.placements}),
            "key_bits": self.key_bits,
            "routing_entries": len(self.table.entries),
            "routing_entries_per_chip": {str(k): v for k, v in sorted(self.chip_entries.items())},
            "replicas": self.replicas,
            "slices": {name: [[p.slice.lo, p.slice.hi] for p in self.cores_of(name)]
                       for name, pop in self.network.populations.items()
                       if pop.model.has_core},
            "nodes": self.nodes,
            "node_of_chip": {str(c): n for c, n in sorted({p.chip: p.node for p in self.placements}.items())},
            "cores_per_node": [sum(1 for p in self.placements if p.node == n) for n in range(self.nodes)],
            "router_per": self.router_per,
            "routers": self.routers,
            "node_of_router": router_node,
            "routing_entries_per_router": {str(r): len(t) for r, t in sorted(self.router_tables().items())},
            "routing_entries_per_node": {str(n): sum(len(t) for r, t in self.router_tables().items()
                                                     if router_node[r] == n) for n in range(self.nodes)},
            "populations": self.populations(),
        }

    def populations(self) -> dict[str, dict]:
        """What a reader needs to describe the network: per population its neuron model, neurons,
        cores per replica (0: written by the host), whether it spikes and whom it sends to."""
        net = self.network
        return {name: {"model": pop.model.kind, "neurons": pop.size, "cores": len(self.cores_of(name)),
                       "spiking": pop.model.spiking, "sends_to": [p.post.name for p in net.outgoing(pop)]}
                for name, pop in net.populations.items()}


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
                batch: int = 1, replicas: int = 1, learning: Learning | None = None) -> Mapping:
    """Partition, place, allocate keys and build the routing table.

    ``cores_per_population``: None (as few cores as cap and budget allow), an
    int for every population (clamped to the population size: a core holds at
    least one neuron) or a dict population -> cores.  ``replicas`` copies of
    the whole network are placed one after the other, each with its own keys
    and routes (data parallelism).  ``learning`` (a rule's :class:`Learning`): the
    populations that learn (their cores' memory model) and ``learning.error_populations``,
    whose slices get a
    second key block, ``(n_cores + core_id) << key_bits``, for the error
    events sent about their neurons, routed to the core that owns them.
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
            return _map_once(network, machine, cores_per_population, batch, replicas, learning, more)
        except _OverBudget as e:
            forced = cores_per_population.get(e.population) if isinstance(cores_per_population, dict) \
                else cores_per_population
            if forced is not None or e.cores >= network[e.population].size:
                hint = ("more cores (parallel.cores_per_population)" if e.cores < network[e.population].size
                        else "fewer neurons, inputs or steps")
                raise BudgetError(f"{e.message}: use {hint}, or a smaller batch per core (learning.batch_size, "
                                  "parallel.replicas)") from None
            more[e.population] = e.cores + 1


def _map_once(network, machine, cores_per_population, batch, replicas, learning, more) -> Mapping:
    budget = machine.sram_per_pe_bytes
    cap = machine.neurons_per_core

    # Partition.  Source slices are counted for the key tables after slicing,
    # so slicing uses a first estimate without them and is checked again below.
    slices: list[Slice] = []
    for pop in network.populations.values():
        if not pop.model.has_core:
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
                    _fits(estimate_core_memory(network, pop, a, b, machine.dtype, batch, learning=learning), budget)
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
    senders = {p.pre.name for p in network.projections if p.pre.model.has_core}
    error_populations = set(learning.error_populations) if learning is not None else set()
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
        mem = estimate_core_memory(network, pop, p.slice.lo, p.slice.hi, machine.dtype, batch, n_src, learning)
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


def assign_nodes(mapping: Mapping, nodes: int | None = None, chips_per_node: int | None = None,
                 router_per: str = "chip") -> Mapping:
    """Spread the chips of ``mapping`` over cluster nodes and give each routing unit (``router_per``:
    every chip, or every node) a router; returns a new Mapping.

    The ``C`` chips in use (in chip order, ranks ``0..C-1``) go onto nodes in
    contiguous blocks, and every core of a chip is on its chip's node:

    * neither given: every chip on node 0 (one node, one router);
    * ``chips_per_node = m``: chip rank ``c`` on node ``c // m``, so
      ``ceil(C / m)`` nodes; if ``nodes`` is given too it must equal that;
    * ``nodes = N`` only: chip rank ``c`` on node ``(c * N) // C``: N blocks
      whose sizes differ by at most one chip; needs ``C >= N``.

    ``router_per`` ("chip" or "node", :data:`ROUTER_UNITS`) is what one router
    serves (:meth:`Mapping.router_of`): every chip its own router, as the
    hardware has, or one router for all the chips of a node.  Either gives the
    same results and per-core counters; they differ in the router-to-router
    traffic and in how many routers share a round's work.

    Raises :class:`MappingError` naming the numbers when the chips cannot be
    spread that way (a chip never spans nodes), or when a value is not null or
    an int >= 1, or ``router_per`` is neither unit.
    """
    if router_per not in ROUTER_UNITS:
        raise MappingError(f"cluster.router_per = {router_per!r}: expected one of {list(ROUTER_UNITS)}")
    for name, v in (("cluster.nodes", nodes), ("cluster.chips_per_node", chips_per_node)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise MappingError(f"{name} = {v!r}: expected null or an int >= 1")
    chips = sorted({p.chip for p in mapping.placements})
    rank = {c: i for i, c in enumerate(chips)}
    n_chips = len(chips)
    if chips_per_node is not None:
        n_nodes = -(-n_chips // chips_per_node)
        if nodes is not None and nodes != n_nodes:
            raise MappingError(
                f"cluster.nodes = {nodes} with cluster.chips_per_node = {chips_per_node}: the mapping uses "
                f"{n_chips} chip(s) ({mapping.n_cores} cores, machine.pes_per_chip = {mapping.machine.pes_per_chip}), "
                f"which fill {n_nodes} node(s) at {chips_per_node} per node; set one of the two, or make them agree")
        node_of_chip = {c: rank[c] // chips_per_node for c in chips}
    elif nodes is not None:
        if nodes > n_chips:
            raise MappingError(
                f"cluster.nodes = {nodes}: the mapping uses only {n_chips} chip(s) ({mapping.n_cores} cores, "
                f"machine.pes_per_chip = {mapping.machine.pes_per_chip}) and a chip never spans nodes; "
                f"expected cluster.nodes <= {n_chips} (or lower machine.pes_per_chip to use more chips)")
        n_nodes = nodes
        node_of_chip = {c: (rank[c] * nodes) // n_chips for c in chips}
    else:
        n_nodes = 1
        node_of_chip = {c: 0 for c in chips}
    placements = [dataclasses.replace(p, node=node_of_chip[p.chip]) for p in mapping.placements]
    return dataclasses.replace(mapping, placements=placements, nodes=n_nodes, router_per=router_per,
                               _router_tables=None)


def _entry_sources(mapping: Mapping, entry: RoutingEntry) -> set[int] | None:
    """Cores that send keys of ``entry``: the slice that owns a spike key
    block; None (any core) for an error-key block (error events about a slice
    are sent by the cores above it)."""
    block = entry.key >> mapping.key_bits
    if block < mapping.n_cores and mapping.placements[block].core_id == block \
            and mapping.placements[block].key_base == entry.key:
        return {block}
    return None


def router_tables(mapping: Mapping) -> dict[int, RoutingTable]:
    """The routing table of each router (one per chip or per node, :meth:`Mapping.router_of`),
    from the machine's table.

    For every entry ``(key, mask) -> D`` and router ``r``, ``r``'s table
    holds ``(key, mask) -> D served by r, links`` where ``links`` are the other
    routers serving cores of ``D`` if a core of ``r`` may send the key (the
    owner of a spike key block; any core for error keys), and none otherwise
    (then the entry only serves frames forwarded to ``r``).  An entry with
    neither local destinations nor links is left out.  Entry order is kept
    (first match wins).  With one router this is the machine's table.
    """
    router = mapping.router_of()
    n_routers = max(router.values(), default=0) + 1
    if n_routers == 1:
        return {0: mapping.table}
    tables = {}
    for r in range(n_routers):
        entries = []
        for e in mapping.table.entries:
            sources = _entry_sources(mapping, e)
            sends_here = sources is None or any(router[s] == r for s in sources)
            local = tuple(d for d in e.destinations if router[d] == r)
            links = tuple(sorted({router[d] for d in e.destinations} - {r})) if sends_here else ()
            if local or links:
                entries.append(RoutingEntry(e.key, e.mask, local, links))
        tables[r] = RoutingTable(entries)
    return tables
