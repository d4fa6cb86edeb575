"""A core's end of its stream to its router (its chip's or its node's): connect and authenticate, then one envelope out
and one back per round."""

from __future__ import annotations

import socket
import time

from spinnray.backends.transport.auth import (
    ANSWER,
    CHALLENGE,
    ROLE_CORE,
    Refused,
    answer_ok,
    check_secret,
    make_hello,
    recv_fixed,
)
from spinnray.backends.transport.envelope import encode_envelope, read_envelope, tune
from spinnray.errors import TransportError

CORE_ATTEMPTS = 3        # a core refused during the handshake (e.g. too slow) connects again this often


def core_wait_s(timeout_s: float) -> float:
    """How long a core waits for the router's reply to a round: a margin beyond the router's own
    ``timeout_s`` per core, so that the router fails first and names the late core."""
    return 1.5 * timeout_s + 1.0


class CoreLink:
    """A core's end of its stream to router ``router`` (the router index: its chip's or node's).

    Connecting authenticates both ways with the run's ``secret`` (module
    docstring): a router that cannot prove the secret is refused.  A core
    the router dropped during the handshake (too slow, say) connects again,
    up to ``CORE_ATTEMPTS`` times within ``timeout_s``."""

    def __init__(self, core_id: int, address: tuple[str, int], timeout_s: float, *, secret: bytes,
                 router: int = 0):
        self.core_id = core_id
        self.timeout_s = timeout_s
        self.round = 0
        secret = check_secret(secret)
        deadline = time.monotonic() + timeout_s
        for attempt in range(1, CORE_ATTEMPTS + 1):
            try:
                sock = socket.create_connection(address, timeout=max(deadline - time.monotonic(), 0.001))
            except OSError as e:
                raise TransportError(f"core {core_id}: cannot connect to router at {address}: {e}") from None
            try:
                tune(sock)
                self._authenticate(sock, secret, address, router)
            except Refused as e:
                sock.close()
                if attempt == CORE_ATTEMPTS or time.monotonic() >= deadline:
                    raise TransportError(f"{e} ({attempt} attempt(s))") from None
                time.sleep(0.05)
                continue
            except BaseException:
                sock.close()
                raise
            break
        self.sock = sock
        # The router waits timeout_s for each core; a core waits longer for the reply, so a late
        # core is named by the router (which knows whom it waits on), not by the cores waiting
        # behind it, which then fail at once when the router closes their streams.
        sock.settimeout(core_wait_s(timeout_s))

    def _authenticate(self, sock: socket.socket, secret: bytes, address, router: int) -> None:
        where = f"core {self.core_id}: router at {address}"
        challenge = recv_fixed(sock, CHALLENGE.size, "its challenge", where)
        hello, router_nonce, client_nonce = make_hello(secret, challenge, ROLE_CORE, self.core_id, router, where)
        try:
            sock.sendall(hello)
        except OSError as e:
            raise Refused(f"{where}: connection lost sending the hello: {e}") from None
        try:
            answer = recv_fixed(sock, ANSWER.size, "its answer", where)
        except Refused as e:
            raise Refused(f"{e}: the router refused this core") from None
        if not answer_ok(secret, answer, router_nonce, client_nonce, ROLE_CORE, self.core_id, router):
            raise TransportError(f"{where} failed authentication: it cannot prove this run's secret "
                                 f"(not this run's router)")

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
            raise TransportError(f"{where}, phase receive (timeout {core_wait_s(self.timeout_s):g} s): {e}") from None
        if rnd != self.round:
            raise TransportError(f"{where}, phase receive: router replied for round {rnd}")
        self.round += 1
        return incoming

    def close(self) -> None:
        self.sock.close()
