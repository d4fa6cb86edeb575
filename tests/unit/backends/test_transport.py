"""Tests of the TCP data path (spinnray.backends.transport) with plain threads, no Ray.

Also the routers of several nodes over TCP, as the ray backend runs them: they deliver what one
router does, and a lost or silent peer router is an error naming the router, round and phase.
Timeouts are kept small (0.5 s) so that the failure cases run in about a second; the two cases
that take longer are in tests/integration/test_transport.py.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import threading
import time

import numpy as np
import pytest

from spinnray.backends.transport import CoreLink, RouterServer, core_wait_s, encode_envelope, read_envelope
from spinnray.errors import TransportError
from spinnray.machine import packet
from spinnray.machine.router import Router, RoutingEntry, RoutingTable
from spinnray.mapping import assign_nodes, map_network

from helpers import (
    CLUSTER_BATCH as BATCH,
    CLUSTER_CORES as CORES,
    CLUSTER_MACHINE as MACHINE,
    cluster_network as make_network,
)

NODE_SECRET = b"a test secret of 32 bytes, fixed"


HOST = "127.0.0.1"


TIMEOUT = 0.5


SECRET = bytes(range(32))


HELLO_ROUND = 0xFFFFFFFF          # just a large round number


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
        server = RouterServer(route, cores, HOST, timeout_s, secret=SECRET)
        links = [CoreLink(c, server.address, timeout_s, secret=SECRET) for c in cores]
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
        CoreLink(4, (HOST, port), TIMEOUT, secret=SECRET)
    assert "core 4" in str(info.value) and str(port) in str(info.value)


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


def test_waiting_core_fails_within_the_timeout(server_factory):
    cores = [0, 1]
    server, links = server_factory(cross, cores)
    t0 = time.monotonic()
    with pytest.raises(TransportError) as info:
        links[1].exchange([b"x"], step=0)         # core 0 never sends round 0
    elapsed = time.monotonic() - t0
    # the router gives up on core 0 after its timeout and closes the streams, so core 1 fails then,
    # before its own (longer) wait ends; the router names the late core
    assert TIMEOUT * 0.8 <= elapsed < core_wait_s(TIMEOUT)
    msg = str(info.value)
    assert "core 1" in msg and "round 0" in msg and "phase receive" in msg
    assert server.late_core == 0 and "core 0" in server.error and "phase collect" in server.error


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
    """Core 0 twice, both authentic (only a bug of ours can do that): the router fails, and the second
    core is refused at once (its listener is closed)."""
    server = RouterServer(cross, [0, 1], HOST, TIMEOUT, secret=SECRET)
    a = CoreLink(0, server.address, TIMEOUT, secret=SECRET)
    try:
        with pytest.raises(TransportError, match="core 0: .*refused this core|core 0: cannot connect"):
            CoreLink(0, server.address, TIMEOUT, secret=SECRET)         # core 0 again instead of core 1
        server.thread.join(timeout=5)
        assert not server.thread.is_alive()
        assert server.error is not None and "unexpected hello from sender 0 (core already connected)" in server.error
        assert server.rejected_connections == 0
    finally:
        a.close()
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


def client_mac(secret, nonce_r, role, ident, router):
    return hmac.new(secret, b"spinnray/1 client" + nonce_r + struct.pack("<III", role, ident, router),
                    hashlib.sha256).digest()


def router_mac(secret, nonce_r, nonce_c, role, ident, router):
    return hmac.new(secret, b"spinnray/1 router" + nonce_r + nonce_c + struct.pack("<III", role, ident, router),
                    hashlib.sha256).digest()


def recv_all(sock, n):
    buf = b""
    while len(buf) < n:
        got = sock.recv(n - len(buf))
        if not got:
            break
        buf += got
    return buf


def hung_up(sock) -> bool:
    """The other end closed (EOF, or a reset when it left our bytes unread)."""
    sock.settimeout(2)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def challenge(sock):
    data = recv_all(sock, 36)
    assert len(data) == 36 and data[:4] == b"SPNC"
    return data[4:]


def hello(secret, nonce_r, role, ident, router, nonce_c=b"c" * 32):
    return struct.pack("<4sII32s32s", b"SPNH", role, ident, nonce_c, client_mac(secret, nonce_r, role, ident, router))


def wrong_secret(address):           # a well-formed hello claiming core 0, keyed with another secret
    s = socket.create_connection(address)
    s.sendall(hello(b"not the secret of this run!!!!!!", challenge(s), 1, 0, 0))
    return s


def replayed(address):               # right secret, but a MAC for another connection's nonce
    s = socket.create_connection(address)
    challenge(s)
    s.sendall(hello(SECRET, b"n" * 32, 1, 0, 0))
    return s


def other_router(address):           # right secret and nonce, but bound to router 1, not 0
    s = socket.create_connection(address)
    s.sendall(hello(SECRET, challenge(s), 1, 0, 1))
    return s


def no_auth(address):                # connects and goes away
    s = socket.create_connection(address)
    s.close()
    return s


def garbage(address):
    s = socket.create_connection(address)
    s.sendall(b"GET / HTTP/1.1\r\nHost: spinnray\r\n\r\n" * 4)
    return s


def huge_frame(address):             # the old hello envelope declaring a 1 GiB frame
    s = socket.create_connection(address)
    s.sendall(struct.pack("<4sIII", b"SPNR", HELLO_ROUND, 0, 1) + struct.pack("<I", 1 << 30) + b"\0" * 100)
    return s


def half_hello(address):             # 40 of the 76 bytes, then closes
    s = socket.create_connection(address)
    s.sendall(hello(SECRET, challenge(s), 1, 0, 0)[:40])
    s.close()
    return s


def silent(address):                 # connects first and says nothing, for ever
    return socket.create_connection(address)


STRANGERS = [silent, wrong_secret, replayed, other_router, no_auth, garbage, huge_frame, half_hello]


def run_rounds(links, rounds=20):
    got = {link.core_id: [] for link in links}

    def body(link, rnd):
        got[link.core_id].append(link.exchange(frames_of(link.core_id, rnd), step=rnd))

    assert run_cores(links, body, rounds) == []
    return got


def expected_rounds(cores, rounds=20):
    return {c: [[f for src in cores if src != c for f in frames_of(src, rnd)] for rnd in range(rounds)]
            for c in cores}


def test_handshake_layout():
    """The bytes on the wire are those of the module docstring; the router's answer proves the secret."""
    server = RouterServer(cross, [0, 1], HOST, 5.0, secret=SECRET)
    s = socket.create_connection(server.address, timeout=5)
    try:
        nonce_r = challenge(s)
        nonce_c = bytes(range(100, 132))
        s.sendall(hello(SECRET, nonce_r, 1, 1, 0, nonce_c))
        answer = recv_all(s, 36)
        assert answer == b"SPNA" + router_mac(SECRET, nonce_r, nonce_c, 1, 1, 0)
        link = CoreLink(0, server.address, 5.0, secret=SECRET)
        # core 1 is the raw socket: it speaks envelopes after the handshake like any core
        s.sendall(encode_envelope(0, 1, [b"from 1"]))
        assert link.exchange([b"from 0"], 0) == [b"from 1"]
        assert read_envelope(s, "reply") == (0, 0xFFFFFFFF, [b"from 0"])
        assert server.rejected_connections == 0
        link.close()
    finally:
        s.close()
        server.close()


def test_strangers_are_rejected_counted_and_change_nothing():
    """Every kind of stranger connects first (before the cores); all are dropped and counted with a
    short reason naming no byte they sent; the genuine cores get their slots at once (the silent
    stranger delays no one), and their rounds carry exactly the frames of an undisturbed run."""
    import tracemalloc

    cores = [0, 1, 2]
    tracemalloc.start()
    server = RouterServer(cross, cores, HOST, 10.0, secret=SECRET)
    strangers = [attack(server.address) for attack in STRANGERS]
    wait_for(lambda: server.rejected_connections >= len(STRANGERS) - 1)      # all but the silent one
    t0 = time.monotonic()
    links = [CoreLink(c, server.address, 10.0, secret=SECRET) for c in cores]
    setup = time.monotonic() - t0
    try:
        assert setup < 3.0, setup               # not the 5 s the silent stranger may take
        got = run_rounds(links)
        assert got == expected_rounds(cores)
        wait_for(lambda: server.rejected_connections == len(STRANGERS))    # the silent one: at listener close
        assert server.rejected_connections == len(STRANGERS)
        assert server.error is None and server.rounds == 20
        reasons = server.rejections
        assert len(reasons) == len(STRANGERS) and all(len(r) <= 300 for r in reasons)
        text = " ".join(reasons)
        for needle in ("GET", "HTTP", "spinnray\\r", "SPNR", "b'", "\\x"):
            assert needle not in text, needle
        assert sum("wrong MAC" in r and "claiming core 0" in r for r in reasons) == 3
        assert sum("malformed hello" in r for r in reasons) == 2
        assert any("still unauthenticated when the listener closed" in r for r in reasons)
        assert all(r.startswith("router: rejected a connection from 127.0.0.1:") for r in reasons)
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 20 << 20, peak          # the 1 GiB declared frame allocated nothing
        # every stranger's socket was closed by the router
        for s in strangers:
            if s.fileno() != -1:
                assert hung_up(s)
    finally:
        tracemalloc.stop()
        for s in strangers:
            s.close()
        for link in links:
            link.close()
        server.close()


def test_listener_closes_once_every_core_is_in():
    """After setup no connection is possible (refused), so no stranger can even try."""
    cores = [0, 1]
    server = RouterServer(cross, cores, HOST, 5.0, secret=SECRET)
    links = [CoreLink(c, server.address, 5.0, secret=SECRET) for c in cores]
    try:
        run_rounds(links, 3)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(server.address, timeout=2).close()
        with pytest.raises(TransportError, match="cannot connect"):
            CoreLink(0, server.address, 5.0, secret=SECRET)
        assert run_rounds(links, 3) is not None and server.rejected_connections == 0
    finally:
        for link in links:
            link.close()
        server.close()


def test_silent_stranger_is_dropped_after_the_auth_timeout():
    server = RouterServer(cross, [0], HOST, 0.3, secret=SECRET)       # auth timeout min(5, 0.3) s
    s = socket.create_connection(server.address, timeout=5)
    try:
        assert len(challenge(s)) == 32
        t0 = time.monotonic()
        assert recv_all(s, 1) == b""          # the router hangs up on it
        assert 0.2 < time.monotonic() - t0 < 2.0
        assert server.rejected_connections == 1 and "no authentication within 0.3 s" in server.rejections[0]
        link = CoreLink(0, server.address, 5.0, secret=SECRET)
        assert link.exchange([b"x"], 0) == []
        assert server.error is None
        link.close()
    finally:
        s.close()
        server.close()


class FakeRouter:
    """A listener that speaks the router's side of the handshake, answering with ``answer(nonce_r,
    hello) -> bytes`` (None: hang up)."""

    def __init__(self, answer, send_challenge=True):
        self.listener = socket.create_server((HOST, 0))
        self.address = (HOST, self.listener.getsockname()[1])
        self.hellos = []
        self.answer, self.send_challenge = answer, send_challenge
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.listener.settimeout(10)
        try:
            while True:
                sock, _ = self.listener.accept()
                with sock:
                    nonce_r = os.urandom(32)
                    if not self.send_challenge:
                        sock.sendall(b"HTTP/1.1 200 OK\r\n\r\n" * 2)
                        recv_all(sock, 1)
                        continue
                    sock.sendall(b"SPNC" + nonce_r)
                    h = recv_all(sock, 76)
                    self.hellos.append(h)
                    reply = self.answer(nonce_r, h)
                    if reply is not None:
                        sock.sendall(reply)
                        recv_all(sock, 1)
        except OSError:
            return

    def close(self):
        self.listener.close()


@pytest.mark.parametrize("kind", ["random MAC", "other secret", "echo"])
def test_core_refuses_a_router_that_cannot_answer_its_nonce(kind):
    """Mutual authentication: a fake router is refused, so it cannot capture a core."""
    def answer(nonce_r, h):
        _, role, ident, nonce_c, mac = struct.unpack("<4sII32s32s", h)
        if kind == "random MAC":
            return b"SPNA" + os.urandom(32)
        if kind == "echo":                   # reflects the client's own MAC back
            return b"SPNA" + mac
        return b"SPNA" + router_mac(b"another run's secret, 32 bytes!", nonce_r, nonce_c, role, ident, 0)

    fake = FakeRouter(answer)
    try:
        with pytest.raises(TransportError, match="core 3: router at .* failed authentication: it cannot prove"):
            CoreLink(3, fake.address, 5.0, secret=SECRET)
        h = fake.hellos[0]
        assert len(h) == 76 and h[:4] == b"SPNH" and struct.unpack("<II", h[4:12]) == (1, 3)
    finally:
        fake.close()


def test_core_refuses_a_listener_that_is_no_router():
    fake = FakeRouter(None, send_challenge=False)
    try:
        with pytest.raises(TransportError, match="sent no spinnray challenge"):
            CoreLink(3, fake.address, 5.0, secret=SECRET)
    finally:
        fake.close()


def test_core_with_the_wrong_secret_is_refused_and_counted():
    server = RouterServer(cross, [0], HOST, 5.0, secret=SECRET)
    try:
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="refused this core .*3 attempt"):
            CoreLink(0, server.address, 5.0, secret=b"x" * 32)
        assert time.monotonic() - t0 < 3.0
        assert server.rejected_connections == 3 and server.error is None
        link = CoreLink(0, server.address, 5.0, secret=SECRET)
        assert link.exchange([b"a"], 0) == []          # cross: nothing from other cores
        link.close()
    finally:
        server.close()


@pytest.mark.parametrize("secret", [None, b"short", "a str of thirty-two characters!!"])
def test_secret_is_required(secret):
    with pytest.raises(TransportError, match="secret must be bytes of at least 16"):
        RouterServer(cross, [0], HOST, 1.0, secret=secret)
    with pytest.raises(TransportError, match="secret must be bytes of at least 16"):
        CoreLink(0, (HOST, 1), 1.0, secret=secret)


def two_routers(timeout_s=5.0, secret1=SECRET):
    servers = [RouterServer(lambda inbox, n=n: (None, {1 - n: inbox[n]}), [n], HOST, timeout_s, router=n, routers=2,
                            secret=SECRET if n == 0 else secret1,
                            finish=lambda state, fwd, n=n: {n: fwd[1 - n]}) for n in (0, 1)]
    return servers


def test_router_to_router_streams_are_authenticated():
    """Strangers posing as router 1 (and as a core) before the routers start are dropped and counted;
    the routers then connect and authenticate each other, and rounds cross as usual."""
    servers = two_routers()
    strangers, posers = [], []

    def answer(s, secret, router):
        try:
            s.sendall(hello(secret, challenge(s), 2, 1, router))
        except OSError:                      # the router reset the stranger's stream: what it should do
            pass

    def pose(address, secret, router):       # waits for the challenge (router 0 is not serving yet)
        s = socket.create_connection(address, timeout=5)
        strangers.append(s)
        posers.append(threading.Thread(target=answer, args=(s, secret, router), daemon=True))
        posers[-1].start()

    try:
        pose(servers[0].address, b"guessed secret, guessed secret!!", 0)    # claims router 1
        pose(servers[0].address, SECRET, 1)          # router 1's proof, but for router 1, not router 0
        strangers.append(silent(servers[1].address))
        for n in (0, 1):
            servers[n].start({1 - n: servers[1 - n].address})
        links = {n: CoreLink(n, servers[n].address, 5.0, secret=SECRET, router=n) for n in (0, 1)}
        def core(n, rnd, got):
            got[n] = links[n].exchange([b"%d@%d" % (n, rnd)], rnd)

        for rnd in range(5):
            got = {}
            threads = [threading.Thread(target=core, args=(n, rnd, got)) for n in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            assert got == {0: [b"1@%d" % rnd], 1: [b"0@%d" % rnd]}
        assert all(s.error is None for s in servers)
        wait_for(lambda: servers[1].rejected_connections == 1)
        assert [s.rejected_connections for s in servers] == [2, 1]
        assert "claiming router 1" in servers[0].rejections[0]
        for link in links.values():
            link.close()
    finally:
        for t in posers:                     # done before their sockets close under them
            t.join(10)
        for s in strangers:
            s.close()
        for s in servers:
            s.close()


def test_router_refuses_a_peer_with_another_secret_and_closes_its_listener_at_once():
    """Router 0's peer cannot prove the secret: router 0 fails naming it, and its listener is
    closed at once, so a core still connecting fails in moments, not after the 30 s timeout."""
    servers = two_routers(timeout_s=30.0, secret1=b"another run's secret of 32 bytes")
    try:
        for n in (0, 1):
            servers[n].start({1 - n: servers[1 - n].address})
        wait_for(lambda: servers[0].error is not None, 5)
        # router 1 refuses router 0's hello (it may have failed and reset the stream first: router 0
        # refused router 1 too); either way router 0 names it, in the authentication phase
        assert "router 1 (node 1) at" in servers[0].error and "authentication" in servers[0].error, servers[0].error
        wait_for(lambda: servers[1].error is not None, 5)
        assert servers[1].error is not None and "router 0 (node 0) at" in servers[1].error
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="core 0"):
            CoreLink(0, servers[0].address, 30.0, secret=SECRET)
        assert time.monotonic() - t0 < 3.0
    finally:
        for s in servers:
            s.close()


def test_router_refuses_a_fake_peer_router():
    fake = FakeRouter(lambda nonce_r, h: b"SPNA" + os.urandom(32))
    server = two_routers(timeout_s=30.0)[0]
    try:
        server.start({1: fake.address})
        wait_for(lambda: server.error is not None, 5)
        assert server.error == f"router 0: router 1 (node 1) at {fake.address} failed authentication: " \
                               f"it cannot prove this run's secret"
        assert struct.unpack("<II", fake.hellos[0][4:12]) == (2, 0)        # router 0 said who it is
    finally:
        server.close()
        fake.close()


def test_failed_router_closes_its_listener_at_once():
    """A router that cannot reach its peer fails; a core connecting is refused at once
    (no wait for the 30 s timeout); so is one connecting after close()."""
    dead = socket.create_server((HOST, 0))
    port = dead.getsockname()[1]
    dead.close()
    server = two_routers(timeout_s=30.0)[0]
    try:
        server.start({1: (HOST, port)})
        wait_for(lambda: server.error is not None, 5)
        assert "cannot connect to router 1" in server.error
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="core 0: cannot connect"):
            CoreLink(0, server.address, 30.0, secret=SECRET)
        assert time.monotonic() - t0 < 3.0          # not the 30 s timeout
    finally:
        server.close()
    other = RouterServer(cross, [0, 1], HOST, 30.0, secret=SECRET)
    first = CoreLink(0, other.address, 30.0, secret=SECRET)
    other.close("stopped in a test")
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="core 1"):
        CoreLink(1, other.address, 30.0, secret=SECRET)
    assert time.monotonic() - t0 < 3.0          # not the 30 s timeout
    first.close()


def test_declared_frame_over_the_bound_is_refused_before_allocating():
    import tracemalloc

    from spinnray.backends.transport.envelope import MAX_FRAME_BYTES, parse_envelope

    a, b = socket.socketpair()
    with a, b:
        b.settimeout(2)
        a.sendall(struct.pack("<4sIII", b"SPNR", 0, 0, 1) + struct.pack("<I", MAX_FRAME_BYTES + 1))
        tracemalloc.start()
        try:
            with pytest.raises(TransportError, match="MAX_FRAME_BYTES"):
                read_envelope(b, "x")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20
    with pytest.raises(TransportError, match="MAX_FRAME_BYTES"):
        parse_envelope(struct.pack("<4sIII", b"SPNR", 0, 0, 1) + struct.pack("<I", 1 << 30), "y")


def test_round_timeout_names_the_lowest_core_not_delivered(server_factory):
    """Core 0 delivers, cores 1 and 2 do not: the router names core 1 (the first it waits on)."""
    server, links = server_factory(cross, [0, 1, 2])
    links[0].send([b"a"], 0)
    server.thread.join(5)
    assert server.error is not None
    assert server.error.startswith("router: core 1, round 0, phase collect (timeout 0.5 s): timed out"), server.error


def _tcp_machine(mapping, timeout_s):
    """One RouterServer per router (threads; one per chip or per node) and a CoreLink per core."""
    router_of, router_node = mapping.router_of(), mapping.router_node()
    servers = []
    for n, table in sorted(mapping.router_tables().items()):
        r = Router(table, [c for c in router_of if router_of[c] == n], max_offset=0, n_batch=BATCH, router_id=n,
                   node=router_node[n], router_of=router_of, router_node=router_node)
        servers.append((r, RouterServer(r.route_local, r.cores, HOST, timeout_s, secret=NODE_SECRET, router=n,
                                        routers=len(router_node), router_node=router_node,
                                        finish=lambda local, fwd, r=r: r.deliver(local, r.route_forwarded(fwd)))))
    for n, (_, s) in enumerate(servers):
        s.start({m: t.address for m, (_, t) in enumerate(servers) if m != n})
    links = {c: CoreLink(c, servers[router_of[c]][1].address, timeout_s, secret=NODE_SECRET, router=router_of[c])
             for c in sorted(router_of)}
    return servers, links


def _spike_frames(mapping, rnd, rng):
    """Random spike frames of every sending core for one round."""
    out = {}
    for p in mapping.placements:
        frames = []
        if p.key_base is not None:
            idx = np.flatnonzero(rng.random(p.slice.n) < 0.4)
            frames.append(packet.encode(packet.Kind.SPIKE, p.core_id, rnd, p.key_base + idx.astype(np.uint32),
                                        np.zeros(len(idx), np.uint16), batch=rng.integers(0, BATCH, len(idx))))
        out[p.core_id] = frames
    return out


def _close(servers, links):
    for link in links.values():
        link.close()
    for _, s in servers:
        s.close()


@pytest.mark.parametrize("unit", ["node", "chip"])
def test_routers_over_tcp_deliver_what_one_router_does(unit):
    """3 routers (one per node) or 4 (one per chip; two of them on node 0, talking over the same
    authenticated streams as routers of different nodes) deliver exactly one router's frames."""
    mapping = assign_nodes(map_network(make_network(), MACHINE, CORES), nodes=3, router_per=unit)
    servers, links = _tcp_machine(mapping, 20.0)
    ref = Router(mapping.table, sorted(links), max_offset=0, n_batch=BATCH)
    rng = np.random.default_rng(0)
    try:
        for rnd in range(12):
            sent = _spike_frames(mapping, rnd, rng)
            got, errors = {}, []

            def core(c):
                try:
                    got[c] = links[c].exchange(sent[c], rnd)
                except Exception as e:          # noqa: BLE001 - reported below
                    errors.append(e)

            threads = [threading.Thread(target=core, args=(c,)) for c in links]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert not errors, errors
            assert got == ref.route(sent), f"round {rnd}"
        assert len(servers) == (3 if unit == "node" else 4)
        by_class = {k: sum(r.counters.forwarded_by_class[k]["packets"] for r, _ in servers)
                    for k in ("same_node", "across_nodes")}
        assert by_class["across_nodes"] > 0 and (by_class["same_node"] > 0) == (unit == "chip")
        assert sum(r.counters.forwarded_packets for r, _ in servers) == sum(by_class.values())
        assert all(s.error is None for _, s in servers)
    finally:
        _close(servers, links)


def test_big_envelopes_both_ways_at_once_do_not_deadlock():
    """Two routers forwarding more than a socket buffer to each other in the
    same round: both are sent and read at the same time, so neither waits."""
    big = {0: bytes(range(256)) * (8 << 12), 1: bytes(range(255, -1, -1)) * (8 << 12)}     # 8 MiB each
    servers = []
    for n in (0, 1):
        servers.append(RouterServer(lambda inbox, n=n: (None, {1 - n: [big[n]] + inbox[n]}), [n], HOST, 20.0,
                                    secret=NODE_SECRET, router=n, routers=2, finish=lambda state, fwd, n=n: {n: fwd[1 - n]}))
    for n in (0, 1):
        servers[n].start({1 - n: servers[1 - n].address})
    links = {n: CoreLink(n, servers[n].address, 20.0, secret=NODE_SECRET, router=n) for n in (0, 1)}
    got = {}
    threads = [threading.Thread(target=lambda n=n: got.update({n: links[n].exchange([b"hello %d" % n], 0)}))
               for n in (0, 1)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert got == {0: [big[1], b"hello 1"], 1: [big[0], b"hello 0"]}
        assert all(s.error is None for s in servers)
    finally:
        for link in links.values():
            link.close()
        for s in servers:
            s.close()


def _two_nodes(timeout_s):
    """Two routers on two nodes (one per node: the failure tests name router n on node n)."""
    mapping = assign_nodes(map_network(make_network(), MACHINE, CORES), nodes=2, router_per="node")
    servers, links = _tcp_machine(mapping, timeout_s)
    return mapping, servers, links


def _run_round(links, cores, rnd):
    errors = {}

    def core(c):
        try:
            links[c].exchange([], rnd)
        except TransportError as e:
            errors[c] = e

    threads = [threading.Thread(target=core, args=(c,)) for c in cores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


def test_lost_peer_router_stops_the_other_node_at_once():
    """A router that goes away: the other router fails naming it, the round
    and the phase, and its cores fail too, without waiting for the (long)
    timeout."""
    mapping, servers, links = _two_nodes(timeout_s=300.0)
    node0 = [c for c, n in mapping.node_of().items() if n == 0]
    try:
        assert _run_round(links, list(links), 0) == {}
        servers[1][1].close("killed in a test")
        errors = _run_round(links, node0, 1)
        assert sorted(errors) == node0
        assert all(f"core {c}, round 1 (step 1), phase " in str(e) for c, e in errors.items())
        servers[0][1].thread.join(30)
        err = servers[0][1].error
        assert err.startswith("router 0: ") and "round 1" in err and "router 1 (node 1)" in err
    finally:
        _close(servers, links)


def test_core_gone_between_runs_is_named_at_once_on_every_node():
    """A core whose process dies while the machine is idle: its router fails
    naming it straight away, and the other router hears of it while idle, so
    the next run fails at once instead of after the (long) timeout."""
    mapping, servers, links = _two_nodes(timeout_s=300.0)
    node_of = mapping.node_of()
    gone = max(c for c in node_of if node_of[c] == 1)
    try:
        assert _run_round(links, list(links), 0) == {}
        links[gone].close()
        servers[1][1].thread.join(30)
        servers[0][1].thread.join(30)
        assert f"router 1: core {gone}, idle before round 1, phase collect: connection closed" in servers[1][1].error
        assert "router 0: idle before round 1, phase peer-receive: lost router 1 (node 1)" in servers[0][1].error
        errors = _run_round(links, [c for c in links if c != gone], 1)
        assert sorted(errors) == sorted(c for c in links if c != gone)
    finally:
        _close(servers, links)


def test_silent_peer_router_times_out_naming_round_and_phase():
    """A router that hangs (alive, silent): the other router gives up after
    the timeout, naming the silent router, the round and the phase."""
    mapping, servers, links = _two_nodes(timeout_s=0.5)
    servers[0][1].begin_run(k=1, steps=10)
    try:
        assert _run_round(links, list(links), 0) == {}
        with servers[1][1].lock:           # router 1 stalls in its route phase
            errors = _run_round(links, list(links), 1)
        node0 = [c for c, n in mapping.node_of().items() if n == 0]
        assert set(node0) <= set(errors)
        servers[0][1].thread.join(30)
        err = servers[0][1].error
        assert "round 1 (step 1), phase peer-receive: router 1 (node 1) sent nothing within the timeout" in err
    finally:
        _close(servers, links)
