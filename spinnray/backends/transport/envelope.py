"""Envelopes, the frames of one round on a stream: encoding, and reading with every declared size
checked before anything is allocated."""

from __future__ import annotations

import socket
import struct

from spinnray.errors import TransportError
from spinnray.machine.packet import MAX_FRAME_BYTES

HEADER = struct.Struct("<4sIII")
LEN = struct.Struct("<I")
MAGIC = b"SPNR"
ROUTER_ID = 0xFFFFFFFF
MAX_FRAMES = 1 << 20
MAX_ENVELOPE_BYTES = 16 * MAX_FRAME_BYTES     # 768 MiB: sixteen of the largest packets
MAX_BUFFERED = 2 * (MAX_ENVELOPE_BYTES + HEADER.size + LEN.size * MAX_FRAMES)   # a peer is at most a round ahead
PEEK_BYTES = 1 << 16     # read_envelope takes an envelope this size or smaller in one read


def encode_envelope(rnd: int, sender: int, frames: list[bytes]) -> bytes:
    parts = [HEADER.pack(MAGIC, rnd, sender, len(frames))]
    for f in frames:
        parts.append(LEN.pack(len(f)))
        parts.append(f)
    return b"".join(parts)


def recv_exact(sock: socket.socket, n: int, what: str) -> bytes:
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


def check_size(size: int, total: int, what: str) -> None:
    """A declared frame size (and the envelope's running total) within bounds, before any allocation."""
    if size > MAX_FRAME_BYTES:
        raise TransportError(f"frame of {size} bytes (> MAX_FRAME_BYTES = {MAX_FRAME_BYTES}) reading {what}")
    if total > MAX_ENVELOPE_BYTES:
        raise TransportError(f"envelope over {MAX_ENVELOPE_BYTES} bytes reading {what}")


def parse_envelope(data, what: str) -> tuple[int, int, int, list[tuple[int, int]]] | None:
    """``(end, round, sender, frame spans)`` of the envelope at the start of ``data`` (bytes or
    bytearray), or None while it is incomplete; TransportError naming ``what`` if it is malformed."""
    if len(data) < HEADER.size:
        return None
    magic, rnd, sender, n = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise TransportError(f"bad envelope magic {bytes(magic)!r} reading {what}")
    if n > MAX_FRAMES:
        raise TransportError(f"envelope with {n} frames (> {MAX_FRAMES}) reading {what}")
    pos, total, spans = HEADER.size, 0, []
    for _ in range(n):
        if len(data) < pos + LEN.size:
            return None
        (size,) = LEN.unpack_from(data, pos)
        pos += LEN.size
        total += size
        check_size(size, total, what)
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
        peek = sock.recv(PEEK_BYTES, socket.MSG_PEEK)
    except socket.timeout:
        raise TransportError(f"timed out reading {what}") from None
    except OSError as e:
        raise TransportError(f"connection lost reading {what}: {e}") from None
    whole = parse_envelope(peek, what)
    if whole is not None:
        end, rnd, sender, spans = whole
        data = recv_exact(sock, end, what)
        return rnd, sender, [data[a:b] for a, b in spans]
    magic, rnd, sender, n = HEADER.unpack(recv_exact(sock, HEADER.size, what))
    if magic != MAGIC:
        raise TransportError(f"bad envelope magic {magic!r} reading {what}")
    if n > MAX_FRAMES:
        raise TransportError(f"envelope with {n} frames (> {MAX_FRAMES}) reading {what}")
    frames, total = [], 0
    for _ in range(n):
        (size,) = LEN.unpack(recv_exact(sock, LEN.size, what))
        total += size
        check_size(size, total, what)        # before the frame's buffer is allocated
        frames.append(recv_exact(sock, size, what))
    return rnd, sender, frames


def tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
