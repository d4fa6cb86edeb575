"""spinnray.machine.copies: one core object stepping every data-parallel copy of a slice gives what the
copies give run apart (``parallel.copies=false``, as the ray backend runs them): results, every core's and
router's report, and e-prop's sums and updates per copy, bit for bit; a bad frame counts on its own
copy only.  (Whole scenarios: the ``*-copies-*`` cases of tests/golden.py, recorded with the copies apart.)"""

from __future__ import annotations

import numpy as np
import pytest

from spinnray.config import MachineConfig, ParallelConfig
from spinnray.errors import SpinnrayError
from spinnray.machine.core import Core
from spinnray.machine.schedule import TrainStep
from spinnray.rules.learning import LearningCore
from spinnray.simulator import Simulator, poisson_spikes

from helpers import EPropConfig, RecurrentALIFConfig, eprop_net, eprop_trainer, equivalence_network

STEPS = 40


def forward(copies: bool, cores: int, replicas: int, k: int, batch: int, lenient: bool = False):
    sim = Simulator(equivalence_network(), MachineConfig(strict=not lenient),
                    parallel=ParallelConfig(cores_per_population=cores, batch_size=-(-batch // replicas),
                                            replicas=replicas, copies=copies), backend="local")
    x = {"inp": poisson_spikes(60.0, STEPS, batch, 23, 1.0, np.random.default_rng(3))}
    return sim, x


@pytest.mark.parametrize("cores,replicas,k,batch", [(1, 2, 1, 4), (2, 3, 1, 5), (3, 2, 3, 4), (2, 3, 3, 2),
                                                    (1, 4, 1, 3)])
def test_copies_stepped_together_equal_copies_apart(cores, replicas, k, batch):
    """Spikes and voltages, every core's counters and memory, every router's counters: identical,
    for even, uneven and empty shards (batch 2 on 3 copies) and K 1 and 3."""
    out = {}
    for copies in (True, False):
        sim, x = forward(copies, cores, replicas, k, batch)
        res = sim.run(STEPS, x, record=("spikes", "v"), exchange_interval=k)
        out[copies] = res, sim.reports()
        sim.close()
    (a, ra), (b, rb) = out[True], out[False]
    assert sum(int(s.sum()) for s in b.spikes.values()) > 100            # the network is doing something
    for name in b.spikes:
        assert np.array_equal(a.spikes[name], b.spikes[name]), name
    for name in b.v:
        assert np.array_equal(a.v[name], b.v[name]), name
    assert ra[0] == rb[0] and ra[1] == rb[1]


def test_the_copies_are_one_object_per_slice():
    sim, _ = forward(True, 2, 3, 1, 6)
    backend = sim.backend
    assert len(backend.cores) == sim.mapping.n_cores // 3
    assert all(len(c.ports) == 3 for c in backend.cores)
    sim.close()
    sim, _ = forward(False, 2, 3, 1, 6)
    assert len(sim.backend.cores) == sim.mapping.n_cores and all(len(c.ports) == 1 for c in sim.backend.cores)
    sim.close()


def test_a_bad_frame_counts_on_its_own_copy_only():
    """A corrupt frame to copy 1 of a slice: rejected and noted on copy 1, as on its own PE."""
    results = {}
    for copies in (True, False):
        sim, x = forward(copies, 1, 2, 1, 4, lenient=True)
        router = sim.backend.router
        target = next(pl.core_id for pl in sim.mapping.placements if pl.replica == 1 and pl.slice.population == "hid")
        route = router.route

        def corrupt(inbox, route=route, target=target):
            out = route(inbox)
            out[target] = out[target] + [b"\x93\x01\x02"]
            return out

        router.route = corrupt
        sim.run(STEPS, x, record=())
        cores, _ = sim.reports()
        results[copies] = {c["core_id"]: (c["counters"]["rejected"], c["reasons"]) for c in cores}
        sim.close()
    assert results[True] == results[False]
    assert results[True][target][0] == STEPS and "rejected frame" in results[True][target][1][0]
    assert sum(r for r, _ in results[True].values()) == STEPS


T, N_IN, N_OUT, HIDDEN = 15, 5, 3, 12


def eprop_run(copies: bool, machine: MachineConfig, reg: bool):
    """Three copies (shards 2 + 2 + 1) of a 3-core e-prop network: each copy's reduction terms after a
    backward round, and the weights' checksums after two mini-batches."""
    net = eprop_net(RecurrentALIFConfig(hidden=HIDDEN, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0), N_IN, N_OUT,
                    seed=2)
    learn = EPropConfig(batch_size=5, lr=0.01, surrogate="triangle", gamma=0.3,
                        **({"rate_reg": 5.0, "rate_target_hz": 20.0, "feedback": "random"} if reg else {}))
    tr = eprop_trainer(net, learn, machine=machine, hidden_cores=3, replicas=3, copies=copies)
    rng = np.random.default_rng(7)
    try:
        x, y = rng.normal(0, 1, (T, 5, N_IN)), rng.integers(0, N_OUT, 5)
        tr.forward(x, y, train=TrainStep(1.0 / 5, 1))
        ids = sorted(pl.core_id for pl in tr.learners)
        terms = tr.sim.call(LearningCore.reduction_terms, cores=ids)
        for _ in range(2):
            tr.train_batch(rng.normal(0, 1, (T, 5, N_IN)), rng.integers(0, N_OUT, 5))
        return terms, tr.sim.call(Core.checksum), tr.sim.reports()[0]
    finally:
        tr.close()


@pytest.mark.parametrize("machine", [MachineConfig(dtype="float32"), MachineConfig(dtype="float64"),
                                     MachineConfig(weight_bits=4, rounding="stochastic"), MachineConfig(synapse="pcm")],
                         ids=["float32", "float64", "4bit", "pcm"])
@pytest.mark.parametrize("reg", [False, True], ids=["plain", "reg-random"])
def test_eprop_copies_keep_their_sums_apart(machine, reg):
    """Each copy's gradients (and regulariser sums), then the weights after two updates, identical to
    the copies run apart; every copy of a slice holds the same weights."""
    terms_a, crc_a, rep_a = eprop_run(True, machine, reg)
    terms_b, crc_b, rep_b = eprop_run(False, machine, reg)
    assert terms_a.keys() == terms_b.keys()
    for cid in terms_b:
        for p, q in zip(terms_a[cid], terms_b[cid]):
            assert np.array_equal(np.asarray(p), np.asarray(q)), cid
    assert crc_a == crc_b and rep_a == rep_b
    assert any(np.any(np.asarray(t) != 0) for ts in terms_b.values() for t in ts)


def test_copies_refuse_an_update_they_were_not_all_given_alike():
    """The update is taken once for all copies; a copy told other sums (they would diverge apart) is
    an error, and so is telling a copy twice."""
    net = eprop_net(RecurrentALIFConfig(hidden=HIDDEN, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0), N_IN, N_OUT,
                    seed=2)
    tr = eprop_trainer(net, EPropConfig(batch_size=4, lr=0.01), machine=MachineConfig(), hidden_cores=1,
                       replicas=2)
    rng = np.random.default_rng(1)
    try:
        tr.forward(rng.normal(0, 1, (T, 4, N_IN)), rng.integers(0, N_OUT, 4), train=TrainStep(0.25, 1))
        hidden = [pl.core_id for pl in tr.learners if pl.slice.population == "hidden"]
        terms = tr.sim.call(LearningCore.reduction_terms, cores=hidden)
        total = [a + b for a, b in zip(terms[hidden[0]], terms[hidden[1]])]
        tr.sim.call(LearningCore.apply, {hidden[0]: (total, 0.01)}, cores=hidden[:1])
        with pytest.raises(SpinnrayError, match="copies of one slice were given different sums"):
            tr.sim.call(LearningCore.apply, {hidden[1]: ([2 * t for t in total], 0.01)}, cores=hidden[1:])
        with pytest.raises(SpinnrayError, match="apply twice for one update"):
            tr.sim.call(LearningCore.apply, {hidden[0]: (total, 0.01)}, cores=hidden[:1])
    finally:
        tr.close()


def eventprop_pass(case, cores: int, replicas: int, k: int, batch: int, copies: bool, bump: bool = False):
    """One forward and reverse pass of an EventProp case (tests/oracle/eventprop_cases.py): each copy's
    gradients, every core's and router's report, and (``bump``) the weights after a bump of every copy."""
    from oracle.eventprop_cases import T as STEPS_EP, data, simulator
    from spinnray.rules.eventprop.core import EventPropCore

    x, y = data(batch=batch)
    net, sim = simulator(case, cores, replicas, k, batch=batch, copies=copies)
    with sim:
        sim.run(STEPS_EP, {"inp": x}, targets={"out": y})
        sim.backward(scale=1.0 / batch)
        ids = sorted(pl.core_id for pl in sim.mapping.placements if pl.slice.population in ("hid", "out"))
        grads = sim.call(LearningCore.gradients, cores=ids)
        if bump:
            sim.call(EventPropCore.bump, {i: (0.01, np.array([0, 2])) for i in ids}, cores=ids)
        weights = sim.call(Core.get_weights, cores=ids)
        return grads, weights, sim.reports()


@pytest.mark.parametrize("what, k, replicas, batch", [
    ("delays", 2, 3, 5),            # per-synapse delays 2-3: partial sums and errors buffered ahead
    ("ttfs", 1, 3, 5),              # time-to-first-spike loss with the silent surrogate
    ("ttfs-delays", 2, 3, 5),       # copies woken at their own first spikes, sums over delays held per copy
    ("regulariser", 2, 2, 4),       # the hidden spike-count regulariser wakes copies at their own spikes
    ("empty-shard", 1, 3, 2),       # batch 2 on 3 copies: one copy runs no sample
])
def test_eventprop_copies_keep_their_sums_apart(what, k, replicas, batch):
    """EventProp's copies stepped together: each copy's gradient, every core's counters, memory (spike
    records, error buffers) and guarded spikes, every router's counters, identical to the copies apart."""
    from oracle.eventprop_cases import Case

    case = {"delays": Case(d_in=2, d_rec=(2, 3), d_out=(2, 3)),
            "ttfs": Case(loss="wunderlich", silent_ms=10.0),
            "ttfs-delays": Case(loss="wunderlich", d_in=2, d_rec=(2, 3), d_out=(2, 3)),
            "regulariser": Case(d_in=2, d_rec=2, d_out=2, reg=(0.002, 0.001, 2.0)),
            "empty-shard": Case()}[what]
    got = {copies: eventprop_pass(case, 3, replicas, k, batch, copies) for copies in (True, False)}
    (ga, wa, (ca, ra)), (gb, wb, (cb, rb)) = got[True], got[False]
    assert ga.keys() == gb.keys()
    for cid in gb:
        assert all(np.array_equal(p, q) for p, q in zip(ga[cid], gb[cid])), cid
    assert any(np.any(g != 0) for gs in gb.values() for g in gs)
    assert ca == cb and ra == rb
    assert sum(c["counters"]["error_events_sent"] for c in cb) > 0
    if what in ("delays", "ttfs-delays"):
        assert any(c["memory"].get("error_buffers", 0) > 0 for c in cb)


def test_eventprop_copies_bump_once_and_alike():
    """A weight bump given to every copy of a slice acts once on the weights they share (as on each copy
    apart); a copy given another bump, or the same copy twice, is an error (apart they would diverge)."""
    from oracle.eventprop_cases import Case, data, simulator
    from spinnray.rules.eventprop.core import EventPropCore

    a = eventprop_pass(Case(), 2, 3, 1, 5, True, bump=True)
    b = eventprop_pass(Case(), 2, 3, 1, 5, False, bump=True)
    assert all(np.array_equal(p, q) for cid in b[1] for p, q in zip(a[1][cid], b[1][cid]))
    x, y = data(batch=4)
    net, sim = simulator(Case(), 1, 2, 1, batch=4)
    with sim:
        sim.run(x.shape[0], {"inp": x}, targets={"out": y})
        out = [pl.core_id for pl in sim.mapping.placements if pl.slice.population == "out"]
        sim.call(EventPropCore.bump, {out[0]: (0.01, np.array([1]))}, cores=out[:1])
        with pytest.raises(SpinnrayError, match="different bump arguments"):
            sim.call(EventPropCore.bump, {out[1]: (0.01, np.array([2]))}, cores=out[1:])
        with pytest.raises(SpinnrayError, match="bump twice"):
            sim.call(EventPropCore.bump, {out[0]: (0.01, np.array([1]))}, cores=out[:1])
