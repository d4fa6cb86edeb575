"""spinnray.machine.core: what a core takes from the frames it is delivered (hostile frames, offsets
past the run) and its SRAM budget for the events a layered run buffers."""

import numpy as np
import pytest

from spinnray.config import MachineConfig
from spinnray.errors import BudgetError
from spinnray.machine import packet
from spinnray.machine.core import Core
from spinnray.machine.packet import Kind
from spinnray.machine.schedule import take_errors
from spinnray.model.network import Network
from spinnray.model.neurons import LIF, SpikeSource
from spinnray.simulator import Simulator

from unit.machine.test_router import _hostile_frames
from unit.machine.test_schedule import N_IN, ff_network


def test_core_deliver_rejects_hostile_frames_and_keeps_the_valid_ones():
    """Core.deliver: the round's fast path (spike_round) declines, the frame-by-frame path
    counts each hostile frame as rejected and stores the valid events as without them."""
    from spinnray.machine.core import Core
    from spinnray.model.network import Network
    from spinnray.model.neurons import LIF, SpikeSource
    from spinnray.simulator import Simulator

    net = Network()
    net.population("inp", 8, SpikeSource())
    net.population("hid", 6, LIF(v_th=0.3))
    net.connect("inp", "hid", np.full((8, 6), 0.4), delays=1)
    with Simulator(net) as sim:
        sim.run(2, {"inp": np.zeros((2, 8), bool)})
        cores = sim.backend.cores
        src = next(c for c in cores if c.spec.population == "inp")
        hid = next(c for c in cores if c.spec.population == "hid")
        assert type(hid) is Core
        good = packet.encode(Kind.SPIKE, src.id, 2, keys=[src.spec.key_base + 3], offsets=[0])
        hostile = [h[1] for h in _hostile_frames()]
        c = hid.counters
        hid.deliver([good], 2, 1)
        ring = {name: r.copy() for name, r in hid.hist.items()}
        assert ring["inp"][2 % len(ring["inp"]), 0, 3]
        rejected, received, dropped = c.rejected, c.spike_events_received, c.dropped
        hid.deliver(hostile[:5] + [good] + hostile[5:], 2, 1)        # never raises
        assert c.rejected == rejected + len(hostile) and c.dropped == dropped
        assert c.spike_events_received == received + 1
        assert all(np.array_equal(hid.hist[name], r) for name, r in ring.items())
        assert any("version must be 1, got list" in r for r in hid.reasons)
        assert all(len(r) < 250 for r in hid.reasons)


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


def test_a_core_holds_one_copy_of_its_weights():
    """The core copies its weights from the spec and keeps the spec without them (on Ray the spec is
    the actor's own copy: keeping both would hold every weight twice)."""
    from spinnray.mapping import map_network, specs_from_mapping

    net = Network()
    net.population("inp", 8, SpikeSource())
    net.population("hid", 6, LIF(v_th=0.3))
    w = np.random.default_rng(0).uniform(0.2, 0.6, (8, 6))
    net.connect("inp", "hid", w, delays=1)
    spec = next(s for s in specs_from_mapping(map_network(net, MachineConfig(), 1, 1, 1, None), 1, None)
                if s.population == "hid")
    core = Core(spec)
    assert np.array_equal(core.weights[0], w.astype(core.dtype)) and core.weights[0] is not spec.incoming[0].weights
    assert [inc.weights for inc in core.spec.incoming] == [None]
    assert core.spec.incoming[0].name == spec.incoming[0].name and core.spec.core_id == spec.core_id
