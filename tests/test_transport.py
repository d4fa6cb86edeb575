"""Tests of the TCP data path (spinnray.backends.transport) with plain threads, no Ray.

Timeouts are kept small (0.5 s) so that the failure cases run in about a second.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest

from spinnray.machine import packet
from spinnray.errors import TransportError
from spinnray.machine.router import Router, RoutingEntry, RoutingTable
from spinnray.backends.transport import HELLO_ROUND, CoreLink, RouterServer, encode_envelope, read_envelope

HOST = "127.0.0.1"
TIMEOUT = 0.5


# ------------------------------------------------------------------ helpers


def frames_of(core: int, rnd: int) -> list[bytes]:
    """What core ``core`` sends in round ``rnd``: 0..3 frames, some empty, all distinct."""
    n = (core + rnd) % 4
    return [f"c{core}r{rnd}f{j}".encode() * ((core + j) % 3) for j in range(n)]


def cross(inbox: dict[int, list[bytes]]) -> dict[int, list[bytes]]:
    """Every core gets the frames of every *other* core, in ascending source order."""
    return {dst: [f for src in sorted(inbox) if src != dst for f in inbox[src]] for dst in inbox}


def run_cores(links, body, rounds):
    """Run ``body(link, rnd)`` for every round of every link in its own thread; collect errors."""
    errors = []

    def work(link):
        try:
            for rnd in range(rounds):
                body(link, rnd)
        except Exception as e:   # reported to the test below
            errors.append((link.core_id, e))

    threads = [threading.Thread(target=work, args=(link,), daemon=True) for link in links]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a core thread hung"
    return errors


def wait_for(condition, seconds=2.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def server_factory():
    """Build RouterServers and CoreLinks; closes them all afterwards."""
    made = []

    def make(route, cores, timeout_s=TIMEOUT):
        server = RouterServer(route, cores, HOST, timeout_s)
        links = [CoreLink(c, server.address, timeout_s) for c in cores]
        made.append((server, links))
        return server, links

    yield make
    for server, links in made:
        for link in links:
            link.close()
        # Closed links end a serving thread; close the server only after, as
        # closing its sockets under a thread idle in select() may not wake it.
        if server.error is None:
            server.thread.join(timeout=2)
        server.close()


# ----------------------------------------------------------------- envelope


@pytest.mark.parametrize("frames", [[], [b""], [b"a", b"", b"\x00" * 1000], [bytes(range(256))] * 7])
def test_envelope_round_trip(frames):
    a, b = socket.socketpair()
    with a, b:
        a.sendall(encode_envelope(12345, 7, frames) + encode_envelope(HELLO_ROUND, 2**32 - 1, frames[:1]))
        assert read_envelope(b, "test") == (12345, 7, frames)
        assert read_envelope(b, "test") == (HELLO_ROUND, 2**32 - 1, frames[:1])


def test_envelope_larger_than_one_peek_and_one_arriving_in_pieces():
    """read_envelope takes a whole envelope in one read when it has arrived; a larger one (or one
    still arriving) is read piece by piece, with the same result and nothing of the next one taken."""
    big = [bytes([i % 251]) * 40_000 for i in range(4)]           # 160 kB: more than one peek
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(10)
        a.sendall(encode_envelope(1, 2, big) + encode_envelope(2, 3, [b"next"]))
        assert read_envelope(b, "test") == (1, 2, big)
        assert read_envelope(b, "test") == (2, 3, [b"next"])
        env = encode_envelope(5, 6, [b"abc", b"defgh"])
        a.sendall(env[:18])                                       # header and half a length
        threading.Timer(0.2, a.sendall, args=(env[18:],)).start()
        assert read_envelope(b, "test") == (5, 6, [b"abc", b"defgh"])


def test_envelope_layout():
    env = encode_envelope(3, 9, [b"xy", b""])
    assert env == struct.pack("<4sIII", b"SPNR", 3, 9, 2) + struct.pack("<I", 2) + b"xy" + struct.pack("<I", 0)


def test_bad_magic_is_a_transport_error():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"XXXX" + encode_envelope(0, 0, [])[4:])
        with pytest.raises(TransportError) as info:
            read_envelope(b, "the reply")
    assert "magic" in str(info.value) and "b'XXXX'" in str(info.value) and "the reply" in str(info.value)


def test_too_many_frames_is_a_transport_error():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack("<4sIII", b"SPNR", 0, 0, 2**31))
        with pytest.raises(TransportError) as info:
            read_envelope(b, "x")
    assert str(2**31) in str(info.value)


@pytest.mark.parametrize("cut", [0, 5, 16, 18, 21])
def test_closed_connection_is_a_transport_error(cut):
    env = encode_envelope(1, 2, [b"abcdef"])          # 16 header + 4 length + 6 bytes
    a, b = socket.socketpair()
    with b:
        a.sendall(env[:cut])
        a.close()
        with pytest.raises(TransportError) as info:
            read_envelope(b, "round 4 from core 1")
    assert "closed" in str(info.value) and "round 4 from core 1" in str(info.value)


def test_read_timeout_is_a_transport_error():
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(0.05)
        a.sendall(encode_envelope(0, 0, [b"abc"])[:10])
        with pytest.raises(TransportError) as info:
            read_envelope(b, "something")
    assert "timed out" in str(info.value)


def test_connect_to_nothing_is_a_transport_error():
    s = socket.create_server((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(TransportError) as info:
        CoreLink(4, (HOST, port), TIMEOUT)
    assert "core 4" in str(info.value) and str(port) in str(info.value)


# ------------------------------------------------------------------- rounds


def test_fifty_rounds_every_core_gets_its_frames(server_factory):
    cores = [0, 1, 2]
    server, links = server_factory(cross, cores)
    got = {c: [] for c in cores}

    def body(link, rnd):
        got[link.core_id].append(link.exchange(frames_of(link.core_id, rnd), step=10 * rnd))

    assert run_cores(links, body, 50) == []
    for c in cores:
        assert len(got[c]) == 50
        for rnd in range(50):
            want = [f for src in cores if src != c for f in frames_of(src, rnd)]
            assert got[c][rnd] == want, (c, rnd)
    assert all(link.round == 50 for link in links)
    wait_for(lambda: server.rounds == 50)      # counted just after the last replies went out
    assert server.rounds == 50 and server.error is None


def test_rounds_through_a_real_router(server_factory):
    """The routed frames equal what a second Router computes from the same inboxes."""
    cores = [0, 1, 2]
    entries = [RoutingEntry(c << 4, 0xFFFFFFF0, tuple(d for d in cores if d != c)) for c in cores]
    live = Router(RoutingTable(entries), cores, max_offset=1, n_batch=2)
    ref = Router(RoutingTable(entries), cores, max_offset=1, n_batch=2)
    server, links = server_factory(live.route, cores)
    sent = {}
    got = {c: [] for c in cores}

    def frames(core, rnd):
        rng = np.random.default_rng(1000 * rnd + core)
        n = int(rng.integers(0, 6))
        if n == 0:
            return []
        keys = ((core << 4) + rng.integers(0, 16, n)).astype(np.uint32)
        keys[-1] = 0xFFFF0000 if rnd % 7 == 0 else keys[-1]     # an unroutable key now and then
        return [packet.encode(packet.Kind.SPIKE, core, 2 * rnd, keys, rng.integers(0, 2, n).astype(np.uint16),
                              batch=rng.integers(0, 2, n).astype(np.uint16))]

    def body(link, rnd):
        f = frames(link.core_id, rnd)
        sent[link.core_id, rnd] = f
        got[link.core_id].append(link.exchange(f, step=2 * rnd))

    assert run_cores(links, body, 30) == []
    delivered = 0
    for rnd in range(30):
        want = ref.route({c: sent[c, rnd] for c in cores})
        for c in cores:
            assert got[c][rnd] == want[c]
            delivered += len(want[c])
    assert delivered > 20
    assert live.counters.as_dict() == ref.counters.as_dict()
    assert live.counters.dropped > 0 and server.error is None


def test_late_core_makes_waiting_cores_fail_and_router_names_it(server_factory):
    cores = [0, 1, 2]
    server, links = server_factory(cross, cores)
    late_round = 3

    def body(link, rnd):
        if link.core_id == 2 and rnd == late_round:
            time.sleep(2 * TIMEOUT)          # never sends this round (until everyone gave up)
            raise RuntimeError("late core stops")
        link.exchange(frames_of(link.core_id, rnd), step=rnd)

    t0 = time.monotonic()
    errors = run_cores(links, body, 10)
    assert time.monotonic() - t0 < 2 * TIMEOUT + 1.5
    by_core = dict(errors)
    assert isinstance(by_core.pop(2), RuntimeError)
    assert sorted(by_core) == [0, 1]
    for c, e in by_core.items():
        assert isinstance(e, TransportError)
        msg = str(e)
        assert f"core {c}" in msg and f"round {late_round}" in msg and "phase receive" in msg, msg
    assert server.error is not None
    assert "core 2" in server.error and f"round {late_round}" in server.error and "collect" in server.error
    assert server.rounds == late_round


def test_waiting_core_fails_within_the_timeout(server_factory):
    cores = [0, 1]
    server, links = server_factory(cross, cores)
    t0 = time.monotonic()
    with pytest.raises(TransportError) as info:
        links[1].exchange([b"x"], step=0)         # core 0 never sends round 0
    elapsed = time.monotonic() - t0
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT + 1.0
    msg = str(info.value)
    assert "core 1" in msg and "round 0" in msg and "phase receive" in msg and f"timeout {TIMEOUT}" in msg


def test_router_names_a_late_lowest_core(server_factory):
    cores = [0, 1, 2]
    server, links = server_factory(cross, cores)

    def body(link, rnd):
        if link.core_id == 0:
            return                            # core 0 never sends round 0
        link.exchange([b"f"], step=0)

    errors = run_cores(links, body, 1)
    assert sorted(c for c, _ in errors) == [1, 2]
    wait_for(lambda: server.error is not None, 2 * TIMEOUT)
    assert server.error is not None and "core 0" in server.error


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_route_exception_is_reported(server_factory):
    def broken(inbox):
        raise ValueError("route is broken")

    server, links = server_factory(broken, [0, 1])
    errors = run_cores(links, lambda link, rnd: link.exchange([b"x"], step=0), 1)
    assert sorted(c for c, _ in errors) == [0, 1]
    wait_for(lambda: server.error is not None, 2 * TIMEOUT)
    assert server.error is not None and "route is broken" in server.error


def test_router_closing_fails_the_core(server_factory):
    cores = [0]
    server, links = server_factory(cross, cores)
    assert links[0].exchange([b"a"], step=0) == []
    server.close()
    with pytest.raises(TransportError) as info:
        links[0].exchange([b"b"], step=1)
    assert "core 0" in str(info.value) and "round 1" in str(info.value)


def test_core_closing_is_reported_by_the_router(server_factory):
    cores = [0, 1]
    server, links = server_factory(cross, cores)
    links[1].close()
    with pytest.raises(TransportError):
        links[0].exchange([b"a"], step=0)
    server.thread.join(timeout=5)
    assert server.error is not None and "core 1" in server.error and "round 0" in server.error


def test_duplicate_hello_is_refused():
    server = RouterServer(cross, [0, 1], HOST, TIMEOUT)
    a = CoreLink(0, server.address, TIMEOUT)
    b = CoreLink(0, server.address, TIMEOUT)          # core 0 again instead of core 1
    try:
        server.thread.join(timeout=5)
        assert not server.thread.is_alive()
        assert server.error is not None and "unexpected hello from sender 0" in server.error
    finally:
        a.close()
        b.close()
        server.close()


def test_wrong_round_number_is_refused(server_factory):
    cores = [0, 1]
    server, links = server_factory(cross, cores)
    links[1].round = 5                                # core 1 thinks it is in round 5
    errors = run_cores(links, lambda link, rnd: link.exchange([b"x"], step=0), 1)
    assert sorted(c for c, _ in errors) == [0, 1]
    assert all(isinstance(e, TransportError) for _, e in errors)
    server.thread.join(timeout=5)
    assert "core 1 sent round 5" in server.error and "expected round 0" in server.error
