"""spinnray.machine.schedule: drive_lockstep and the rounds of a run, and the layered schedule
(``parallel.schedule = layered``) against lockstep.

drive_lockstep collects every program's frames, routes them and hands each program its own, round
by round, equal to stepping the cores by hand; a program that ends before the others is refused.

A feed-forward network runs one exchange round per level of the network
(:meth:`Network.levels`) instead of one per K steps, and the EventProp reverse
pass one round per level from the top.  The promise is that nothing but the
packet counts changes: spikes, recorded v, losses, gradients, trained weights,
guarded-spike counts and the spike/error event counters are bit-identical to
the default lockstep schedule, which is the independent reference here (exact
``np.array_equal``, float32 and float64), for any cores per population and
replicas, on the local backend (on Ray: tests/integration/test_layered.py).
Recurrent networks are refused by name.
"""

import numpy as np
import pytest

from spinnray.config import MachineConfig
from spinnray.data import encode_yin_yang, yin_yang
from spinnray.errors import ConfigError, SpinnrayError
from spinnray.machine.core import build_core
from spinnray.machine.router import Router
from spinnray.machine.schedule import drive_lockstep, rounds, run_program
from spinnray.mapping import map_network, specs_from_mapping
from spinnray.model.network import Network
from spinnray.model.neurons import LI, LIF, AnalogSource, SpikeSource
from spinnray.rules.learning import LearningCore
from spinnray.simulator import Simulator, poisson_spikes

from helpers import EventPropConfig, FeedForwardConfig, eventprop_learning, eventprop_trainer, yinyang_net

STEPS = 60


BATCH = 3           # with 2 replicas: shards of 2 and 1, so one replica runs below its mapped batch


N_IN = 13


EVENT_COUNTERS = ("spike_events_sent", "spike_events_received", "error_events_sent", "error_events_received",
                  "max_events_per_step", "steps", "rejected", "dropped")


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


# ------------------------------------------------------------ drive_lockstep
def _echo_program(name: str, rounds: int, log: list):
    """A core's program of ``rounds`` rounds: sends ``name:r`` in round r, keeps what it is handed."""
    got = []
    for r in range(rounds):
        got.append((yield [f"{name}:{r}".encode()], r))
        log.append((name, r))
    return name, got


def test_drive_lockstep_collects_routes_and_hands_back_every_round():
    """Every round: both programs' frames are collected first, ``flush`` sees the cores of the round,
    ``route`` gets them all at once, and each program is handed exactly what the route gave it."""
    log, seen, flushed = [], [], []

    def swap(inbox):
        seen.append({cid: list(frames) for cid, frames in inbox.items()})
        return {0: inbox[1] + [b"to-0"], 1: inbox[0]}

    programs = {0: _echo_program("a", 3, log), 1: _echo_program("b", 3, log)}
    results = drive_lockstep(programs, swap, flush=lambda ids: flushed.append(sorted(ids)))
    assert results == {0: ("a", [[b"b:0", b"to-0"], [b"b:1", b"to-0"], [b"b:2", b"to-0"]]),
                       1: ("b", [[b"a:0"], [b"a:1"], [b"a:2"]])}
    assert seen == [{0: [f"a:{r}".encode()], 1: [f"b:{r}".encode()]} for r in range(3)]
    assert flushed == [[0, 1]] * 3
    assert log == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]    # round by round


def test_drive_lockstep_refuses_a_program_that_ends_early():
    programs = {0: _echo_program("a", 2, []), 1: _echo_program("b", 3, []), 2: _echo_program("c", 3, [])}
    with pytest.raises(RuntimeError, match=r"cores \[0\] ended their program while others go on"):
        drive_lockstep(programs, lambda inbox: {cid: [] for cid in inbox})


def test_rounds_cover_the_run_in_steps_of_k():
    assert list(rounds(10, 3)) == [(0, 3), (3, 3), (6, 3), (9, 1)]
    assert list(rounds(6, 3)) == [(0, 3), (3, 3)]
    assert list(rounds(1, 4)) == [(0, 1)]


def test_drive_lockstep_of_two_cores_equals_stepping_them_by_hand():
    """A source core and a LIF core: drive_lockstep over their run_programs records what the same
    two cores record when each round is done by hand (run_block, route, deliver), and the network
    was busy enough for that to mean something."""
    net = Network(dt_ms=1.0)
    net.population("inp", 6, SpikeSource())
    net.population("hid", 4, LIF(tau_mem_ms=5.0, tau_syn_ms=2.0, v_th=0.3))
    net.connect("inp", "hid", np.random.default_rng(0).uniform(0.2, 0.8, (6, 4)), delays=2)
    steps, k, batch = 20, 2, 2
    x = np.random.default_rng(1).random((steps, batch, 6)) < 0.4
    mapping = map_network(net, MachineConfig(dtype="float64"), 1, batch=batch)
    src = mapping.cores_of("inp")[0].core_id
    record = ("spikes", "v")

    def machine():
        cores = {s.core_id: build_core(s) for s in specs_from_mapping(mapping, batch)}
        return cores, Router(mapping.table, sorted(cores), max_offset=k - 1, n_batch=batch)

    cores, router = machine()
    driven = drive_lockstep({cid: run_program(c, steps, k, batch, x if cid == src else None, record)
                             for cid, c in cores.items()}, router.route)

    cores, router = machine()
    for cid, c in cores.items():
        c.reset(steps, batch, x if cid == src else None, record)
    for t0, kk in rounds(steps, k):
        routed = router.route({cid: c.run_block(t0, kk) for cid, c in cores.items()})
        for cid, c in cores.items():
            c.deliver(routed[cid], t0, kk)
    for c in cores.values():
        c.finish()

    assert sorted(driven) == sorted(cores)
    hid = mapping.cores_of("hid")[0].core_id
    assert 0 < driven[hid][0]["spikes"].mean() < 1
    for cid, c in cores.items():
        rec, _, sent = driven[cid]
        assert sorted(rec) == sorted(c.recorded) and sent == c.events_sent()
        for key in rec:
            assert np.array_equal(rec[key], c.recorded[key]), (cid, key)
