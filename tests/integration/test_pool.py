"""Core actors reused through the pool (spinnray.backends.pool): a backend that closed cleanly hands its
actors, emptied, to the next backend of the process, which starts no process and computes exactly what new
actors compute; a backend that failed kills its actors instead."""

import time

import numpy as np
import pytest

from spinnray.backends.ray import core_pool
from spinnray.errors import SpinnrayError
from spinnray.simulator import Simulator

import helpers
from unit.test_simulator import small_net

pytestmark = pytest.mark.ray


def _forward(backend="ray"):
    """The equivalence network's run on 8 cores: its results, core counters, and the actors' pids."""
    sim = Simulator(helpers.equivalence_network(), backend=backend, cores_per_population=2,
                    batch_size=helpers.EQ_BATCH)
    try:
        res = sim.run(helpers.EQ_STEPS, helpers.equivalence_inputs(), record=("spikes", "v"))
        cores, _ = sim.reports()
        pids = {c["process"]["pid"] for c in cores} if backend == "ray" else set()
        return res, [c["counters"] for c in cores], [c["memory"] for c in cores], pids
    finally:
        sim.close()


def _same(a, b):
    assert a.spikes.keys() == b.spikes.keys() and a.v.keys() == b.v.keys()
    assert all(np.array_equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
    assert all(np.array_equal(a.v[k], b.v[k]) for k in a.v)


def _eprop_weights():
    """Two e-prop training steps (Adam state, eligibility traces and gradients live in the cores)."""
    from integration.test_cluster import eprop_steps, recurrent_trainer
    tr = recurrent_trainer("ray")
    try:
        return eprop_steps(tr)["weights"]
    finally:
        tr.close()


def test_reused_actors_compute_what_new_ones_do_and_start_no_process(ray_session):
    pool = core_pool()
    pool.drain()                                            # from here every actor is new, then reused
    fresh, fresh_counters, fresh_memory, fresh_pids = _forward()
    assert len(fresh_pids) == 8 and pool.idle_on(ray_session.get_runtime_context().get_node_id()) == 8
    trained_fresh = _eprop_weights()                       # 4 of the 8 actors now held learning cores
    started = pool.started
    again, counters, memory, pids = _forward()
    trained_again = _eprop_weights()
    assert pool.started == started                          # a second and third Simulator: no new actor...
    assert pids == fresh_pids                               # ...the same 8 processes
    _same(again, fresh)                                     # identical to new actors, and to local
    _same(_forward("local")[0], fresh)
    assert counters == fresh_counters and memory == fresh_memory   # nothing counted twice
    assert len(trained_fresh) == len(trained_again)
    for a, b in zip(trained_fresh, trained_again):
        assert np.array_equal(a, b)


def test_a_pooled_actor_holds_nothing_of_its_last_run(ray_session):
    pool = core_pool()
    _forward()
    node = ray_session.get_runtime_context().get_node_id()
    idle = list(pool.idle[node])
    assert idle and ray_session.get([a.held.remote() for a in idle]) == [[]] * len(idle)
    with pytest.raises(Exception, match="NoneType"):       # no core left to report on
        ray_session.get(idle[0].report.remote())


def _dies(ray, actor) -> bool:
    """Whether ``actor`` is (soon) dead: ``ray.kill`` acts asynchronously, so a call made just after it
    may still be answered; asked again until it fails (at most 60 times)."""
    for _ in range(60):
        try:
            ray.get(actor.pid.remote(), timeout=60)
        except ray.exceptions.RayActorError:
            return True
        time.sleep(0.5)
    return False


def test_a_failed_backend_kills_its_actors_and_the_pool_replaces_dead_ones(ray_session):
    pool = core_pool()
    node = ray_session.get_runtime_context().get_node_id()
    sim = Simulator(small_net(), backend="ray", timeout_s=300.0)
    actors = list(sim.backend.actors.values())
    try:
        source = sim.mapping.cores_of("inp")[0].core_id
        with pytest.raises(SpinnrayError, match=r"input spikes of shape"):
            sim.backend.run(30, 1, {c: 1 for c in sim.backend.core_ids},
                            {source: np.zeros((30, 1, 3), bool)}, ("spikes",))   # wrong width: the core raises
    finally:
        sim.close()
    assert not set(map(id, actors)) & set(map(id, pool.idle.get(node, [])))
    assert all(_dies(ray_session, a) for a in actors)        # killed, not pooled
    # an idle actor that dies in the pool is replaced by a new one when it is next taken
    _forward()
    victim = pool.idle[node][0]
    ray_session.kill(victim)
    assert _dies(ray_session, victim)                       # dead before it is taken again
    started = pool.started
    res = _forward()
    assert pool.started == started + 1 and len(res[3]) == 8
    _same(res[0], _forward("local")[0])


LEAN_NOT = ("hydra", "omegaconf", "matplotlib", "spinnray.report", "spinnray.experiments", "spinnray.data",
            "spinnray.simulator", "spinnray.nir")


def _heavy(mods, names):
    return sorted(m for m in mods if any(m == n or m.startswith(n + ".") for n in names))


def test_a_core_actor_loads_only_what_a_core_needs(ray_session):
    """No Hydra, plotting, report, experiment, data, simulator or config module in a core actor's process (the
    package root imports the simulator and the configs lazily); a forward core not the mapping nor the configs
    either (a learning core does: its rule's package defines the mapping's Learning spec and its typed config)."""
    pool = core_pool()
    pool.drain()
    _forward()
    idle = list(pool.idle[ray_session.get_runtime_context().get_node_id()])

    def modules():
        return ray_session.get([a.__ray_call__.remote(lambda self: sorted(__import__("sys").modules)) for a in idle])

    forward = modules()
    assert all("spinnray.machine.core" in mods for mods in forward)
    assert [_heavy(mods, LEAN_NOT + ("spinnray.mapping", "spinnray.config")) for mods in forward] == [[]] * len(idle)
    _eprop_weights()
    learned = modules()
    assert any("spinnray.rules.eprop.core" in mods for mods in learned)          # an e-prop core was loaded
    assert [_heavy(mods, LEAN_NOT) for mods in learned] == [[]] * len(idle)


def test_a_placement_timeout_is_a_mapping_error_with_the_numbers_and_pools_nothing(ray_session):
    """10 ms cannot start 8 new worker processes: the start-up stops with the timeout named, and the
    actors it started are killed, not pooled."""
    from spinnray.config import ClusterConfig
    from spinnray.errors import MappingError

    pool = core_pool()
    pool.drain()
    started = pool.started
    with pytest.raises(MappingError, match=r"within cluster.placement_timeout_s = 0.01 s on the nodes asked for"):
        Simulator(helpers.equivalence_network(), backend="ray", cores_per_population=2, batch_size=helpers.EQ_BATCH,
                  cluster=ClusterConfig(placement_timeout_s=0.01))
    assert pool.started == started + 8 and pool.idle_on(ray_session.get_runtime_context().get_node_id()) == 0
