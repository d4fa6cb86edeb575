"""spinnray.simulator on the local backend: the equivalence contract (DESIGN.md section 3.1) -- same
spikes and states for any cores per population and K, a batch equal to its samples one at a time --
K checked against the minimum delay, and nothing silent: malformed frames are counted and reported."""

import numpy as np
import pytest

from spinnray.config import MachineConfig, ParallelConfig
from spinnray.errors import BudgetError, ConfigError, PacketError, SpinnrayError
from spinnray.machine import packet
from spinnray.model.network import Network
from spinnray.model.neurons import LIF, SpikeSource
from spinnray.simulator import Simulator

from helpers import (
    EQ_BATCH as BATCH,
    EQ_STEPS as STEPS,
    equivalence_inputs as make_inputs,
    equivalence_network as make_network,
)

CORES = (1, 2, 3, 5)


def run_all(backend: str, cores: int, dtype: str = "float32"):
    """Results for K = 1 and K = 3 on one simulator, plus its reports."""
    from spinnray.config import MachineConfig

    net = make_network()
    sim = Simulator(net, MachineConfig(dtype=dtype), cores_per_population=cores, batch_size=BATCH,
                    backend=backend)
    try:
        results = {k: sim.run(STEPS, make_inputs(), record=("spikes", "v"), exchange_interval=k)
                   for k in (1, 3)}
        return results, sim.reports(), sim.mapping
    finally:
        sim.close()


@pytest.fixture(scope="module")
def reference():
    results, _, _ = run_all("local", 1)
    ref = results[1]
    # The network must be doing something for the comparison to mean anything.
    for name in ("hid", "ada"):
        assert 0.01 < ref.spikes[name].mean() < 0.6, (name, ref.spikes[name].mean())
    return ref


def assert_same(res, ref, what):
    for name in ref.spikes:
        assert np.array_equal(res.spikes[name], ref.spikes[name]), f"{what}: spikes of {name} differ"
    for name in ref.v:
        assert np.array_equal(res.v[name], ref.v[name]), f"{what}: v of {name} differs"


@pytest.mark.parametrize("cores", CORES)
def test_local_identical_for_any_cores_and_k(reference, cores):
    results, _, mapping = run_all("local", cores)
    assert mapping.n_cores == sum(min(cores, p.size) for p in make_network().populations.values())
    for k, res in results.items():
        assert_same(res, reference, f"local, {cores} cores, K={k}")


def test_batch_lockstep_equals_one_sample_at_a_time(reference):
    """B samples in lockstep give each sample exactly what it gets alone."""
    net = make_network()
    x = make_inputs()["inp"]
    with Simulator(net, cores_per_population=2, batch_size=1) as sim:
        for b in range(BATCH):
            alone = sim.run(STEPS, {"inp": x[:, b]}, record=("spikes", "v"))
            for name in reference.spikes:
                assert np.array_equal(alone.spikes[name][:, 0], reference.spikes[name][:, b])
            assert np.array_equal(alone.v["out"][:, 0], reference.v["out"][:, b])


def test_larger_k_than_min_delay_is_a_config_error():
    net = make_network()
    with pytest.raises(ConfigError, match=r"exchange_interval = 4 exceeds the minimum synaptic delay of 3"):
        Simulator(net, exchange_interval=4)
    with Simulator(net) as sim, pytest.raises(ConfigError, match="K <= 3"):
        sim.run(STEPS, make_inputs(), exchange_interval=5)


def test_fewer_rounds_with_larger_k(reference):
    """K = 3 sends one packet per core per round: fewer packets, same events."""
    net = make_network()
    counts = {}
    for k in (1, 3):
        with Simulator(net, cores_per_population=2, batch_size=BATCH, exchange_interval=k) as sim:
            sim.run(STEPS, make_inputs())
            t = sim.metrics()["traffic"]
            counts[k] = (t["packets"], t["spike_events"])
    assert counts[1][1] == counts[3][1] > 0
    assert counts[3][0] < counts[1][0]


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


def test_backward_before_forward_is_a_clear_error():
    with Simulator(small_net()) as sim, pytest.raises(SpinnrayError, match="needs a forward run"):
        sim.backward(1.0)


# ------------------------------------------------------------ how the network is spread
def test_parallel_keywords_become_the_parallel_config():
    with Simulator(small_net(), cores_per_population=2, batch_size=3, exchange_interval=1) as sim:
        assert sim.parallel == ParallelConfig(cores_per_population=2, batch_size=3, exchange_interval=1)
        assert len(sim.mapping.cores_of("hid")) == 2 and sim.batch_size == 3
    with Simulator(small_net(), parallel=ParallelConfig(replicas=2)) as sim:
        assert sim.replicas == 2 and sim.mapping.n_cores == 2 * 2


@pytest.mark.parametrize("kwargs, message", [
    ({"cores_per_population": 0}, "parallel.cores_per_population = 0: expected >= 1"),
    ({"batch_size": "2"}, "parallel.batch_size = '2': expected an integer"),
    ({"replicas": 1.5}, "parallel.replicas = 1.5: expected an integer"),
    ({"schedule": "async"}, "parallel.schedule = 'async': expected one of ['lockstep', 'layered']"),
    ({"cores": 2}, "parallel.cores: unknown key"),
])
def test_parallel_keywords_are_validated_naming_the_key(kwargs, message):
    with pytest.raises(ConfigError) as e:
        Simulator(small_net(), **kwargs)
    assert message in str(e.value)


def test_parallel_and_its_keywords_together_are_refused():
    with pytest.raises(ConfigError, match=r"give parallel= or its fields \['batch_size', 'cores_per_population'\], "
                                          "not both"):
        Simulator(small_net(), parallel=ParallelConfig(), cores_per_population=2, batch_size=2)


def test_unknown_backend_is_refused():
    with pytest.raises(ConfigError, match="backend = 'gpu': expected 'local' or 'ray'"):
        Simulator(small_net(), backend="gpu")
