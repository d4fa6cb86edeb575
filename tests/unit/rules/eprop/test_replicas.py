"""Data-parallel e-prop (spinnray.rules.eprop.core with spinnray.experiments.trainer): R copies of
the model-parallel network, each a shard of the mini-batch, give the update of one copy running the
whole mini-batch in lockstep (float64, relative error <= 1e-12), with the firing-rate regulariser
and random feedback too, for even, uneven and empty shards; copies never diverge, with weight
stores too.  (On Ray and across nodes: tests/integration/test_eprop_replicas.py.)"""

from functools import lru_cache

import numpy as np
import pytest

from spinnray import MachineConfig
from spinnray.errors import SpinnrayError
from spinnray.machine.core import Core
from spinnray.machine.schedule import TrainStep
from spinnray.rules.eprop import RULE
from spinnray.rules.learning import LearningCore, store_summary

from helpers import EPropConfig, RecurrentALIFConfig, eprop_net, eprop_trainer

T, N_IN, N_OUT, HIDDEN, B = 15, 5, 3, 12, 6
REG = {"rate_reg": 5.0, "rate_target_hz": 20.0, "feedback": "random"}
#: (network, learning) options: learning signals only; the regulariser (strong enough to matter) with
#: random feedback; that on 4 LIF + 8 ALIF neurons (two hidden populations) with a refractory period;
#: and recurrent and readout delays of 2 and 3 steps
VARIANTS = {"plain": ({}, {}), "reg-random": ({}, REG), "mix": ({"n_lif": 4, "refractory_steps": 2}, REG),
            "delays": ({"rec_delay": 2, "out_delay": 3}, REG)}
TOL = 1e-12


def rel(a, b) -> float:
    """Largest difference relative to the largest entry (as tests/oracle/test_eprop.py)."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def batch(seed=7, size=B):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (T, size, N_IN)), rng.integers(0, N_OUT, size)


def trainer(replicas, cores, variant="plain", batch_size=B, backend="local", machine=None, cluster=None,
            copies=True):
    net_opts, learn_opts = VARIANTS[variant]
    net = eprop_net(RecurrentALIFConfig(hidden=HIDDEN, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0, **net_opts),
                    N_IN, N_OUT, seed=2)
    learn = EPropConfig(batch_size=batch_size, lr=0.01, surrogate="triangle", gamma=0.3, **learn_opts)
    return eprop_trainer(net, learn, machine=machine or MachineConfig(dtype="float64"), hidden_cores=cores,
                         replicas=replicas, backend=backend, cluster=cluster, copies=copies)


def update(replicas, cores, variant="plain", samples=B, batch_size=B, backend="local", machine=None, cluster=None,
           reports=False):
    """The weight change of one mini-batch of ``samples`` samples, on every replica, and the losses
    (and, with ``reports``, the cores' reports and the replica of each)."""
    x, y = batch(size=samples)
    tr = trainer(replicas, cores, variant, batch_size, backend, machine, cluster)
    try:
        w0 = tr.weights()
        res = tr.train_batch(x, y)
        tr.check_replicas()
        got = [{k: w[k] - w0[k] for k in w0} for w in (tr.weights(r) for r in range(replicas))]
        if reports:
            return got, res.outputs["loss"], tr.sim.reports()[0], {pl.core_id: pl.replica
                                                                   for pl in tr.sim.mapping.placements}
    finally:
        tr.close()
    return got, res.outputs["loss"]


@lru_cache(maxsize=None)
def lockstep(cores, variant, samples=B):
    """One copy running the mini-batch in lockstep: the reference."""
    (dw,), loss = update(1, cores, variant, samples)
    return dw, loss


def assert_same_update(got, want):
    for name in want:
        assert np.abs(want[name]).max() > 1e-4, name          # a real update, which could disagree
        assert rel(got[name], want[name]) <= TOL, (name, rel(got[name], want[name]))


@pytest.mark.parametrize("variant", ["plain", "reg-random"])
@pytest.mark.parametrize("cores", [1, 3, 12])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
def test_replicas_give_the_update_of_one_copy_in_lockstep(replicas, cores, variant):
    """6 samples: shards 6 | 3 + 3 | 2 + 2 + 2 | 2 + 2 + 1 + 1."""
    want, loss = lockstep(cores, variant)
    dws, got_loss = update(replicas, cores, variant)
    np.testing.assert_allclose(got_loss, loss, rtol=TOL)
    for dw in dws:                                            # every copy took the same step
        assert_same_update(dw, want)


@pytest.mark.parametrize("variant,cores,replicas", [("mix", 3, 2), ("mix", 12, 4), ("delays", 3, 3)])
def test_mix_and_delays_replicas_give_the_update_of_one_copy(variant, cores, replicas):
    """Two hidden populations (LIF and ALIF, each its cores and its regulariser) with refractory
    neurons; recurrent and readout delays above one step."""
    want, loss = lockstep(cores, variant)
    dws, got_loss = update(replicas, cores, variant)
    np.testing.assert_allclose(got_loss, loss, rtol=TOL)
    for dw in dws:
        assert_same_update(dw, want)


@pytest.mark.parametrize("replicas,samples", [(4, 2), (3, 4)])
def test_short_mini_batch_with_empty_shards_is_exact(replicas, samples):
    """The last mini-batch of an epoch can be short: 2 samples on 4 replicas (1 + 1 + 0 + 0), 4 on
    3 (2 + 1 + 1); with the regulariser the rate is still the batch's."""
    want, loss = lockstep(3, "reg-random", samples)
    dws, got_loss = update(replicas, 3, "reg-random", samples)
    np.testing.assert_allclose(got_loss, loss, rtol=TOL)
    for dw in dws:
        assert_same_update(dw, want)


def per_slice(tr, method):
    """``method`` on every learning core, summed per slice over the replicas (in replica order)."""
    got = tr.sim.call(method, cores=[pl.core_id for pl in tr.learners])
    out: dict = {}
    for pl in sorted(tr.learners, key=lambda p: p.replica):
        key = (pl.slice.population, pl.slice.lo)
        out[key] = [g.copy() for g in got[pl.core_id]] if key not in out else \
            [a + g for a, g in zip(out[key], got[pl.core_id])]
    return out


def test_regulariser_needs_the_whole_batch_rate():
    """The regulariser's gradient is not a sum over samples: summing each copy's own gradient
    (its rate) is measurably wrong, summing the reduction terms is right -- so the test above
    could fail."""
    x, y = batch()
    grads = {}
    for replicas in (1, 2):
        tr = trainer(replicas, 3, "reg-random")
        try:
            tr.forward(x, y, train=TrainStep(1.0 / B, 1))
            grads[replicas] = per_slice(tr, LearningCore.gradients)
            terms = per_slice(tr, LearningCore.reduction_terms)
            first = {(c.spec.population, c.spec.lo): c for c in tr.sim.backend.cores
                     if c.learns and c.spec.replica == 0}
            assert all(len(terms[k]) == len(c.weights) + (2 if k[0] == "hidden" else 0)   # + traces, spike counts
                       for k, c in first.items())
            grads[replicas, "reduced"] = {k: c._from_terms(terms[k]) for k, c in first.items()}
        finally:
            tr.close()
    naive = max(rel(a, b) for k in grads[1] for a, b in zip(grads[2][k], grads[1][k]))
    reduced = max(rel(a, b) for k in grads[1] for a, b in zip(grads[2, "reduced"][k], grads[1][k]))
    assert naive > 1e-3 and reduced <= TOL, (naive, reduced)


@pytest.mark.parametrize("machine", [MachineConfig(), MachineConfig(weight_bits=4, rounding="stochastic"),
                                     MachineConfig(weight_bits=8, weight_range=0.25, weight_range_recurrent=0.25,
                                                   weight_range_growth=16),
                                     MachineConfig(synapse="pcm")], ids=["float32", "4bit", "4bit-widening", "pcm"])
def test_replicas_never_diverge(machine):
    """Float32, 4-bit stochastic rounding and PCM (noise, drift on the device clock): 3 copies with
    shards 2 + 2 + 1 and a short last mini-batch hold identical weights after every mini-batch."""
    rng = np.random.default_rng(11)
    tr = trainer(3, 3, "reg-random", batch_size=5, machine=machine, copies=False)    # copies apart: can diverge
    try:
        w0 = tr.weights()
        for size in (5, 5, 5, 2):
            tr.train_batch(rng.normal(0, 1, (T, size, N_IN)), rng.integers(0, N_OUT, size))
            tr.check_replicas()
            assert all(len(crcs) == 3 for crcs in tr.checksums().values())
        assert not np.array_equal(tr.weights()["input->hidden"], w0["input->hidden"])
        if machine.weight_range_growth:             # the grids widened during training, on every copy alike
            assert sum(s["widened"] for s in store_summary(tr.sim.reports()[0]).values()) > 0
        # and the check can fail: one copy's core given other weights
        core = next(pl for pl in tr.learners if pl.replica == 2)
        w = tr.sim.call(Core.get_weights, cores=[core.core_id])[core.core_id]
        tr.sim.call(Core.set_weights, {core.core_id: ([a * 1.5 for a in w],)}, cores=[core.core_id])
        with pytest.raises(SpinnrayError, match="replicas diverged"):
            tr.check_replicas()
    finally:
        tr.close()


def test_reduced_terms_of_the_wrong_shape_are_refused():
    x, y = batch()
    tr = trainer(2, 1, "reg-random")
    try:
        tr.forward(x, y, train=TrainStep(1.0 / B, 1))
        hidden = next(c for c in tr.sim.backend.cores if c.spec.population == "hidden")
        terms = hidden.reduction_terms()
        with pytest.raises(SpinnrayError, match=rf"core {hidden.id}: reduced terms of shapes .*; expected "):
            hidden.apply(terms[:-1], 0.01)                  # the spike counts missing
    finally:
        tr.close()


def test_metrics_describe_one_copy():
    """hidden_cores and training_state_bytes of one copy: as one copy mapped for the shard (2 samples)."""
    tr = trainer(3, 4)
    try:
        cores, _ = tr.sim.reports()
        got = RULE.metrics(tr, cores)
    finally:
        tr.close()
    one = trainer(1, 4, batch_size=B // 3)
    try:
        want = RULE.metrics(one, one.sim.reports()[0])
    finally:
        one.close()
    assert got == want and got["hidden_cores"] == 4
