"""spinnray.mapping.specs: the memory estimate of every core equals what a real Core holds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spinnray.config import MachineConfig
from spinnray.machine.core import Core
from spinnray.mapping import estimate_core_memory, map_network, specs_from_mapping
from spinnray.model.network import Network
from spinnray.model.neurons import ALIF, SpikeSource

from helpers import held_bytes
from unit.mapping.test_place import random_network, random_parallel


def test_memory_by_hand():
    # in (10) -> h (ALIF 6 on 2 cores) with a mask and per-synapse delays up to 3; h -> h delay 2.
    rng = np.random.default_rng(0)
    net = Network()
    inp = net.population("inp", 10, SpikeSource())
    h = net.population("h", 6, ALIF())
    d = rng.integers(1, 3, (10, 6))
    d[0, 0] = 3
    mask = np.ones((10, 6), bool)
    mask[5:, 3:] = False                                 # masked synapses cost no extra bytes
    net.connect(inp, h, rng.standard_normal((10, 6)), d, mask=mask)
    net.connect(h, h, rng.standard_normal((6, 6)), 2)
    m = map_network(net, MachineConfig(dtype="float64"), cores_per_population={"h": 2}, batch=2)
    want_h = {"weights": (10 * 3 + 6 * 3) * 8, "delays": 10 * 3,
              "neuron_state": 2 * 3 * (3 * 8 + 4), "spike_history": 3 * 2 * 10 + 2 * 2 * 6,
              "key_table": 3 * 32}
    want_in = {"weights": 0, "delays": 0, "neuron_state": 0, "spike_history": 0, "key_table": 0}
    assert m.memory == [want_in, want_h, want_h]
    for spec, mem in zip(specs_from_mapping(m, 2), m.memory):
        assert Core(spec).memory() == held_bytes(Core(spec)) == mem


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seed", range(6))
def test_memory_estimate_equals_the_core(seed, batch, dtype):
    rng = np.random.default_rng(1000 + seed)
    net = random_network(rng)
    machine, cores = random_parallel(rng, net)
    machine = dataclasses.replace(machine, dtype=dtype)
    m = map_network(net, machine, cores, batch=batch)
    specs = specs_from_mapping(m, batch)
    assert [s.core_id for s in specs] == list(range(m.n_cores))
    for spec, pl, mem in zip(specs, m.placements, m.memory):
        core = Core(spec)
        core_mem = core.memory()
        assert core_mem == held_bytes(core) == mem, (pl, core_mem, mem)
        pop = net[pl.slice.population]
        n_src = sum(len(m.cores_of(name)) for name in {q.pre.name for q in net.incoming(pop)})
        assert estimate_core_memory(net, pop, pl.slice.lo, pl.slice.hi, dtype, batch, n_src) == mem
