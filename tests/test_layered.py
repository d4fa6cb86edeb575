"""The layered schedule (``parallel.schedule = layered``) against lockstep.

A feed-forward network runs one exchange round per level of the network
(:meth:`Network.levels`) instead of one per K steps, and the EventProp reverse
pass one round per level from the top.  The promise is that nothing but the
packet counts changes: spikes, recorded v, losses, gradients, trained weights,
guarded-spike counts and the spike/error event counters are bit-identical to
the default lockstep schedule, which is the independent reference here (exact
``np.array_equal``, float32 and float64), for any cores per population and
replicas, on ``local`` and ``ray``.  Also: recurrent networks are refused by
name, a layered run whose buffered input events overflow a core's SRAM raises
BudgetError naming the core, and error frames whose step offsets reach beyond
the run are rejected and counted, never used.
"""

import numpy as np
import pytest

from spinnray.machine import packet
from spinnray.config import MachineConfig
from spinnray.machine.core import Core
from spinnray.data import encode_yin_yang, yin_yang
from spinnray.errors import BudgetError, ConfigError, NetworkError, SpinnrayError
from spinnray.rules.eventprop.core import EventPropCore
from spinnray.model.network import Network
from spinnray.model.neurons import LI, LIF, AnalogSource, SpikeSource
from spinnray.simulator import Simulator, poisson_spikes
from spinnray.machine.schedule import take_errors
from spinnray.rules.learning import LearningCore

from helpers import EventPropConfig, FeedForwardConfig, eventprop_learning, eventprop_trainer, yinyang_net

STEPS = 60
BATCH = 3           # with 2 replicas: shards of 2 and 1, so one replica runs below its mapped batch
N_IN = 13

# Counters that must not depend on the schedule (packets, bytes and packets received do).
EVENT_COUNTERS = ("spike_events_sent", "spike_events_received", "error_events_sent", "error_events_received",
                  "max_events_per_step", "steps", "rejected", "dropped")


# ----------------------------------------------------------------- networks
def ff_network(seed: int = 7, dmin: int = 1) -> Network:
    """inp -> h1 -> h2 -> out (LI) with skips inp -> h2 and h1 -> out.

    Per-synapse delays ``dmin .. dmin+3`` (masked on the input projections);
    the minimum delay is ``dmin``, so K = 1 and K = dmin are both legal.
    Levels: inp 0, h1 1, h2 2, out 3.
    """
    rng = np.random.default_rng(seed)
    net = Network(dt_ms=1.0)
    net.population("inp", N_IN, SpikeSource())
    net.population("h1", 17, LIF(tau_mem_ms=10.0, tau_syn_ms=4.0, v_th=0.5))
    net.population("h2", 11, LIF(tau_mem_ms=12.0, tau_syn_ms=3.0, v_th=0.4))
    net.population("out", 5, LI(tau_mem_ms=12.0, tau_syn_ms=3.0))
    net.connect("inp", "h1", rng.normal(0.4, 0.4, (N_IN, 17)), delays=rng.integers(dmin, dmin + 4, (N_IN, 17)),
                mask=rng.random((N_IN, 17)) < 0.7)
    net.connect("h1", "h2", rng.normal(0.3, 0.3, (17, 11)), delays=dmin + 1)
    net.connect("inp", "h2", rng.normal(0.2, 0.3, (N_IN, 11)), delays=rng.integers(dmin, dmin + 4, (N_IN, 11)),
                mask=rng.random((N_IN, 11)) < 0.5)
    net.connect("h2", "out", rng.normal(0.3, 0.2, (11, 5)), delays=dmin)
    net.connect("h1", "out", rng.normal(0.1, 0.2, (17, 5)), delays=rng.integers(dmin, dmin + 4, (17, 5)))
    return net


def ff_inputs(seed: int, batch: int = BATCH) -> dict:
    return {"inp": poisson_spikes(80.0, STEPS, batch, N_IN, 1.0, np.random.default_rng(seed))}


def forward(schedule: str, cores, k: int, dtype: str = "float32", replicas: int = 1, backend: str = "local",
            dmin: int = 1, machine: MachineConfig | None = None, cluster=None):
    """Two runs (different inputs) on one simulator: the results, the per-core reports after both."""
    with Simulator(ff_network(dmin=dmin), machine or MachineConfig(dtype=dtype), cores_per_population=cores,
                   batch_size=-(-BATCH // replicas), replicas=replicas, exchange_interval=k, schedule=schedule,
                   backend=backend, cluster=cluster) as sim:
        results = [sim.run(STEPS, ff_inputs(seed), record=("spikes", "v")) for seed in (3, 4)]
        return results, sim.reports()[0]


def assert_same(res, ref, what: str) -> None:
    assert sorted(res.spikes) == sorted(ref.spikes) and sorted(res.v) == sorted(ref.v), what
    for name in ref.spikes:
        assert np.array_equal(res.spikes[name], ref.spikes[name]), f"{what}: spikes of {name} differ"
    for name in ref.v:
        assert res.v[name].dtype == ref.v[name].dtype, what
        assert np.array_equal(res.v[name], ref.v[name]), f"{what}: v of {name} differs"


def event_counters(reports: list[dict]) -> list[tuple]:
    return [(r["core_id"], r["population"], *(r["counters"][c] for c in EVENT_COUNTERS)) for r in reports]


def packets(reports: list[dict]) -> int:
    return sum(r["counters"]["packets_sent"] for r in reports)


# ------------------------------------------------------------------- levels
def test_levels_follow_the_longest_spike_path():
    """Skip connections do not lower a level; analog input does not raise one."""
    w = np.ones
    net = Network()
    net.population("input", 4, SpikeSource())
    net.population("hidden1", 3, LIF())
    net.population("hidden2", 3, LIF())
    net.population("output", 2, LI())
    net.population("side", 2, LIF())
    net.population("analog", 2, AnalogSource())
    net.population("fed", 2, LIF())
    # added out of order on purpose: the skips first
    net.connect("hidden1", "output", w((3, 2)))
    net.connect("input", "hidden2", w((4, 3)))
    net.connect("hidden2", "output", w((3, 2)))
    net.connect("hidden1", "hidden2", w((3, 3)))
    net.connect("input", "hidden1", w((4, 3)))
    net.connect("input", "side", w((4, 2)))
    net.connect("analog", "fed", w((2, 2)))          # host-written input: no spike path
    net.connect("analog", "hidden2", w((2, 3)))
    assert net.levels() == {"input": 0, "hidden1": 1, "hidden2": 2, "output": 3, "side": 1, "analog": 0, "fed": 0}
    net.connect("fed", "side", w((2, 2)))
    assert net.levels()["side"] == 1 and net.levels()["fed"] == 0
    net.connect("side", "hidden1", w((2, 3)))   # input -> side -> hidden1: one deeper
    assert net.levels() == {"input": 0, "hidden1": 2, "hidden2": 3, "output": 4, "side": 1, "analog": 0, "fed": 0}


def test_levels_of_a_recurrent_network_name_the_projection():
    net = Network()
    net.population("input", 4, SpikeSource())
    net.population("hidden", 3, LIF())
    net.connect("input", "hidden", np.ones((4, 3)))
    net.connect("hidden", "hidden", np.ones((3, 3)), name="rec")
    with pytest.raises(NetworkError, match=r"projection 'rec' closes a cycle \('hidden' reaches itself\)"):
        net.levels()

    net = Network()
    net.population("input", 4, SpikeSource())
    net.population("a", 3, LIF())
    net.population("b", 3, LIF())
    net.population("c", 3, LIF())
    net.connect("input", "a", np.ones((4, 3)))
    net.connect("a", "b", np.ones((3, 3)))
    net.connect("b", "c", np.ones((3, 3)))
    net.connect("c", "a", np.ones((3, 3)))           # a -> b -> c -> a
    with pytest.raises(NetworkError, match="recurrent") as err:
        net.levels()
    named = [p.name for p in net.projections if f"projection {p.name!r}" in str(err.value)]
    assert len(named) == 1 and named[0] in ("a->b", "b->c", "c->a"), str(err.value)


# ------------------------------------------------------------------ forward
@pytest.fixture(scope="module")
def ff_reference():
    """Lockstep, K = 1, one core per population, float32 and float64, for dmin 1 and 2."""
    ref = {}
    for dmin in (1, 2):
        for dtype in ("float32", "float64"):
            results, _ = forward("lockstep", 1, 1, dtype, dmin=dmin)
            ref[dmin, dtype] = results
    for results in ref.values():      # the comparison means something only if the network is busy
        for res in results:
            for name in ("h1", "h2"):
                assert 0.03 < res.spikes[name].mean() < 0.6, (name, res.spikes[name].mean())
            assert np.abs(res.v["out"]).max() > 0.1
    assert not np.array_equal(ref[1, "float32"][0].v["out"], ref[1, "float64"][0].v["out"].astype(np.float32))
    return ref


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dmin", [1, 2])
@pytest.mark.parametrize("cores, replicas", [(1, 1), (2, 1), (3, 1), (2, 2), (3, 2)])
def test_layered_forward_identical_to_lockstep_local(ff_reference, cores, replicas, dmin, dtype):
    lock1, rep1 = forward("lockstep", cores, 1, dtype, replicas, dmin=dmin)
    lockk, repk = forward("lockstep", cores, dmin, dtype, replicas, dmin=dmin)
    layered, rep_l = forward("layered", cores, 1, dtype, replicas, dmin=dmin)
    what = f"{cores} cores, {replicas} replicas, dmin {dmin}, {dtype}"
    for run, ref in enumerate(ff_reference[dmin, dtype]):
        assert_same(lock1[run], ref, f"lockstep K=1, {what}, run {run}")
        assert_same(lockk[run], ref, f"lockstep K={dmin}, {what}, run {run}")
        assert_same(layered[run], ref, f"layered, {what}, run {run}")
    # same events, far fewer packets: one per sending core and run
    assert event_counters(rep_l) == event_counters(rep1) == event_counters(repk)
    assert sum(r["counters"]["spike_events_sent"] for r in rep_l) > 0
    assert all(r["counters"]["packets_sent"] <= 2 for r in rep_l)
    assert packets(rep_l) < packets(repk) <= packets(rep1)
    assert all("input_events" in r["memory"] for r in rep_l)
    assert not any("input_events" in r["memory"] for r in rep1)


@pytest.mark.ray
def test_layered_forward_on_ray_identical_to_lockstep_and_local(ray_session, ff_reference):
    ray_res, ray_rep = forward("layered", 2, 1, "float32", replicas=2, backend="ray", dmin=2)
    for run, ref in enumerate(ff_reference[2, "float32"]):
        assert_same(ray_res[run], ref, f"ray layered, run {run}")
    _, loc_rep = forward("layered", 2, 1, "float32", replicas=2, dmin=2)
    _, lock_rep = forward("lockstep", 2, 2, "float32", replicas=2, dmin=2)
    assert [r["counters"] for r in ray_rep] == [r["counters"] for r in loc_rep]
    assert [r["memory"] for r in ray_rep] == [r["memory"] for r in loc_rep]
    assert event_counters(ray_rep) == event_counters(lock_rep)
    assert packets(ray_rep) < packets(lock_rep)


def test_layered_forward_over_several_nodes_identical_to_one_node():
    """One router per node: the layered rounds cross nodes router to router as K-step rounds do."""
    from spinnray.config import ClusterConfig

    machine = MachineConfig(pes_per_chip=2)            # 2 cores per chip: the populations span chips
    one, rep1 = forward("lockstep", 2, 1, machine=machine, replicas=2, dmin=2)
    three, rep3 = forward("layered", 2, 1, machine=machine, replicas=2, dmin=2, cluster=ClusterConfig(nodes=3))
    for run, ref in enumerate(one):
        assert_same(three[run], ref, f"layered on 3 nodes, run {run}")
    assert event_counters(rep3) == event_counters(rep1)
    assert len({r["node"] for r in rep3}) == 3


def test_layered_forward_with_analog_input():
    """An AnalogSource has no core and no level; what it writes enters at the same step."""
    rng = np.random.default_rng(11)
    net = Network(dt_ms=1.0)
    net.population("x", 6, AnalogSource())
    net.population("h", 9, LIF(tau_mem_ms=10.0, tau_syn_ms=4.0, v_th=0.3))
    net.population("o", 4, LI(tau_mem_ms=10.0, tau_syn_ms=3.0))
    net.connect("x", "h", rng.normal(0.3, 0.5, (6, 9)))
    net.connect("h", "o", rng.normal(0.4, 0.3, (9, 4)), delays=rng.integers(1, 5, (9, 4)))
    x = rng.normal(0.5, 1.0, (40, 2, 6))
    out = {}
    for schedule in ("lockstep", "layered"):
        with Simulator(net, cores_per_population=2, batch_size=2, schedule=schedule) as sim:
            out[schedule] = sim.run(40, {"x": x}, record=("spikes", "v"))
    assert 0.02 < out["lockstep"].spikes["h"].mean() < 0.7
    assert_same(out["layered"], out["lockstep"], "analog input")


# ------------------------------------------------------------ config errors
def test_layered_refuses_recurrent_networks_and_bad_schedules():
    net = ff_network()
    net.connect("h2", "h1", np.full((11, 17), 0.1), delays=2, name="h2_back_to_h1")
    with pytest.raises(ConfigError, match=r"parallel\.schedule = 'layered'.*projection '(h1->h2|h2_back_to_h1)'"):
        Simulator(net, schedule="layered")
    with Simulator(net) as sim:                       # lockstep runs it
        sim.run(5, {"inp": np.zeros((5, N_IN), bool)})
    with pytest.raises(ConfigError, match=r"parallel\.schedule = 'bogus'"):
        Simulator(ff_network(), schedule="bogus")
    with Simulator(ff_network(), schedule="layered") as sim:
        sim.run(5, {"inp": np.zeros((5, N_IN), bool)})
        with pytest.raises(SpinnrayError, match=r"rounds=.*lockstep"):
            sim.backward(1.0, rounds=1)
        sim.backward(1.0)                             # plain cores: a reverse pass with nothing to do


# ---------------------------------------------------------------- EventProp
NET = FeedForwardConfig(steps=50, hidden=40, w_out_mean=0.6)   # some labels stay silent: the bump fires
MB = 24


def yy_data(n: int, seed: int):
    x, y = yin_yang(n, seed)
    return encode_yin_yang(x, scheme="wunderlich", steps=NET.steps), y


def train(schedule: str, replicas: int = 1, cores=None, dtype: str = "float32", backend: str = "local",
          silent_ms: float = 0.0):
    """Three mini-batches (the last one short): everything the schedule must not change."""
    x, y = yy_data(3 * MB, 42)
    learn = EventPropConfig(batch_size=MB, lr=5e-3, guard=0.3, silent_ms=silent_ms)
    tr = eventprop_trainer(yinyang_net(NET, seed=0), learn, machine=MachineConfig(dtype=dtype),
                          cores_per_population=cores, replicas=replicas, backend=backend, schedule=schedule)
    try:
        out = {"loss": [], "pred": [], "silent": []}
        for first, size in ((0, MB), (MB, MB), (2 * MB, MB - 6)):
            idx = np.arange(first, first + size)
            res = tr.train_batch(x[:, idx], y[idx])
            out["loss"].append(res.outputs["loss"])
            out["pred"].append(res.outputs["pred"])
            out["silent"].append(res.silent["hidden"])
        out["weights"] = [tr.weights(r) for r in range(replicas)]
        out["checksum"] = tr.checksum()
        out["bumps"] = dict(tr.counters.get("weight_bumps", {}))
        cores_rep = tr.sim.reports()[0]
        out["reports"] = cores_rep
        out["guarded"] = [(r["core_id"], r.get("guarded_spikes")) for r in cores_rep]
        out["traffic"] = tr.sim.metrics()["traffic"]
        return out
    finally:
        tr.close()


def assert_same_training(a: dict, b: dict, what: str) -> None:
    for key in ("loss", "pred", "silent"):
        for k, (p, q) in enumerate(zip(a[key], b[key])):
            assert p.dtype == q.dtype and np.array_equal(p, q), f"{what}: {key} of mini-batch {k} differs"
    for r, (wa, wb) in enumerate(zip(a["weights"], b["weights"])):
        for name in wa:
            assert np.array_equal(wa[name], wb[name]), f"{what}: weights {name} of replica {r} differ"
    assert a["checksum"] == b["checksum"], what
    assert a["bumps"] == b["bumps"], what
    assert a["guarded"] == b["guarded"], what
    assert event_counters(a["reports"]) == event_counters(b["reports"]), what


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("replicas, cores", [(1, None), (2, None), (1, 3), (2, 3)])
def test_layered_training_identical_to_lockstep(replicas, cores, dtype):
    lock = train("lockstep", replicas, cores, dtype)
    lay = train("layered", replicas, cores, dtype)
    assert_same_training(lay, lock, f"R={replicas}, cores={cores}, {dtype}")
    # the comparison is not vacuous: weights moved, errors flowed, the guard and the bump were used
    init = yinyang_net(NET, seed=0)
    assert not np.array_equal(lock["weights"][0]["input->hidden"], init.projections[0].weights)
    assert not np.array_equal(lock["weights"][0]["hidden->output"], init.projections[1].weights)
    assert sum(g or 0 for _, g in lock["guarded"]) > 0
    assert lock["bumps"]["output"] > 0
    t_lock, t_lay = lock["traffic"], lay["traffic"]
    assert t_lock["error_events_sent"] == t_lay["error_events_sent"] > 0
    assert t_lock["spike_events_sent"] == t_lay["spike_events_sent"] > 0
    assert packets(lay["reports"]) < packets(lock["reports"]) / 5
    assert t_lay["dropped"] == t_lay["rejected"] == 0


def test_layered_training_identical_with_silent_surrogate():
    """The silent-output surrogate injects lamV at each silent neuron's V_max step."""
    lock = train("lockstep", 2, 3, "float64", silent_ms=5.0)
    lay = train("layered", 2, 3, "float64", silent_ms=5.0)
    assert_same_training(lay, lock, "silent_ms=5")
    assert lock["checksum"] != train("lockstep", 2, 3, "float64")["checksum"]   # the surrogate did something


def deep_eventprop(schedule: str, dtype: str, replicas: int, cores: int, batch: int = 6):
    """inp -> h1 -> h2 -> out with a masked skip h1 -> out, every LIF layer learning:
    h1's cores take error events from several h2 cores and the out core in the same
    reverse step, so the order in which they are summed matters."""
    rng = np.random.default_rng(5)
    net = Network(dt_ms=1.0)
    net.population("inp", 5, SpikeSource())
    for name, n in (("h1", 20), ("h2", 15), ("out", 3)):
        net.population(name, n, LIF(tau_mem_ms=20.0, tau_syn_ms=5.0))
    net.connect("inp", "h1", rng.normal(2.0, 0.8, (5, 20)))
    net.connect("h1", "h2", rng.normal(1.2, 0.6, (20, 15)))
    net.connect("h2", "out", rng.normal(1.0, 0.4, (15, 3)))
    net.connect("h1", "out", rng.normal(0.2, 0.2, (20, 3)), mask=rng.random((20, 3)) < 0.5)
    machine = MachineConfig(dtype=dtype)
    learning = eventprop_learning(net, machine, guard=0.3, lr=1e-3, tau0_ms=0.5, tau1_ms=6.4, alpha=3e-3)
    per = -(-batch // replicas)
    sim = Simulator(net, machine, cores_per_population={"inp": 1, "h1": cores, "h2": cores + 1, "out": 1},
                    batch_size=per, replicas=replicas, learning=learning, schedule=schedule)
    x, y = yin_yang(batch, 42)
    try:
        res = sim.run(40, {"inp": encode_yin_yang(x, scheme="wunderlich", steps=40)}, targets={"out": y})
        sim.backward(1.0 / batch)
        learners = [pl.core_id for pl in sim.mapping.placements if pl.slice.population != "inp"]
        return res, sim.call(LearningCore.gradients, cores=learners), sim.reports()[0]
    finally:
        sim.close()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("replicas, cores", [(1, 1), (2, 2), (1, 3)])
def test_layered_reverse_pass_of_a_deeper_network_with_a_skip(replicas, cores, dtype):
    r0, g0, rep0 = deep_eventprop("lockstep", dtype, replicas, cores)
    r1, g1, rep1 = deep_eventprop("layered", dtype, replicas, cores)
    assert np.array_equal(r0.outputs["loss"], r1.outputs["loss"])
    assert sorted(g0) == sorted(g1)
    for cid in g0:
        for j, (a, b) in enumerate(zip(g0[cid], g1[cid])):
            assert np.array_equal(a, b), f"core {cid}: gradient of incoming projection {j} differs"
    assert event_counters(rep0) == event_counters(rep1)
    assert [r.get("guarded_spikes") for r in rep0] == [r.get("guarded_spikes") for r in rep1]
    h1 = [r for r in rep0 if r["population"] == "h1"]
    assert all(r["counters"]["error_events_received"] > 0 for r in h1)          # errors reach the bottom layer
    assert all(np.count_nonzero(g0[r["core_id"]][0]) > 0 for r in h1)
    assert sum(r["counters"]["error_events_sent"] for r in rep0 if r["population"] == "out") > 0
    assert sum(r["counters"]["error_events_sent"] for r in rep0 if r["population"] == "h2") > 0


@pytest.mark.ray
def test_layered_training_on_ray_identical_to_local(ray_session):
    ray_out = train("layered", 2, None, "float32", backend="ray")
    local = train("layered", 2, None, "float32")
    assert_same_training(ray_out, local, "ray vs local, layered")
    assert [r["counters"] for r in ray_out["reports"]] == [r["counters"] for r in local["reports"]]
    assert ray_out["checksum"] == train("lockstep", 2, None, "float32")["checksum"]


# ------------------------------------------------------------------- budget
def test_layered_input_events_over_budget_raise_budget_error_naming_the_core():
    """Lockstep keeps a ring of max-delay steps; layered keeps every input event
    of the run (8 bytes each): a long busy run fits the first but not the second."""
    net = Network(dt_ms=1.0)
    net.population("inp", 20, SpikeSource())
    net.population("hid", 10, LIF(tau_mem_ms=10.0, tau_syn_ms=4.0))
    net.connect("inp", "hid", np.full((20, 10), 0.1), delays=1)
    machine = MachineConfig(sram_per_pe_bytes=6000)
    x = np.random.default_rng(0).random((200, 20)) < 0.5             # ~2000 events: ~16 kB of input events
    with Simulator(net, machine) as sim:
        sim.run(200, {"inp": x})                                   # lockstep: fits
        assert max(sum(r["memory"].values()) for r in sim.reports()[0]) <= 6000
    with Simulator(net, machine, schedule="layered") as sim:
        sim.run(20, {"inp": x[:20]})                               # a short layered run fits
        hid = next(pl.core_id for pl in sim.mapping.placements if pl.slice.population == "hid")
        # the report shows the run's input events at their peak (freed after the run): 8 bytes an event
        # (sample, neuron) and 4 bytes a step bound
        held = next(r["memory"]["input_events"] for r in sim.reports()[0] if r["core_id"] == hid)
        assert held == 8 * int(x[:20].sum()) + 4 * 21
        with pytest.raises(BudgetError, match=rf"core {hid} \(hid\): the input events of a layered run of 200 "
                                              r"steps make \d+ bytes; the budget is 6000"):
            sim.run(200, {"inp": x})


def test_layered_error_events_over_budget_raise_budget_error_naming_the_core():
    """A layered reverse pass keeps every error event of the run until it starts:
    checked against the core's SRAM like the input events."""
    from dataclasses import replace

    x, y = yy_data(MB, 42)
    learn = EventPropConfig(batch_size=MB, lr=5e-3)
    tr = eventprop_trainer(yinyang_net(NET, seed=0), learn, machine=MachineConfig(), cores_per_population=None,
                          replicas=1, backend="local", schedule="layered")
    try:
        tr.forward(x, y)
        hidden = next(c for c in tr.sim.backend.cores if c.spec.population == "hidden")
        # a budget that holds everything of the forward run, but not the error events on top
        hidden.spec = replace(hidden.spec, budget_bytes=sum(hidden.memory().values()) + 8)
        with pytest.raises(BudgetError, match=rf"core {hidden.id} \(hidden\): the error events of a layered "
                                              rf"reverse pass of {NET.steps} steps make \d+ bytes; the budget is"):
            tr.sim.backward(1.0 / MB)
    finally:
        tr.close()


# ------------------------------------------------------------- error frames
def test_error_frame_beyond_the_span_is_rejected_and_not_used():
    T = NET.steps
    x, y = yy_data(4, 42)
    tr = eventprop_trainer(yinyang_net(NET, seed=0), EventPropConfig(batch_size=4, guard=0.3),
                          machine=MachineConfig(dtype="float64"), cores_per_population=None, replicas=1,
                          backend="local", schedule="layered")
    try:
        tr.forward(x, y)
        cores = tr.sim.backend.cores
        hid = next(c for c in cores if c.spec.population == "hidden")
        out = next(c for c in cores if c.spec.population == "output")
        assert isinstance(hid, EventPropCore) and hid.layered
        t, b, i, _ = (np.asarray(a) for a in hid.own_events)
        late = int(np.argmax(t >= 1))                  # a hidden spike after the bias spike at step 0
        assert t[late] >= 1
        key = hid.spec.error_key_base + int(i[late])

        def frame(offset, value=0.5):
            return packet.encode(packet.Kind.ERROR, out.id, 0, keys=[key], offsets=[offset], batch=[int(b[late])],
                                 payload=[value])

        def reverse(frames):
            hid.begin_backward(T, 0.25)
            hid.deliver_errors(frames, 0, span=T)
            received = len(hid._received[0])
            hid.backward_layer(T)
            return received, [g.copy() for g in hid.gradients()]

        c = hid.counters
        n0, g0 = reverse([])
        assert n0 == 0 and not any(g.any() for g in g0)
        rejected, got = c.rejected, c.error_events_received
        n1, g1 = reverse([frame(int(t[late]))])        # valid: used (the positive control)
        assert n1 == 1 and any(g.any() for g in g1)
        assert c.rejected == rejected and c.error_events_received == got + 1
        for bad in (T, T + 1, 65535):                  # offsets past the run's T steps
            n2, g2 = reverse([frame(bad, 1e3)])
            assert n2 == 0 and all(np.array_equal(p, q) for p, q in zip(g2, g0))
            assert c.rejected == rejected + 1 and c.error_events_received == got + 1
            assert f"max_offset={T - 1}" in hid.reasons[-1] and str(bad) in hid.reasons[-1]
            rejected += 1
        n3, g3 = reverse([frame(T, 1e3), frame(int(t[late]))])   # the bad one is skipped, the good one used
        assert n3 == 1 and all(np.array_equal(p, q) for p, q in zip(g3, g1))
        assert c.rejected == rejected + 1
        n4, _ = reverse([frame(T - 1)])                # the last step of the run is inside the span
        assert n4 == 1 and c.rejected == rejected + 1
    finally:
        tr.close()


def test_spike_frame_beyond_the_run_is_rejected_by_a_layered_core():
    """The forward counterpart on a plain core: offsets are steps of the run, < T."""
    T = 30
    with Simulator(ff_network(), batch_size=2, schedule="layered") as sim:
        sim.run(T, {"inp": np.zeros((T, 2, N_IN), bool)})
        cores = sim.backend.cores
        src = next(c for c in cores if c.spec.population == "inp")
        h1 = next(c for c in cores if c.spec.population == "h1")
        assert type(h1) is Core and h1.layered
        h1.reset(T, 2, layered=True)

        def frame(offset):
            return packet.encode(packet.Kind.SPIKE, src.id, 0, keys=[src.spec.key_base + 3], offsets=[offset],
                                 batch=[1])

        h1.deliver([frame(T)], 0, T)
        assert h1.counters.rejected == 1 and not any(h1._inbox.values())
        assert f"max_offset={T - 1}" in h1.reasons[-1]
        h1.deliver([frame(T - 1)], 0, T)
        assert h1.counters.rejected == 1 and len(h1._inbox["inp"]) == 1
        steps, bb, pre = h1._inbox["inp"][0]
        assert steps.tolist() == [T - 1] and bb.tolist() == [1] and pre.tolist() == [3]
        # error frames are never for a plain core
        err = packet.encode(packet.Kind.ERROR, src.id, 0, keys=[0], offsets=[0], payload=[1.0])
        take_errors(h1, [err], 0, span=T)
        assert h1.counters.rejected == 2
