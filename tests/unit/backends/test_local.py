"""spinnray.backends.local: the backend on its own (cores and routers of a mapping, run round by round,
reports, calls, strictness), and one router per chip or per node in one process gives what one router
gives."""

from __future__ import annotations

import numpy as np
import pytest

from spinnray.backends.local import LocalBackend
from spinnray.config import ClusterConfig, MachineConfig
from spinnray.errors import PacketError
from spinnray.machine.core import Core
from spinnray.mapping import map_network, specs_from_mapping
from spinnray.model.network import Network
from spinnray.model.neurons import LIF, SpikeSource
from spinnray.simulator import Simulator

from helpers import cluster_forward as forward


@pytest.fixture(scope="module")
def one_node():
    """The 4-chip network with one router for the whole machine."""
    return forward("local", ClusterConfig(router_per="node"))


@pytest.mark.parametrize("cluster", [ClusterConfig(), ClusterConfig(nodes=2), ClusterConfig(nodes=3),
                                     ClusterConfig(chips_per_node=1),
                                     ClusterConfig(nodes=2, router_per="node"), ClusterConfig(nodes=3, router_per="node")])
def test_local_routers_identical_to_one_router(one_node, cluster):
    """4 chips, one router per chip (the default) or per node, on 1 to 4 nodes: the same spikes,
    voltages and per-core counters as one router, and the routers' counters add up to its."""
    ref, (ref_cores, ref_routers), _, _ = one_node
    assert len(ref_routers) == 1 and len({c["chip"] for c in ref_cores}) == 4
    assert 0.02 < ref.spikes["hid"].mean() < 0.6 and ref.spikes["out"].any()
    res, (cores, routers), metrics, mapping = forward("local", cluster)
    for name in ref.spikes:
        assert np.array_equal(res.spikes[name], ref.spikes[name]), name
    for name in ref.v:
        assert np.array_equal(res.v[name], ref.v[name]), name
    assert [c["counters"] for c in cores] == [c["counters"] for c in ref_cores]
    assert len(routers) == mapping.routers == (4 if cluster.router_per == "chip" else mapping.nodes) > 1
    one = ref_routers[0]["counters"]
    for key in ("packets_in", "bytes_in", "spike_events_in", "packets_out", "bytes_out", "spike_events_out"):
        assert sum(r["counters"][key] for r in routers) == one[key], key
    merged = {}
    router_of = mapping.router_of()
    for r in routers:                  # every link delivered once, by the router of its destination
        for link, cell in r["counters"]["links"].items():
            assert link not in merged
            dst = int(link.split("->")[1])
            assert router_of[dst] == r["router_id"] and mapping.node_of()[dst] == r["node"]
            merged[link] = cell
    assert merged == one["links"]
    assert [c["node"] for c in cores] == [p.node for p in mapping.placements]


# ------------------------------------------------------------ the backend on its own
STEPS_L, BATCH_L = 30, 2


def _net():
    rng = np.random.default_rng(0)
    net = Network()
    net.population("inp", 8, SpikeSource())
    net.population("hid", 6, LIF(v_th=0.3))
    net.connect("inp", "hid", rng.uniform(0.2, 0.6, (8, 6)), delays=1)
    return net


def _backend(strict=True):
    """A LocalBackend of _net() on 1 + 2 cores, and the source core's input of the run."""
    mapping = map_network(_net(), MachineConfig(), {"hid": 2}, batch=BATCH_L)
    backend = LocalBackend(specs_from_mapping(mapping, BATCH_L), mapping.table, strict)
    x = np.random.default_rng(1).random((STEPS_L, BATCH_L, 8)) < 0.3
    return mapping, backend, {mapping.cores_of("inp")[0].core_id: x}, x


def test_local_backend_runs_its_cores_as_the_simulator_does():
    mapping, backend, inputs, x = _backend()
    got = backend.run(STEPS_L, 1, {pl.core_id: BATCH_L for pl in mapping.placements}, inputs, ("spikes",))
    assert sorted(got) == list(range(mapping.n_cores))
    hid = np.concatenate([got[pl.core_id]["spikes"] for pl in mapping.cores_of("hid")], axis=2)
    with Simulator(_net(), cores_per_population={"hid": 2}, batch_size=BATCH_L) as sim:
        want = sim.run(STEPS_L, {"inp": x}).spikes["hid"]
    assert want.any() and np.array_equal(hid, want)
    cores, routers = backend.reports()
    assert [c["core_id"] for c in cores] == list(range(mapping.n_cores)) and {c["node"] for c in cores} == {0}
    assert len(routers) == 1 and routers[0]["counters"]["spike_events_out"] > 0
    assert backend.events_sent() == sum(c["counters"]["spike_events_sent"] for c in cores) > 0


def test_call_runs_a_core_method_on_the_cores_asked():
    mapping, backend, _, _ = _backend()
    hid = [pl.core_id for pl in mapping.cores_of("hid")]
    got = backend.call(Core.memory, cores=hid[1:])
    assert list(got) == hid[1:] and got[hid[1]] == backend.by_id[hid[1]].memory()
    assert sorted(backend.call(Core.memory)) == list(range(mapping.n_cores))


@pytest.mark.parametrize("strict", [True, False])
def test_a_rejected_frame_fails_a_strict_backend_and_is_counted_by_a_lenient_one(strict):
    mapping, backend, inputs, _ = _backend(strict)
    core = backend.by_id[mapping.cores_of("inp")[0].core_id]
    original = core.run_block
    core.run_block = lambda t0, k: original(t0, k) + [b"garbage"]
    batches = {pl.core_id: BATCH_L for pl in mapping.placements}
    if strict:
        with pytest.raises(PacketError, match="rejected"):
            backend.run(STEPS_L, 1, batches, inputs, ("spikes",))
    else:
        backend.run(STEPS_L, 1, batches, inputs, ("spikes",))
        assert backend.reports()[1][0]["counters"]["rejected"] == STEPS_L
