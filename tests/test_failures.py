"""Nothing silent: malformed frames and failing cores are counted and reported."""

import numpy as np
import pytest

from spinnray.machine import packet
from spinnray.backends import RayBackend
from spinnray.config import MachineConfig
from spinnray.errors import BudgetError, PacketError, SpinnrayError
from spinnray.model.network import Network
from spinnray.model.neurons import LIF, SpikeSource
from spinnray.simulator import Simulator


def small_net():
    rng = np.random.default_rng(0)
    net = Network()
    net.population("inp", 8, SpikeSource())
    net.population("hid", 6, LIF(v_th=0.3))
    net.connect("inp", "hid", rng.uniform(0.2, 0.6, (8, 6)), delays=1)
    return net


def spikes(steps=30):
    return {"inp": np.random.default_rng(1).random((steps, 8)) < 0.3}


def corrupt_first_core(sim, frame):
    """Make core 0 append ``frame`` to what it sends each round (local backend)."""
    core = sim.backend.cores[0]
    original = core.run_block

    def run_block(t0, k):
        return original(t0, k) + [frame]

    core.run_block = run_block


@pytest.mark.parametrize("frame, reason", [
    (b"\x93\x01\x02", "not valid msgpack"),
    (packet.encode(packet.Kind.SPIKE, 0, 0, np.zeros(1, np.uint32), np.zeros(1, np.uint16))[:-2], "msgpack"),
    (packet.encode(packet.Kind.SPIKE, 5, 0, np.zeros(1, np.uint32), np.zeros(1, np.uint16)), "source core 5"),
])
def test_strict_machine_raises_on_rejected_frame(frame, reason):
    with Simulator(small_net()) as sim:
        corrupt_first_core(sim, frame)
        with pytest.raises(PacketError) as e:
            sim.run(30, spikes())
    assert "rejected" in str(e.value) and reason in str(e.value)


def test_lenient_machine_counts_and_keeps_running():
    clean = Simulator(small_net())
    want = clean.run(30, spikes()).spikes["hid"]
    with Simulator(small_net(), MachineConfig(strict=False)) as sim:
        corrupt_first_core(sim, b"garbage")
        got = sim.run(30, spikes()).spikes["hid"]
        m = sim.metrics()
    assert np.array_equal(got, want)               # the good frames still went through
    assert m["traffic"]["rejected"] == 30          # one bad frame per round, every round counted


def test_unroutable_keys_are_dropped_and_reported():
    with Simulator(small_net(), MachineConfig(strict=False)) as sim:
        stray = packet.encode(packet.Kind.SPIKE, 0, 0, np.array([0xFFFF0000], np.uint32), np.zeros(1, np.uint16))
        corrupt_first_core(sim, stray)
        sim.run(10, spikes(10))
        cores, routers = sim.reports()
    assert routers[0]["counters"]["dropped"] == 10
    assert "0xffff0000" in routers[0]["reasons"][0]


def test_budget_error_names_population_bytes_and_budget():
    net = small_net()
    with pytest.raises(BudgetError, match=r"population 'hid'.*needs \d+ bytes.*budget is machine.sram_per_pe_bytes = 100"):
        Simulator(net, MachineConfig(sram_per_pe_bytes=100), cores_per_population=1)


@pytest.mark.ray
def test_ray_core_failure_stops_the_run_with_its_own_error(ray_session):
    """A core that raises makes the run fail with that error, not a round timeout."""
    sim = Simulator(small_net(), backend="ray", timeout_s=300.0)
    try:
        source_core = sim.mapping.cores_of("inp")[0].core_id
        bad = {source_core: np.zeros((30, 1, 3), bool)}       # wrong width for the slice
        with pytest.raises(SpinnrayError, match=r"input spikes of shape \(30, 1, 3\)"):
            sim.backend.run(30, 1, {c: 1 for c in sim.backend.core_ids}, bad, ("spikes",))
        report = ray_session.get(sim.backend.router.report.remote())
        assert "aborted" in report["error"]
        with pytest.raises(SpinnrayError, match="failed earlier"):
            sim.run(30, spikes())
    finally:
        sim.close()
    assert isinstance(sim.backend, RayBackend)


def test_backward_before_forward_is_a_clear_error():
    with Simulator(small_net()) as sim, pytest.raises(SpinnrayError, match="needs a forward run"):
        sim.backward(1.0)
