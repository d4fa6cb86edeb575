"""Out-of-band data path for the Ray backend: TCP streams through the router.

Ray is used to place and start the actors; the per-round traffic does not
pay a Ray call (~0.7 ms here).  Each core actor keeps one TCP connection to
its router actor, where a thread runs the rounds:

    core c:  send envelope(round r, frames of c)  ->  router
    router:  once every core's envelope of round r is in, route them
    router:  send envelope(round r, frames for c)  ->  core c

An *envelope* frames the packets of one round on the stream::

    header  '<4sIII'  magic b"SPNR", round, sender id, frame count
    frames  '<I' length, then that many bytes (a packet of spinnray.packet)

Rounds are numbered per connection from 0 and never reordered, so results
do not depend on timing.  A peer that is late by more than ``timeout_s``
within a round, closes its stream, or sends a malformed envelope turns into a
:class:`TransportError` naming the core, the round and the phase.  No Ray
import here: this module is tested with plain threads.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading

from .errors import TransportError

__all__ = ["CoreLink", "RouterServer", "encode_envelope", "read_envelope", "HELLO_ROUND"]

_HEADER = struct.Struct("<4sIII")
_LEN = struct.Struct("<I")
MAGIC = b"SPNR"
HELLO_ROUND = 0xFFFFFFFF
ROUTER_ID = 0xFFFFFFFF
MAX_ENVELOPE_BYTES = 1 << 30
MAX_FRAMES = 1 << 20


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


def read_envelope(sock: socket.socket, what: str) -> tuple[int, int, list[bytes]]:
    """Read one envelope; returns ``(round, sender, frames)``."""
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
        where = f"core {self.core_id}, round {self.round} (step {step})"
        try:
            self.sock.sendall(encode_envelope(self.round, self.core_id, frames))
        except OSError as e:
            raise TransportError(f"{where}, phase send: connection to router lost: {e}") from None
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


class RouterServer:
    """The router's end: accepts one stream per core and runs the rounds.

    ``route`` maps ``{core: [frames]}`` to ``{core: [frames]}`` (a
    :meth:`spinnray.router.Router.route`).  The first envelope of a round may
    be waited for without limit (the machine is idle between runs); once a
    round has begun, every other core must deliver within ``timeout_s``.
    """

    def __init__(self, route, cores: list[int], host: str, timeout_s: float):
        self.route = route
        self.cores = sorted(cores)
        self.timeout_s = timeout_s
        self.error: str | None = None
        self.rounds = 0
        self.lock = threading.Lock()   # held while a round is routed (readers of the counters take it)
        self.listener = socket.create_server((host, 0))
        self.address = (host, self.listener.getsockname()[1])
        self.conns: dict[int, socket.socket] = {}
        self.closing = False
        self._wake_r, self._wake_w = socket.socketpair()   # close() wakes the idle thread through it
        self.thread = threading.Thread(target=self._serve, name="spinnray-router", daemon=True)
        self.thread.start()

    def _fail(self, message: str) -> None:
        if self.error is None:            # the first cause is the one worth reporting
            self.error = message
        for s in self.conns.values():
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self) -> None:
        self.listener.settimeout(None)
        while len(self.conns) < len(self.cores):
            sock, _ = self.listener.accept()
            _tune(sock)
            sock.settimeout(self.timeout_s)
            rnd, sender, frames = read_envelope(sock, "a hello")
            if rnd != HELLO_ROUND or frames or sender not in self.cores or sender in self.conns:
                sock.close()
                raise TransportError(f"unexpected hello from sender {sender} (round {rnd})")
            self.conns[sender] = sock

    def _serve(self) -> None:
        try:
            self._accept()
        except (TransportError, OSError) as e:
            self._fail(f"router: {e}")
            return
        sel = selectors.DefaultSelector()
        for sock in self.conns.values():
            sel.register(sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        while True:
            sel.select()            # idle until any core starts a round (no limit), or close()
            if self.closing:
                return
            inbox = {}
            for core in self.cores:
                try:
                    rnd, sender, frames = read_envelope(self.conns[core], f"round {self.rounds} from core {core}")
                except TransportError as e:
                    self._fail(f"router: core {core}, round {self.rounds}, phase collect "
                               f"(timeout {self.timeout_s} s): {e}")
                    return
                if rnd != self.rounds or sender != core:
                    self._fail(f"router: core {core} sent round {rnd} as sender {sender}; "
                               f"expected round {self.rounds}")
                    return
                inbox[core] = frames
            try:
                with self.lock:
                    out = self.route(inbox)
            except Exception as e:   # a bug in routing must reach the driver, not die with the thread
                self._fail(f"router: round {self.rounds}, phase route: {type(e).__name__}: {e}")
                return
            try:
                for core in self.cores:
                    self.conns[core].sendall(encode_envelope(self.rounds, ROUTER_ID, out.get(core, [])))
            except OSError as e:
                self._fail(f"router: round {self.rounds}, phase send: {e}")
                return
            self.rounds += 1

    def close(self, reason: str = "router closed") -> None:
        """Close every stream: cores waiting on a round fail at once."""
        self.closing = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._fail(self.error or reason)
        self.listener.close()
