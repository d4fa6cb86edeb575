"""Authenticated router streams on the ray backend (issue 22).

A stranger on the network that connects to a router's port while the backend
is being built (before the cores), claims a core's slot, sends garbage or
says nothing, is dropped and counted (``rejected_connections`` in the router's
report, with a reason), and the run's results are exactly those of an
undisturbed run; once the cores are in, the port is closed (connection
refused), also while a run is going.  The protocol itself is tested with
plain threads in tests/unit/backends/test_transport.py.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest

from spinnray.backends import RayBackend
from spinnray.config import MachineConfig
from spinnray.model.network import Network
from spinnray.model.neurons import LIF, SpikeSource
from spinnray.simulator import Simulator, poisson_spikes

pytestmark = pytest.mark.ray


STEPS, BATCH = 60, 2


MACHINE = MachineConfig(pes_per_chip=2, sram_per_pe_bytes=1 << 20)


def make_network(seed: int = 5) -> Network:
    rng = np.random.default_rng(seed)
    net = Network(dt_ms=1.0)
    net.population("inp", 16, SpikeSource())
    net.population("hid", 21, LIF(tau_mem_ms=10.0, tau_syn_ms=4.0, v_th=0.5))
    net.population("out", 7, LIF(tau_mem_ms=12.0, tau_syn_ms=3.0, v_th=0.4))
    net.connect("inp", "hid", rng.normal(0.4, 0.4, (16, 21)), delays=rng.integers(1, 4, (16, 21)))
    net.connect("hid", "hid", rng.normal(-0.05, 0.3, (21, 21)), delays=2, mask=rng.random((21, 21)) < 0.3)
    net.connect("hid", "out", rng.normal(0.3, 0.2, (21, 7)), delays=1)
    return net


def inputs(steps: int = STEPS) -> dict:
    return {"inp": poisson_spikes(80.0, steps, BATCH, 16, 1.0, np.random.default_rng(3))}


def simulator(backend: str) -> Simulator:
    return Simulator(make_network(), MACHINE, cores_per_population=2, batch_size=BATCH, backend=backend,
                     timeout_s=60.0)


def _recv(sock, n):
    buf = b""
    while len(buf) < n:
        got = sock.recv(n - len(buf))
        if not got:
            break
        buf += got
    return buf


def claim_core_0(address):
    """A well-formed hello claiming core 0's slot, keyed with a guessed secret."""
    import hashlib
    import hmac

    s = socket.create_connection(address, timeout=10)
    data = _recv(s, 36)
    assert data[:4] == b"SPNC"
    mac = hmac.new(b"\0" * 32, b"spinnray/1 client" + data[4:] + struct.pack("<III", 1, 0, 0), hashlib.sha256)
    s.sendall(struct.pack("<4sII32s32s", b"SPNH", 1, 0, b"\1" * 32, mac.digest()))
    return s


def garbage(address):
    s = socket.create_connection(address, timeout=10)
    s.sendall(struct.pack("<4sIII", b"SPNR", 0xFFFFFFFF, 0, 1) + struct.pack("<I", 1 << 30) + b"\0" * 80)
    return s


def silent(address):
    return socket.create_connection(address, timeout=10)


def rejected(sim) -> dict:
    return sim.backend._ray.get(sim.backend.router.report.remote())


@pytest.fixture(scope="module")
def undisturbed(ray_module):
    with simulator("ray") as sim:
        res = sim.run(STEPS, inputs(), record=("spikes", "v"))
        cores, routers = sim.reports()
    return res, cores, routers


def test_strangers_during_setup_take_no_slot_and_change_nothing(undisturbed, monkeypatch, ray_session):
    """Strangers connect once the router listens and before any core connects (one claims
    core 0's slot): all are dropped and counted, the cores get their slots, and the run's
    spikes, potentials and counters equal an undisturbed run's."""
    ray = ray_session
    strangers = []
    real = RayBackend._place

    started = []

    def place(self, refs, timeout_s, what):
        out = real(self, refs, timeout_s, what)
        if what == "start the routers":
            started.append(out)
        # router 0 serves once it has its address (one router) or its peers too (one router per chip: 3 here);
        # the cores are not connected yet
        serving = len(started) == (2 if self.plan.n_routers > 1 else 1)
        if what == "start the routers" and serving and not strangers:
            address = tuple(started[0][0])
            strangers.extend([silent(address), claim_core_0(address), garbage(address)])
            deadline = time.monotonic() + 10
            while (ray.get(self.router.report.remote())["counters"]["rejected_connections"] < 2
                   and time.monotonic() < deadline):
                time.sleep(0.02)
        return out

    monkeypatch.setattr(RayBackend, "_place", place)
    try:
        with simulator("ray") as sim:
            monkeypatch.setattr(RayBackend, "_place", real)
            res = sim.run(STEPS, inputs(), record=("spikes", "v"))
            deadline = time.monotonic() + 10
            while rejected(sim)["counters"]["rejected_connections"] < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            cores, routers = sim.reports()
    finally:
        for s in strangers:
            s.close()
    ref, ref_cores, ref_routers = undisturbed
    assert len(strangers) == 3
    for name in ref.spikes:
        assert np.array_equal(res.spikes[name], ref.spikes[name]), name
    for name in ref.v:
        assert np.array_equal(res.v[name], ref.v[name]), name
    assert ref.spikes["hid"].any()
    assert [c["counters"] for c in cores] == [c["counters"] for c in ref_cores]
    counters = routers[0]["counters"]
    assert counters["rejected_connections"] == 3 and ref_routers[0]["counters"]["rejected_connections"] == 0
    assert {k: v for k, v in counters.items() if k != "rejected_connections"} == \
        {k: v for k, v in ref_routers[0]["counters"].items() if k != "rejected_connections"}
    reasons = routers[0]["connection_reasons"]
    assert len(reasons) == 3
    assert any("wrong MAC" in r and "claiming core 0" in r for r in reasons)
    assert any("malformed hello" in r for r in reasons)
    assert any("still unauthenticated when the listener closed" in r for r in reasons)
    assert routers[0]["reasons"] == [] and routers[0]["error"] is None


def test_router_port_is_closed_during_a_run(undisturbed, ray_session):
    """Once the cores are in, nobody can connect, also while a run is going; the run is unchanged."""
    refused, tries, stop = [], [0], threading.Event()
    with simulator("ray") as sim:
        address = tuple(ray_session.get(sim.backend.router.address.remote()))

        def knock():
            while not stop.is_set():
                tries[0] += 1
                try:
                    socket.create_connection(address, timeout=2).close()
                except ConnectionRefusedError:
                    refused.append(1)
                except OSError:
                    pass
                time.sleep(0.005)

        th = threading.Thread(target=knock, daemon=True)
        th.start()
        try:
            res = sim.run(STEPS, inputs(), record=("spikes", "v"))
        finally:
            stop.set()
            th.join(5)
        routers = sim.reports()[1]
    assert tries[0] > 0 and len(refused) == tries[0]
    ref = undisturbed[0]
    for name in ref.spikes:
        assert np.array_equal(res.spikes[name], ref.spikes[name]), name
    assert routers[0]["counters"]["rejected_connections"] == 0


def test_ray_equals_local(undisturbed):
    """The undisturbed authenticated run is the local one (auth changes no result)."""
    with simulator("local") as sim:
        res = sim.run(STEPS, inputs(), record=("spikes", "v"))
    for name in res.spikes:
        assert np.array_equal(undisturbed[0].spikes[name], res.spikes[name]), name
