"""The router's end: a thread that accepts and authenticates its cores and peer routers, then runs
the rounds (gather every local core's envelope, route, exchange with the other routers, deliver)."""

from __future__ import annotations

import hmac
import secrets
import select
import selectors
import socket
import threading
import time

from spinnray.backends.transport.auth import (
    ANSWER,
    AUTH_TIMEOUT_S,
    CHALLENGE,
    HELLO,
    MAGIC_ANSWER,
    MAGIC_CHALLENGE,
    MAGIC_HELLO,
    ROLE_CORE,
    ROLE_NAMES,
    ROLE_ROUTER,
    answer_ok,
    check_secret,
    client_mac,
    make_hello,
    router_mac,
)
from spinnray.backends.transport.envelope import (
    MAX_BUFFERED,
    ROUTER_ID,
    encode_envelope,
    parse_envelope,
    read_envelope,
    tune,
)
from spinnray.errors import TransportError

_MAX_PENDING = 128        # connections waiting to authenticate beyond the expected peers; the oldest is dropped
_MAX_NOTES = 20           # reasons of rejected connections kept verbatim (the count is exact)


class _PeerStream:
    """The incoming stream from another router, read without blocking.

    Bytes are buffered as they come (also while this router is idle, so a
    lost peer is noticed at once); :meth:`take` returns the next whole
    envelope, validated like :func:`read_envelope`, or None.
    """

    def __init__(self, router: int, sock: socket.socket, name: str):
        self.router = router
        self.name = name              # "router m (node n)", for messages
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
            if len(self.buf) > MAX_BUFFERED:
                raise TransportError(f"more than {MAX_BUFFERED} bytes buffered (two whole envelopes)")
            if len(data) < (1 << 20):
                return

    def take(self) -> tuple[int, int, list[bytes]] | None:
        buf = self.buf
        whole = parse_envelope(buf, f"an envelope from {self.name}")
        if whole is None:
            return None
        pos, rnd, sender, spans = whole
        frames = [bytes(buf[a:b]) for a, b in spans]
        del buf[:pos]
        return rnd, sender, frames


class _Pending:
    """A connection accepted and challenged, whose hello is still coming."""

    __slots__ = ("sock", "peer", "nonce", "deadline", "buf")

    def __init__(self, sock: socket.socket, peer, nonce: bytes, deadline: float):
        self.sock, self.peer, self.nonce, self.deadline = sock, peer, nonce, deadline
        self.buf = b""


class _Outgoing:
    """This router's connection to another router, while it authenticates."""

    __slots__ = ("router", "sock", "buf", "router_nonce", "client_nonce")

    def __init__(self, router: int, sock: socket.socket):
        self.router, self.sock = router, sock
        self.buf = bytearray()
        self.router_nonce: bytes | None = None
        self.client_nonce: bytes | None = None


class RouterServer:
    """A router's end: accepts one stream per local core (and per other
    router) and runs the rounds.

    One router (``routers == 1``): ``route`` maps ``{core: [frames]}`` to
    ``{core: [frames]}`` (a :meth:`spinnray.machine.router.Router.route`) and the
    serving thread starts at once.

    Every connection authenticates first (module docstring) with the run's
    ``secret``; one that does not is dropped, counted in
    ``rejected_connections`` (``on_reject(reason)`` is called too) and never
    disturbs the run.  The listener closes once every local core and every
    other router is in, or the router fails.

    Several routers (one per chip or per node; this one is ``router`` of
    ``routers``, and ``router_node[m]`` is the node of router ``m``, which
    error messages name): ``route(inbox) -> (state, {router: [frames]})`` is
    the first phase (:meth:`~spinnray.machine.router.Router.route_local`) and
    ``finish(state, {router: [frames]}) -> {core: [frames]}`` the second (the
    frames other routers forwarded); the thread starts with :meth:`start`,
    given every other router's address, once all routers listen.

    The first envelope of a round may be waited for without limit (the
    machine is idle between runs); once a round has begun, every local core
    and every other router must deliver within ``timeout_s``.
    """

    def __init__(self, route, cores: list[int], host: str, timeout_s: float, *, secret: bytes, router: int = 0,
                 routers: int = 1, router_node: list[int] | None = None, finish=None, on_reject=None):
        if routers > 1 and finish is None:
            raise TransportError(f"router {router}: {routers} routers need a finish() phase")
        self.secret = check_secret(secret)
        self.auth_timeout_s = min(AUTH_TIMEOUT_S, timeout_s)
        self.on_reject = on_reject        # called with each reason (under self.lock), e.g. to count it
        self.rejected_connections = 0
        self.rejections: list[str] = []   # the first _MAX_NOTES reasons
        self.route = route
        self.finish = finish
        self.cores = sorted(cores)
        self.timeout_s = timeout_s
        self.router = router
        self.routers = routers
        self.router_node = list(router_node) if router_node is not None else list(range(routers))
        self.peers = [m for m in range(routers) if m != router]
        self.name = "router" if routers == 1 else f"router {router}"
        self.error: str | None = None
        self.late_core: int | None = None    # the core whose round it failed waiting for (a hang or a stop)
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
        self.thread = threading.Thread(target=self._serve, name=f"spinnray-router-{router}", daemon=True)
        self.peer_addresses: dict[int, tuple[str, int]] = {}
        if routers == 1:
            self.thread.start()

    def start(self, peers: dict[int, tuple[str, int]]) -> None:
        """Start serving (several routers): ``peers`` maps every other router
        to its address."""
        missing = sorted(set(self.peers) - set(peers))
        if missing:
            raise TransportError(f"{self.name}: no address for routers {missing}")
        self.peer_addresses = {m: tuple(peers[m]) for m in self.peers}
        self.thread.start()

    def _peer(self, m: int) -> str:
        """Router ``m`` named with its node, for messages."""
        return f"router {m} (node {self.router_node[m]})"

    def begin_run(self, k: int, steps: int, backward: bool = False, layered: bool = False,
                  forward_rounds: int | None = None) -> None:
        """Name steps in error messages: the next round is the first of a run
        of ``steps`` steps in rounds of ``k`` (backward: the same rounds,
        last first; layered: one round per level of the network;
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
        step = (-(-steps // k) - 1 - (rnd - first)) * k if backward else (rnd - first) * k   # a round's first step
        return f"round {rnd} ({'backward ' if backward else ''}step {step})"

    def _fail(self, message: str) -> None:
        if self.error is None:            # the first cause is the one worth reporting
            self.error = message
        self._close_listener()            # cores still connecting fail at once, not after their timeout
        for s in list(self.conns.values()) + list(self.peer_out.values()) + list(self.peer_in.values()):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _close_listener(self) -> None:
        try:
            self.listener.close()
        except OSError:
            pass

    def _reject(self, reason: str, peer=None) -> None:
        """Count a connection dropped before it authenticated; note why (bounded, no attacker bytes)."""
        where = f" from {peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
        note = f"{self.name}: rejected a connection{where}: {reason}"[:300]
        with self.lock:
            self.rejected_connections += 1
            if len(self.rejections) < _MAX_NOTES:
                self.rejections.append(note)
            if self.on_reject is not None:
                self.on_reject(note)

    def _setup(self) -> None:
        """Connect to every other router and accept every local core and other
        router, all authenticated, then close the listener.

        One selector over the listener, every connection still authenticating
        (in or out) and the wake-up socket: no single connection is waited for,
        so a stranger that connects first and says nothing delays no one; it is
        dropped ``auth_timeout_s`` after its accept, or when the listener closes."""
        sel = selectors.DefaultSelector()
        pending: dict[socket.socket, _Pending] = {}
        outgoing: dict[int, _Outgoing] = {}
        try:
            self.listener.setblocking(False)
            sel.register(self.listener, selectors.EVENT_READ, ("listen", None))
            sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
            peer_deadline = time.monotonic() + self.timeout_s
            for m in self.peers:
                out = outgoing[m] = self._connect_peer(m)
                sel.register(out.sock, selectors.EVENT_READ, ("out", out))
            while (len(self.conns) < len(self.cores) or len(self.peer_in) < len(self.peers)
                   or len(self.peer_out) < len(self.peers)):
                deadlines = [p.deadline for p in pending.values()]
                if len(self.peer_out) < len(self.peers):
                    deadlines.append(peer_deadline)
                ready = sel.select(max(0.0, min(deadlines) - time.monotonic()) if deadlines else None)
                if self.closing:
                    raise TransportError(f"closed while connecting ({self.error or 'close()'})")
                for key, _ in ready:
                    kind, item = key.data
                    if kind == "listen":
                        self._accept_pending(sel, pending)
                    elif kind == "in" and item.sock in pending:
                        self._read_hello(sel, pending, item)
                    elif kind == "out" and item.router not in self.peer_out:
                        self._peer_handshake(sel, item)
                    elif kind == "wake":
                        try:
                            self._wake_r.recv(64)
                        except OSError:
                            pass
                now = time.monotonic()
                for p in [p for p in pending.values() if p.deadline <= now]:
                    self._drop(sel, pending, p, f"no authentication within {self.auth_timeout_s:g} s")
                if len(self.peer_out) < len(self.peers) and now >= peer_deadline:
                    m = min(set(self.peers) - set(self.peer_out))
                    raise TransportError(f"{self._peer(m)} at {self.peer_addresses[m]} did not authenticate "
                                         f"within the timeout of {self.timeout_s} s")
        finally:
            # All in (or failed): no later connection is possible.
            self._close_listener()
            for p in list(pending.values()):
                self._drop(None, pending, p, "still unauthenticated when the listener closed")
            for m, out in outgoing.items():
                if self.peer_out.get(m) is not out.sock:
                    out.sock.close()
            sel.close()

    def _accept_pending(self, sel, pending: dict) -> None:
        """Accept what is waiting (a bounded batch) and send each its challenge."""
        for _ in range(64):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if self.closing:
                    raise TransportError("closed while connecting") from None
                time.sleep(0.01)    # e.g. out of file descriptors: the drops above free some
                self._reject(f"accept failed: {e.strerror or type(e).__name__}")
                return
            p = _Pending(sock, peer, secrets.token_bytes(32), time.monotonic() + self.auth_timeout_s)
            try:
                sock.setblocking(False)
                tune(sock)
                if sock.send(CHALLENGE.pack(MAGIC_CHALLENGE, p.nonce)) != CHALLENGE.size:
                    raise OSError("the challenge did not fit the send buffer")
            except OSError as e:
                self._reject(f"connection lost before the challenge went out ({e.strerror or e})", peer)
                sock.close()
                continue
            pending[sock] = p
            sel.register(sock, selectors.EVENT_READ, ("in", p))
            if len(pending) > _MAX_PENDING + len(self.cores) + len(self.peers):
                self._drop(sel, pending, min(pending.values(), key=lambda q: q.deadline),
                           "too many connections waiting to authenticate (the oldest is dropped)")

    def _drop(self, sel, pending: dict, p: _Pending, reason: str) -> None:
        pending.pop(p.sock, None)
        if sel is not None:
            try:
                sel.unregister(p.sock)
            except (KeyError, ValueError, OSError):
                pass
        self._reject(reason, p.peer)      # counted before the stranger sees its connection end
        p.sock.close()

    def _read_hello(self, sel, pending: dict, p: _Pending) -> None:
        """Take what has arrived of a hello (never more than its 76 bytes); once whole, check it."""
        try:
            data = p.sock.recv(HELLO.size - len(p.buf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._drop(sel, pending, p, f"connection lost before authenticating ({e.strerror or type(e).__name__})")
            return
        if not data:
            self._drop(sel, pending, p, f"closed after {len(p.buf)} of the {HELLO.size} bytes of a hello")
            return
        p.buf += data
        if len(p.buf) < HELLO.size:
            return
        magic, role, ident, client_nonce, mac = HELLO.unpack(p.buf)
        if magic != MAGIC_HELLO or role not in ROLE_NAMES:
            self._drop(sel, pending, p, "malformed hello (not a spinnray hello)")
            return
        if not hmac.compare_digest(mac, client_mac(self.secret, p.nonce, role, ident, self.router)):
            self._drop(sel, pending, p, f"failed authentication (wrong MAC) claiming {ROLE_NAMES[role]} {ident}")
            return
        # Authentic: from a holder of this run's secret, so one of ours.
        del pending[p.sock]
        sel.unregister(p.sock)
        sock = p.sock
        if role == ROLE_CORE and (ident not in self.cores or ident in self.conns):
            sock.close()
            raise TransportError(f"unexpected hello from sender {ident} (core "
                                 f"{'already connected' if ident in self.conns else 'not on this router'})")
        if role == ROLE_ROUTER and (ident not in self.peers or ident in self.peer_in):
            sock.close()
            raise TransportError(f"unexpected hello from sender {ident} (router "
                                 f"{'already connected' if ident in self.peer_in else 'not a peer'})")
        answer = ANSWER.pack(MAGIC_ANSWER, router_mac(self.secret, p.nonce, client_nonce, role, ident, self.router))
        try:
            if sock.send(answer) != ANSWER.size:
                raise OSError("the answer did not fit the send buffer")
        except OSError as e:
            self._reject(f"{ROLE_NAMES[role]} {ident}: connection lost during authentication "
                         f"({e.strerror or e})", p.peer)
            sock.close()
            return
        if role == ROLE_CORE:
            sock.settimeout(self.timeout_s)
            self.conns[ident] = sock
        else:
            self.peer_in[ident] = sock

    def _connect_peer(self, m: int) -> _Outgoing:
        addr = self.peer_addresses[m]
        try:
            sock = socket.create_connection(addr, timeout=self.timeout_s)
        except OSError as e:
            raise TransportError(f"cannot connect to {self._peer(m)} at {addr}: {e}") from None
        tune(sock)
        sock.setblocking(False)
        return _Outgoing(m, sock)

    def _peer_handshake(self, sel, out: _Outgoing) -> None:
        """This router as the client of router ``out.router``: read its challenge, send the hello,
        check its answer.  Any failure fails this router (it cannot run without that peer)."""
        m = out.router
        what = f"{self._peer(m)} at {self.peer_addresses[m]}"
        try:
            data = out.sock.recv(CHALLENGE.size - len(out.buf))      # the answer has the same size
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            raise TransportError(f"lost {what} during authentication: {e}") from None
        if not data:
            raise TransportError(f"{what} closed the connection during authentication "
                                 f"({'before its challenge' if out.router_nonce is None else 'it refused us'})")
        out.buf += data
        if len(out.buf) < CHALLENGE.size:
            return
        if out.router_nonce is None:
            hello, out.router_nonce, out.client_nonce = make_hello(self.secret, bytes(out.buf), ROLE_ROUTER,
                                                                   self.router, m, what)
            out.buf = bytearray()
            try:
                out.sock.settimeout(self.timeout_s)
                out.sock.sendall(hello)
                out.sock.setblocking(False)
            except OSError as e:
                raise TransportError(f"lost {what} sending the hello: {e}") from None
            return
        if not answer_ok(self.secret, bytes(out.buf), out.router_nonce, out.client_nonce, ROLE_ROUTER, self.router, m):
            raise TransportError(f"{what} failed authentication: it cannot prove this run's secret")
        sel.unregister(out.sock)
        out.sock.settimeout(self.timeout_s)
        self.peer_out[m] = out.sock

    def _serve(self) -> None:
        try:
            self._setup()
        except (TransportError, OSError) as e:
            self._fail(f"{self.name}: {e}")
            return
        for m, sock in self.peer_out.items():
            sock.setblocking(False)
        self.streams = {m: _PeerStream(m, sock, self._peer(m)) for m, sock in self.peer_in.items()}
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
                                   f"lost {self._peer(who)}: {e}")
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
        self.late_core = core
        self._fail(f"{self.name}: core {core}, idle before {self.where(self.rounds)}, phase collect: {reason}")
        return True

    def _exchange(self, rnd: int, remote: dict[int, list[bytes]]) -> dict[int, list[bytes]] | None:
        """Send this round's frames to every other router and read theirs, at
        the same time (non-blocking, so two routers sending big envelopes to
        each other never wait on each other); None once the router failed."""
        out = {m: memoryview(encode_envelope(rnd, self.router, remote.get(m, []))) for m in self.peers}
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
                    self._fail(f"{self.name}: {self.where(rnd)}, phase peer-receive from {self._peer(m)}: {e}")
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
                    self._fail(f"{self.name}: {self.where(rnd)}, phase peer-receive: {self._peer(late[0])} "
                               f"sent nothing within the timeout of {self.timeout_s} s")
                else:
                    m = min(out)
                    self._fail(f"{self.name}: {self.where(rnd)}, phase forward to {self._peer(m)}: "
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
                    self._fail(f"{self.name}: {self.where(rnd)}, phase forward to {self._peer(m)}: "
                               f"lost {self._peer(m)}: {e}")
                    return None
                out[m] = out[m][sent:]
                if not len(out[m]):
                    del out[m]
            for sock in r_ready:
                m = by_sock[sock]
                try:
                    self.streams[m].fill()
                except TransportError as e:
                    self._fail(f"{self.name}: {self.where(rnd)}, phase peer-receive: lost {self._peer(m)}: {e}")
                    return None

    def _round(self) -> bool:
        """One round; False once the router failed."""
        rnd = self.rounds
        inbox = {}
        for core in self.cores:
            try:
                r, sender, frames = read_envelope(self.conns[core], f"{self.where(rnd)} from core {core}")
            except TransportError as e:
                self.late_core = core
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
