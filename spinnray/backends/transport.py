"""Out-of-band data path for the Ray backend: TCP streams through the routers.

Ray is used to place and start the actors; the per-round traffic does not
pay a Ray call (~0.7 ms here).  Each core actor keeps one TCP connection to
its node's router actor, where a thread runs the rounds:

    core c:  send envelope(round r, frames of c)  ->  router of c's node
    router:  once every local core's envelope of round r is in, route them
    router:  (several nodes) send envelope(round r, frames for node m) to
             every other router m, even if empty, and read theirs
    router:  send envelope(round r, frames for c)  ->  core c

so every round is in lockstep over the whole machine: a router delivers
round r only when all its cores and all other routers have sent round r.
Between two routers there are two streams, one per direction, used without
blocking: a router sends and reads its peers' envelopes at the same time, so
two routers sending big envelopes to each other never wait on each other.

An *envelope* frames the packets of one round on the stream::

    header  '<4sIII'  magic b"SPNR", round, sender id, frame count
    frames  '<I' length, then that many bytes (a packet of spinnray.machine.packet)

The first envelope on a stream is a hello: round ``HELLO_ROUND`` and the core
id from a core, round ``PEER_HELLO_ROUND`` and the node index from a router.
Rounds are numbered per connection from 0 and never reordered, so results
do not depend on timing.  A peer (core or router) that is late by more than
``timeout_s`` within a round, closes its stream, or sends a malformed
envelope turns into a :class:`TransportError` naming the core or router, the
round (and step, see :meth:`RouterServer.begin_run`) and the phase; the
router that sees it closes all its streams, so the cores and routers waiting
on it fail at once instead of after their own timeouts.  No Ray import here:
this module is tested with plain threads.
"""

from __future__ import annotations

import select
import selectors
import socket
import struct
import threading
import time

from spinnray.errors import TransportError

__all__ = ["CoreLink", "RouterServer", "encode_envelope", "read_envelope", "HELLO_ROUND", "PEER_HELLO_ROUND"]

_HEADER = struct.Struct("<4sIII")
_LEN = struct.Struct("<I")
MAGIC = b"SPNR"
HELLO_ROUND = 0xFFFFFFFF
PEER_HELLO_ROUND = 0xFFFFFFFE
ROUTER_ID = 0xFFFFFFFF
MAX_ENVELOPE_BYTES = 1 << 30
MAX_FRAMES = 1 << 20
_PEEK_BYTES = 1 << 16     # read_envelope takes an envelope this size or smaller in one read


def encode_envelope(rnd: int, sender: int, frames: list[bytes]) -> bytes:
    parts = [_HEADER.pack(MAGIC, rnd, sender, len(frames))]
    for f in frames:
        parts.append(_LEN.pack(len(f)))
        parts.append(f)
    return b"".join(parts)


def _recv_exact(sock: socket.socket, n: int, what: str) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        try:
            r = sock.recv_into(view[got:], n - got)
        except socket.timeout:
            raise TransportError(f"timed out reading {what}") from None
        except OSError as e:
            raise TransportError(f"connection lost reading {what}: {e}") from None
        if r == 0:
            raise TransportError(f"connection closed by peer while reading {what}")
        got += r
    return bytes(buf)


def _parse_envelope(data, what: str) -> tuple[int, int, int, list[tuple[int, int]]] | None:
    """``(end, round, sender, frame spans)`` of the envelope at the start of ``data`` (bytes or
    bytearray), or None while it is incomplete; TransportError naming ``what`` if it is malformed."""
    if len(data) < _HEADER.size:
        return None
    magic, rnd, sender, n = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise TransportError(f"bad envelope magic {bytes(magic)!r} reading {what}")
    if n > MAX_FRAMES:
        raise TransportError(f"envelope with {n} frames (> {MAX_FRAMES}) reading {what}")
    pos, total, spans = _HEADER.size, 0, []
    for _ in range(n):
        if len(data) < pos + _LEN.size:
            return None
        (size,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        total += size
        if total > MAX_ENVELOPE_BYTES:
            raise TransportError(f"envelope over {MAX_ENVELOPE_BYTES} bytes reading {what}")
        if len(data) < pos + size:
            return None
        spans.append((pos, pos + size))
        pos += size
    return pos, rnd, sender, spans


def read_envelope(sock: socket.socket, what: str) -> tuple[int, int, list[bytes]]:
    """Read one envelope; returns ``(round, sender, frames)``.

    Usually two system calls: a peek at what has arrived and, when it holds the whole envelope,
    one read of exactly that many bytes (nothing of a following envelope is consumed).  Otherwise
    the header, each length and each frame are read in turn."""
    try:
        peek = sock.recv(_PEEK_BYTES, socket.MSG_PEEK)
    except socket.timeout:
        raise TransportError(f"timed out reading {what}") from None
    except OSError as e:
        raise TransportError(f"connection lost reading {what}: {e}") from None
    whole = _parse_envelope(peek, what)
    if whole is not None:
        end, rnd, sender, spans = whole
        data = _recv_exact(sock, end, what)
        return rnd, sender, [data[a:b] for a, b in spans]
    magic, rnd, sender, n = _HEADER.unpack(_recv_exact(sock, _HEADER.size, what))
    if magic != MAGIC:
        raise TransportError(f"bad envelope magic {magic!r} reading {what}")
    if n > MAX_FRAMES:
        raise TransportError(f"envelope with {n} frames (> {MAX_FRAMES}) reading {what}")
    frames, total = [], 0
    for _ in range(n):
        (size,) = _LEN.unpack(_recv_exact(sock, _LEN.size, what))
        total += size
        if total > MAX_ENVELOPE_BYTES:
            raise TransportError(f"envelope over {MAX_ENVELOPE_BYTES} bytes reading {what}")
        frames.append(_recv_exact(sock, size, what))
    return rnd, sender, frames


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class CoreLink:
    """A core's end of its stream to the router."""

    def __init__(self, core_id: int, address: tuple[str, int], timeout_s: float):
        self.core_id = core_id
        self.timeout_s = timeout_s
        self.round = 0
        try:
            self.sock = socket.create_connection(address, timeout=timeout_s)
        except OSError as e:
            raise TransportError(f"core {core_id}: cannot connect to router at {address}: {e}") from None
        _tune(self.sock)
        self.sock.sendall(encode_envelope(HELLO_ROUND, core_id, []))

    def exchange(self, frames: list[bytes], step: int) -> list[bytes]:
        """Send this round's frames and wait for the frames routed to this core."""
        self.send(frames, step)
        return self.receive(step)

    def send(self, frames: list[bytes], step: int) -> None:
        """The first half of :meth:`exchange`: send this round's frames (then :meth:`receive`)."""
        where = f"core {self.core_id}, round {self.round} (step {step})"
        try:
            self.sock.sendall(encode_envelope(self.round, self.core_id, frames))
        except OSError as e:
            raise TransportError(f"{where}, phase send: connection to router lost: {e}") from None

    def receive(self, step: int) -> list[bytes]:
        """The second half of :meth:`exchange`: wait for the frames routed to this core."""
        where = f"core {self.core_id}, round {self.round} (step {step})"
        try:
            rnd, _, incoming = read_envelope(self.sock, "the router's reply")
        except TransportError as e:
            raise TransportError(f"{where}, phase receive (timeout {self.timeout_s} s): {e}") from None
        if rnd != self.round:
            raise TransportError(f"{where}, phase receive: router replied for round {rnd}")
        self.round += 1
        return incoming

    def close(self) -> None:
        self.sock.close()


class _PeerStream:
    """The incoming stream from another router, read without blocking.

    Bytes are buffered as they come (also while this router is idle, so a
    lost peer is noticed at once); :meth:`take` returns the next whole
    envelope, validated like :func:`read_envelope`, or None.
    """

    def __init__(self, node: int, sock: socket.socket):
        self.node = node
        self.sock = sock
        self.buf = bytearray()
        sock.setblocking(False)

    def fill(self) -> None:
        """Read what is there; raises TransportError on a closed or broken stream."""
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                raise TransportError(f"connection lost: {e}") from None
            if not data:
                raise TransportError("connection closed by peer")
            self.buf += data
            if len(data) < (1 << 20):
                return

    def take(self) -> tuple[int, int, list[bytes]] | None:
        buf = self.buf
        whole = _parse_envelope(buf, f"an envelope from router {self.node} (node {self.node})")
        if whole is None:
            return None
        pos, rnd, sender, spans = whole
        frames = [bytes(buf[a:b]) for a, b in spans]
        del buf[:pos]
        return rnd, sender, frames


class RouterServer:
    """A router's end: accepts one stream per local core (and per other
    router) and runs the rounds.

    One node (``nodes == 1``): ``route`` maps ``{core: [frames]}`` to
    ``{core: [frames]}`` (a :meth:`spinnray.machine.router.Router.route`) and the
    serving thread starts at once.

    Several nodes: ``route(inbox) -> (state, {node: [frames]})`` is the
    first phase (:meth:`~spinnray.machine.router.Router.route_local`) and
    ``finish(state, {node: [frames]}) -> {core: [frames]}`` the second (the
    frames other routers forwarded); the thread starts with :meth:`start`,
    given every other router's address, once all routers listen.

    The first envelope of a round may be waited for without limit (the
    machine is idle between runs); once a round has begun, every local core
    and every other router must deliver within ``timeout_s``.
    """

    def __init__(self, route, cores: list[int], host: str, timeout_s: float, *, node: int = 0,
                 nodes: int = 1, finish=None):
        if nodes > 1 and finish is None:
            raise TransportError(f"router {node}: {nodes} nodes need a finish() phase")
        self.route = route
        self.finish = finish
        self.cores = sorted(cores)
        self.timeout_s = timeout_s
        self.node = node
        self.nodes = nodes
        self.peers = [m for m in range(nodes) if m != node]
        self.name = "router" if nodes == 1 else f"router {node}"
        self.error: str | None = None
        self.rounds = 0
        self.run: tuple | None = None   # (first round, K, steps, backward, layered, forward_rounds)
        self.lock = threading.Lock()   # held while a round is routed (readers of the counters take it)
        self.listener = socket.create_server((host, 0))
        self.address = (host, self.listener.getsockname()[1])
        self.conns: dict[int, socket.socket] = {}
        self.peer_out: dict[int, socket.socket] = {}
        self.peer_in: dict[int, socket.socket] = {}
        self.streams: dict[int, _PeerStream] = {}
        self.closing = False
        self._wake_r, self._wake_w = socket.socketpair()   # close() wakes the idle thread through it
        self.thread = threading.Thread(target=self._serve, name=f"spinnray-router-{node}", daemon=True)
        self.peer_addresses: dict[int, tuple[str, int]] = {}
        if nodes == 1:
            self.thread.start()

    def start(self, peers: dict[int, tuple[str, int]]) -> None:
        """Start serving (several nodes): ``peers`` maps every other node to
        its router's address."""
        missing = sorted(set(self.peers) - set(peers))
        if missing:
            raise TransportError(f"{self.name}: no address for the routers of nodes {missing}")
        self.peer_addresses = {m: tuple(peers[m]) for m in self.peers}
        self.thread.start()

    def begin_run(self, k: int, steps: int, backward: bool = False, layered: bool = False,
                  forward_rounds: int | None = None) -> None:
        """Name steps in error messages: the next round is the first of a run
        of ``steps`` steps in rounds of ``k`` (backward: one round per step,
        last step first; layered: one round per level of the network;
        ``forward_rounds``: a forward run of that many rounds, then its reverse
        pass).  Call between runs."""
        self.run = (self.rounds, k, steps, backward, layered, forward_rounds)

    def where(self, rnd: int) -> str:
        """``round R (step S)`` of the current run, or ``round R``."""
        if self.run is None or rnd < self.run[0]:
            return f"round {rnd}"
        first, k, steps, backward, layered, forward_rounds = self.run
        if forward_rounds is not None and rnd - first >= forward_rounds:     # in the reverse pass
            first, backward = first + forward_rounds, True
        if layered:
            return f"round {rnd} ({'backward ' if backward else ''}layered run, level round {rnd - first})"
        step = steps - 1 - (rnd - first) if backward else (rnd - first) * k
        return f"round {rnd} ({'backward ' if backward else ''}step {step})"

    def _fail(self, message: str) -> None:
        if self.error is None:            # the first cause is the one worth reporting
            self.error = message
        for s in list(self.conns.values()) + list(self.peer_out.values()) + list(self.peer_in.values()):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _connect_peers(self) -> None:
        for m in self.peers:
            addr = self.peer_addresses[m]
            try:
                sock = socket.create_connection(addr, timeout=self.timeout_s)
            except OSError as e:
                raise TransportError(f"cannot connect to router {m} (node {m}) at {addr}: {e}") from None
            _tune(sock)
            sock.settimeout(self.timeout_s)
            self.peer_out[m] = sock
            sock.sendall(encode_envelope(PEER_HELLO_ROUND, self.node, []))

    def _accept(self) -> None:
        self.listener.settimeout(None)
        while len(self.conns) < len(self.cores) or len(self.peer_in) < len(self.peers):
            sock, _ = self.listener.accept()
            _tune(sock)
            sock.settimeout(self.timeout_s)
            rnd, sender, frames = read_envelope(sock, "a hello")
            if rnd == PEER_HELLO_ROUND and not frames and sender in self.peers and sender not in self.peer_in:
                self.peer_in[sender] = sock
                continue
            if rnd != HELLO_ROUND or frames or sender not in self.cores or sender in self.conns:
                sock.close()
                raise TransportError(f"unexpected hello from sender {sender} (round {rnd})")
            self.conns[sender] = sock

    def _serve(self) -> None:
        try:
            if self.peers:
                self._connect_peers()
            self._accept()
        except (TransportError, OSError) as e:
            self._fail(f"{self.name}: {e}")
            return
        for m, sock in self.peer_out.items():
            sock.setblocking(False)
        self.streams = {m: _PeerStream(m, sock) for m, sock in self.peer_in.items()}
        sel = selectors.DefaultSelector()
        for core, sock in self.conns.items():
            sel.register(sock, selectors.EVENT_READ, ("core", core))
        for m, stream in self.streams.items():
            sel.register(stream.sock, selectors.EVENT_READ, ("peer", m))
        sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        while True:
            # Idle until any local core starts a round (no limit), or close().  A
            # router that sends early is buffered; one that goes away fails us now.
            ready = sel.select()
            if self.closing:
                return
            start = False
            for key, _ in ready:
                kind, who = key.data
                if kind == "core":
                    if self._closed_while_idle(who):
                        return
                    start = True
                elif kind == "peer":
                    try:
                        self.streams[who].fill()
                    except TransportError as e:
                        self._fail(f"{self.name}: idle before {self.where(self.rounds)}, phase peer-receive: "
                                   f"lost router {who} (node {who}): {e}")
                        return
                else:
                    try:
                        self._wake_r.recv(64)
                    except OSError:
                        pass
            if start and not self._round():
                return

    def _closed_while_idle(self, core: int) -> bool:
        """A core whose stream ended between rounds (its process died) fails the
        router now, naming it, instead of when the next round reaches it."""
        try:
            data = self.conns[core].recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            data, reason = None, f"connection lost: {e}"
        else:
            reason = "connection closed by peer"
        if data:
            return False
        self._fail(f"{self.name}: core {core}, idle before {self.where(self.rounds)}, phase collect: {reason}")
        return True

    def _exchange(self, rnd: int, remote: dict[int, list[bytes]]) -> dict[int, list[bytes]] | None:
        """Send this round's frames to every other router and read theirs, at
        the same time (non-blocking, so two routers sending big envelopes to
        each other never wait on each other); None once the router failed."""
        out = {m: memoryview(encode_envelope(rnd, self.node, remote.get(m, []))) for m in self.peers}
        got: dict[int, list[bytes]] = {}
        by_sock = {self.peer_out[m]: m for m in self.peers}
        by_sock.update({self.streams[m].sock: m for m in self.peers})
        deadline = time.monotonic() + self.timeout_s
        while True:
            for m in self.peers:
                if m in got:
                    continue
                try:
                    item = self.streams[m].take()
                except TransportError as e:
                    self._fail(f"{self.name}: {self.where(rnd)}, phase peer-receive from router {m} (node {m}): {e}")
                    return None
                if item is not None:
                    r, sender, frames = item
                    if r != rnd or sender != m:
                        self._fail(f"{self.name}: router {m} sent round {r} as sender {sender}; "
                                   f"expected round {rnd}")
                        return None
                    got[m] = frames
            if not out and len(got) == len(self.peers):
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                late = [m for m in self.peers if m not in got]
                if late:
                    self._fail(f"{self.name}: {self.where(rnd)}, phase peer-receive: router {late[0]} "
                               f"(node {late[0]}) sent nothing within the timeout of {self.timeout_s} s")
                else:
                    m = min(out)
                    self._fail(f"{self.name}: {self.where(rnd)}, phase forward to router {m} (node {m}): "
                               f"it took nothing within the timeout of {self.timeout_s} s")
                return None
            readable = [self.streams[m].sock for m in self.peers if m not in got]
            writable = [self.peer_out[m] for m in out]
            try:
                r_ready, w_ready, _ = select.select(readable, writable, [], remaining)
            except (OSError, ValueError) as e:      # a socket closed under us (close())
                self._fail(f"{self.name}: {self.where(rnd)}, phase peer exchange: {e}")
                return None
            for sock in w_ready:
                m = by_sock[sock]
                try:
                    sent = sock.send(out[m])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    self._fail(f"{self.name}: {self.where(rnd)}, phase forward to router {m} (node {m}): "
                               f"lost router {m} (node {m}): {e}")
                    return None
                out[m] = out[m][sent:]
                if not len(out[m]):
                    del out[m]
            for sock in r_ready:
                m = by_sock[sock]
                try:
                    self.streams[m].fill()
                except TransportError as e:
                    self._fail(f"{self.name}: {self.where(rnd)}, phase peer-receive: lost router {m} (node {m}): {e}")
                    return None

    def _round(self) -> bool:
        """One round; False once the router failed."""
        rnd = self.rounds
        inbox = {}
        for core in self.cores:
            try:
                r, sender, frames = read_envelope(self.conns[core], f"{self.where(rnd)} from core {core}")
            except TransportError as e:
                self._fail(f"{self.name}: core {core}, {self.where(rnd)}, phase collect "
                           f"(timeout {self.timeout_s} s): {e}")
                return False
            if r != rnd or sender != core:
                self._fail(f"{self.name}: core {core} sent round {r} as sender {sender}; "
                           f"expected round {rnd}")
                return False
            inbox[core] = frames
        try:
            with self.lock:
                routed = self.route(inbox)
                if not self.peers:
                    self.rounds += 1
        except Exception as e:   # a bug in routing must reach the driver, not die with the thread
            self._fail(f"{self.name}: {self.where(rnd)}, phase route: {type(e).__name__}: {e}")
            return False
        if self.peers:
            state, remote = routed
            forwarded = self._exchange(rnd, remote)
            if forwarded is None:
                return False
            try:
                with self.lock:
                    out = self.finish(state, forwarded)
                    self.rounds += 1
            except Exception as e:
                self._fail(f"{self.name}: {self.where(rnd)}, phase deliver: {type(e).__name__}: {e}")
                return False
        else:
            out = routed
        try:
            for core in self.cores:
                self.conns[core].sendall(encode_envelope(rnd, ROUTER_ID, out.get(core, [])))
        except OSError as e:
            self._fail(f"{self.name}: {self.where(rnd)}, phase send: {e}")
            return False
        return True

    def close(self, reason: str = "router closed") -> None:
        """Close every stream: cores and routers waiting on a round fail at once."""
        self.closing = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._fail(self.error or f"{self.name}: {reason} (at {self.where(self.rounds)})")
        self.listener.close()
