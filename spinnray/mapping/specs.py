"""From a mapping to what each core is built from: its shape (for the memory budget) and its spec.

:class:`Learning` is what a learning rule asks of the mapping (:mod:`spinnray.rules` builds
it): the typed core spec of every population that learns, and the populations whose neurons
receive error events (they get a second key block).  A typed core spec carries its memory
model (``spec.memory(shape)``) and its core class (``spec.core_class``), so the mapping's
budget check and the core's own account are the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinnray.machine.core import CoreShape, CoreSpec, IncomingSpec, SynapseShape, forward_memory
from spinnray.model.network import Network, Population

__all__ = ["Learning", "history_depth", "core_shape", "core_memory", "estimate_core_memory", "specs_from_mapping"]


@dataclass(frozen=True)
class Learning:
    """Populations that learn (population -> the rule's typed core spec) and the populations
    that receive error events."""

    specs: dict[str, Any] = field(default_factory=dict)
    error_populations: frozenset[str] = frozenset()

    def spec(self, population: str):
        return self.specs.get(population)


def history_depth(network: Network, post: Population) -> dict[str, int]:
    """Steps of spike history the cores of ``post`` keep per pre population."""
    depth: dict[str, int] = {}
    for proj in network.incoming(post):
        if not proj.pre.model.has_core:
            continue              # host-written input: no spike history
        depth[proj.pre.name] = max(depth.get(proj.pre.name, 0), proj.max_delay)
    return depth


def core_shape(network: Network, pop: Population, lo: int, hi: int, dtype: str, batch: int,
               n_sources: int = 0, learning: Learning | None = None) -> CoreShape:
    """The :class:`CoreShape` of a core holding ``pop[lo:hi]`` (as its spec will describe it:
    learning cores keep masks, and error keys of pre-synaptic populations that receive errors)."""
    learns = learning is not None and learning.spec(pop.name) is not None
    errors = learning.error_populations if learning is not None else frozenset()
    incoming = tuple(SynapseShape(p.pre.size, not np.isscalar(p.delays), learns and p.mask is not None,
                                  learns and p.pre.name in errors, not p.pre.model.has_core)
                     for p in network.incoming(pop))
    history = tuple((d, network.populations[name].size) for name, d in history_depth(network, pop).items())
    return CoreShape(pop.model, hi - lo, batch, dtype, incoming, history, n_sources)


def core_memory(shape: CoreShape, population: str, learning: Learning | None = None) -> dict[str, int]:
    """Bytes by category a core of ``shape`` will hold: its rule's memory model, or the forward one."""
    spec = learning.spec(population) if learning is not None else None
    return forward_memory(shape) if spec is None else spec.memory(shape)


def estimate_core_memory(network: Network, pop: Population, lo: int, hi: int, dtype: str, batch: int,
                         n_source_slices: int = 0, learning: Learning | None = None) -> dict[str, int]:
    """Bytes by category that a core holding ``pop[lo:hi]`` will allocate."""
    shape = core_shape(network, pop, lo, hi, dtype, batch, n_source_slices, learning)
    return core_memory(shape, pop.name, learning)


def specs_from_mapping(mapping, batch: int = 1, learning: Learning | None = None) -> list[CoreSpec]:
    """Cut the network's arrays into the per-core specs of ``mapping``; cores of populations
    that learn keep masks and the error keys of their pre-synaptic neurons."""
    net, machine = mapping.network, mapping.machine
    specs = []
    for pl in mapping.placements:
        pop = net[pl.slice.population]
        lo, hi = pl.slice.lo, pl.slice.hi
        rule = learning.spec(pop.name) if learning is not None else None
        learns = rule is not None
        incoming = []
        for proj in net.incoming(pop):
            err_keys = None
            pre_cores = mapping.cores_of(proj.pre.name, pl.replica)
            if learns and pre_cores and all(q.error_key_base is not None for q in pre_cores):
                err_keys = np.zeros(proj.pre.size, np.uint32)
                for q in pre_cores:
                    err_keys[q.slice.lo:q.slice.hi] = q.error_key_base + np.arange(q.slice.n)
            incoming.append(IncomingSpec(
                name=proj.name, pre=proj.pre.name, pre_size=proj.pre.size,
                weights=np.ascontiguousarray(proj.weights[:, lo:hi], dtype=machine.dtype),
                delays=proj.delays if np.isscalar(proj.delays) else np.ascontiguousarray(proj.delays[:, lo:hi]),
                delay_values=tuple(int(d) for d in proj.delay_values()),
                mask=np.ascontiguousarray(proj.mask[:, lo:hi]) if learns and proj.mask is not None else None,
                error_keys=err_keys,
                analog=not proj.pre.model.has_core,
            ))
        depth = history_depth(net, pop)
        sources = tuple((q.core_id, q.slice.population, q.slice.lo, q.slice.hi)
                        for q in mapping.placements if q.replica == pl.replica and q.slice.population in depth)
        specs.append(CoreSpec(
            core_id=pl.core_id, chip=pl.chip, pe=pl.pe, population=pop.name, model=pop.model,
            lo=lo, hi=hi, key_base=pl.key_base, key_bits=mapping.key_bits, dt_ms=net.dt_ms,
            dtype=machine.dtype, batch=batch, budget_bytes=machine.sram_per_pe_bytes,
            incoming=tuple(incoming),
            history={name: (d, net.populations[name].size) for name, d in depth.items()},
            sources=sources, replica=pl.replica, replicas=mapping.replicas, error_key_base=pl.error_key_base,
            learning=rule,
        ))
    return specs
