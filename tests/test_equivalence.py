"""The equivalence contract (DESIGN.md section 3.1).

Same seed -> identical spikes and states for 1, 2, 3 and 5 cores per
population, for K = 1 and K = min delay, on ``local`` and ``ray``; and for the
same mapping, identical counters on both backends.
"""

import numpy as np
import pytest

from spinnray.errors import ConfigError
from spinnray.model.network import Network
from spinnray.model.neurons import ALIF, LI, LIF, SpikeSource
from spinnray.simulator import Simulator, poisson_spikes

STEPS = 120
BATCH = 2
CORES = (1, 2, 3, 5)


def make_network(seed: int = 7) -> Network:
    """Sources, a recurrent LIF layer with per-synapse delays, ALIF and LI readouts.

    Minimum delay 3 steps, so K in {1, 3} are both legal.
    """
    rng = np.random.default_rng(seed)
    net = Network(dt_ms=1.0)
    net.population("inp", 23, SpikeSource())
    net.population("hid", 31, LIF(tau_mem_ms=10.0, tau_syn_ms=4.0, v_th=0.5))
    net.population("ada", 17, ALIF(tau_mem_ms=15.0, tau_adapt_ms=80.0, beta=0.3, v_th=0.4, refractory_steps=2))
    net.population("out", 6, LI(tau_mem_ms=12.0, tau_syn_ms=3.0))
    net.connect("inp", "hid", rng.normal(0.4, 0.4, (23, 31)), delays=rng.integers(3, 7, (23, 31)))
    net.connect("hid", "hid", rng.normal(-0.05, 0.3, (31, 31)), delays=3, mask=rng.random((31, 31)) < 0.4)
    net.connect("inp", "ada", rng.normal(0.5, 0.3, (23, 17)), delays=4)
    net.connect("ada", "hid", rng.normal(0.2, 0.2, (17, 31)), delays=rng.integers(3, 5, (17, 31)))
    net.connect("hid", "out", rng.normal(0.3, 0.2, (31, 6)), delays=3)
    net.connect("ada", "out", rng.normal(0.3, 0.2, (17, 6)), delays=5)
    return net


def make_inputs(seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {"inp": poisson_spikes(60.0, STEPS, BATCH, 23, 1.0, rng)}


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


@pytest.mark.ray
@pytest.mark.parametrize("cores", CORES)
def test_ray_identical_and_counters_equal_local(ray_session, reference, cores):
    ray_results, (ray_cores, ray_routers), _ = run_all("ray", cores)
    for k, res in ray_results.items():
        assert_same(res, reference, f"ray, {cores} cores, K={k}")
    _, (loc_cores, loc_routers), _ = run_all("local", cores)
    assert [c["counters"] for c in ray_cores] == [c["counters"] for c in loc_cores]
    assert [c["memory"] for c in ray_cores] == [c["memory"] for c in loc_cores]
    assert ray_routers[0]["counters"] == loc_routers[0]["counters"]
    assert ray_routers[0]["counters"]["packets_out"] > 0
    assert ray_routers[0]["counters"]["dropped"] == 0 and ray_routers[0]["counters"]["rejected"] == 0


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
