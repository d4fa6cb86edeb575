"""The handshake that opens every router stream: a mutual HMAC-SHA256 challenge-response bound to
the run's secret, the router and the peer's role and id (the package docstring gives the messages)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import struct

from spinnray.errors import TransportError

# The handshake (module docstring).
CHALLENGE = struct.Struct("<4s32s")
HELLO = struct.Struct("<4sII32s32s")
ANSWER = struct.Struct("<4s32s")
IDENT = struct.Struct("<III")
MAGIC_CHALLENGE, MAGIC_HELLO, MAGIC_ANSWER = b"SPNC", b"SPNH", b"SPNA"
ROLE_CORE, ROLE_ROUTER = 1, 2
ROLE_NAMES = {ROLE_CORE: "core", ROLE_ROUTER: "router"}
AUTH_TIMEOUT_S = 5.0      # a connection must authenticate this soon after its accept (at most timeout_s)
MIN_SECRET_BYTES = 16


def check_secret(secret) -> bytes:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise TransportError(f"the run's secret must be bytes of at least {MIN_SECRET_BYTES} (secrets.token_bytes(32)), "
                             f"got {type(secret).__name__}"
                             f"{f' of {len(secret)} bytes' if isinstance(secret, (bytes, bytearray)) else ''}")
    return secret


def client_mac(secret: bytes, router_nonce: bytes, role: int, ident: int, router: int) -> bytes:
    """What a client proves: it knows the secret, answering this router's nonce as ``role`` ``ident``."""
    return hmac.digest(secret, b"spinnray/1 client" + router_nonce + IDENT.pack(role, ident, router), hashlib.sha256)


def router_mac(secret: bytes, router_nonce: bytes, client_nonce: bytes, role: int, ident: int,
                router: int) -> bytes:
    """What the router proves back: it knows the secret and saw exactly this hello."""
    return hmac.digest(secret, b"spinnray/1 router" + router_nonce + client_nonce + IDENT.pack(role, ident, router),
                       hashlib.sha256)


def make_hello(secret: bytes, challenge: bytes, role: int, ident: int, router: int, what: str) -> tuple[bytes, bytes, bytes]:
    """``(hello, router nonce, client nonce)`` answering ``challenge``; TransportError if it is none."""
    magic, router_nonce = CHALLENGE.unpack(challenge)
    if magic != MAGIC_CHALLENGE:
        raise TransportError(f"{what} sent no spinnray challenge (not a spinnray router)")
    client_nonce = secrets.token_bytes(32)
    mac = client_mac(secret, router_nonce, role, ident, router)
    return HELLO.pack(MAGIC_HELLO, role, ident, client_nonce, mac), router_nonce, client_nonce


def answer_ok(secret: bytes, answer: bytes, router_nonce: bytes, client_nonce: bytes, role: int, ident: int,
               router: int) -> bool:
    magic, mac = ANSWER.unpack(answer)
    return magic == MAGIC_ANSWER and hmac.compare_digest(
        mac, router_mac(secret, router_nonce, client_nonce, role, ident, router))


class Refused(TransportError):
    """The router closed the connection before answering: it dropped this client."""


def recv_fixed(sock: socket.socket, n: int, what: str, where: str) -> bytes:
    """The ``n`` bytes of a handshake message (a client's blocking read): Refused when the
    other end closes or resets the connection, TransportError on the socket's timeout."""
    buf = b""
    while len(buf) < n:
        try:
            got = sock.recv(n - len(buf))
        except socket.timeout:
            raise TransportError(f"{where}: timed out waiting for {what}") from None
        except OSError as e:
            raise Refused(f"{where}: connection lost waiting for {what}: {e}") from None
        if not got:
            raise Refused(f"{where}: connection closed waiting for {what}")
        buf += got
    return buf
