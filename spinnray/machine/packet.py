"""The one wire format: a batch of events from one core, as a msgpack frame.

A frame is ``msgpack.packb`` of an array of exactly 9 items, in this order:

====  ==========  =====  ==========================================================
item  name        type   contract
====  ==========  =====  ==========================================================
0     version     int    ``VERSION`` (1)
1     kind        int    ``Kind.SPIKE`` (0) or ``Kind.ERROR`` (1)
2     src         int    source core id, ``0 <= src < 2**32``
3     step        int    base time step, ``0 <= step < 2**32``
4     n           int    number of events, ``0 <= n <= MAX_EVENTS``
5     keys        bin    ``n * 4`` bytes, ``<u4``: routing key of each event
6     offsets     bin    ``n * 2`` bytes, ``<u2``: event step = ``step + offset``,
                         which stays ``< 2**32``
7     batch       bin    empty (one sample: every event is sample 0), or
                         ``n * 2`` bytes, ``<u2``: sample index of each event
8     payload     bin    SPIKE: empty; ERROR: ``n * 4`` bytes, ``<f4``, all finite
====  ==========  =====  ==========================================================

Design.  The schema is fixed, so the header is a plain array (no field names on
the wire), and every per-event field is one raw little-endian ``bin`` that is
written with ``ndarray.tobytes`` and read back with ``np.frombuffer`` (zero
copy).  Packing the same events as msgpack lists of ints is two orders of
magnitude slower from 1e4 events up (~300x in DESIGN.md section 4, 80-230x
for encode + decode in ``bench/bench_codec.py``).  Nothing that arrives on the
wire is ever unpickled or otherwise executed: a frame is only data.

A frame is exactly the bytes ``msgpack.packb`` writes for these items: ints in
their smallest encoding (positive fixint, uint8, uint16, uint32) and bins with
the smallest length prefix (bin8, bin16, bin32).  A frame that decodes therefore
re-encodes to the same bytes.

Error contract.  ``encode`` refuses to build an invalid frame and ``decode``
refuses to accept one: both raise ``PacketError`` whose ``reason`` names the
field, the offending value and what was expected.  ``decode`` raises nothing
but ``PacketError``, whatever bytes it is given, in time and memory linear in
the frame's size: it reads the header bytes itself, checks every declared
length before using it, never descends into a nested container (a wrong type
is named by its type byte) and never formats more than a few bytes of a frame
into a reason.
"""

from __future__ import annotations

import enum
import operator
import struct
from typing import NamedTuple

import msgpack
import numpy as np

from spinnray.errors import PacketError

VERSION = 1
MAX_EVENTS = 1 << 22

KEY_DTYPE = np.dtype("<u4")
OFFSET_DTYPE = np.dtype("<u2")
BATCH_DTYPE = np.dtype("<u2")
PAYLOAD_DTYPE = np.dtype("<f4")

_N_ITEMS = 9
_U16 = 1 << 16
_U32 = 1 << 32
# Largest header: fixarray (1) + version and kind (1 each) + three uint32 (5
# each) + four bin32 length prefixes (5 each) = 38 bytes; 64 leaves slack.
_HEADER_SLACK = 64
_EVENT_BYTES = KEY_DTYPE.itemsize + OFFSET_DTYPE.itemsize + BATCH_DTYPE.itemsize + PAYLOAD_DTYPE.itemsize
MAX_FRAME_BYTES = MAX_EVENTS * _EVENT_BYTES + _HEADER_SLACK

class Kind(enum.IntEnum):
    """What the events of a packet are."""

    SPIKE = 0  # no payload
    ERROR = 1  # one float32 (an error or gradient signal) per event


_KINDS = frozenset(k.value for k in Kind)
_KIND_NAMES = ", ".join(f"{k.name}={k.value}" for k in Kind)
_KIND_OF = tuple(Kind(v) for v in range(len(Kind)))   # value -> Kind, cheaper than Kind(v)
assert tuple(k.value for k in _KIND_OF) == (0, 1)   # the fast check in decode relies on it


class Packet(NamedTuple):
    """A decoded frame: ``n`` events from core ``src`` around step ``step``.

    Arrays decoded from a frame are read-only views of its bytes.
    """

    kind: Kind
    src: int
    step: int
    keys: np.ndarray  # (n,) uint32
    offsets: np.ndarray  # (n,) uint16
    batch: np.ndarray | None  # (n,) uint16, or None: every event is sample 0
    payload: np.ndarray | None  # (n,) float32 for ERROR, None for SPIKE

    @property
    def n(self) -> int:
        """Number of events."""
        return len(self.keys)


# --------------------------------------------------------------------- encode


def _index(name: str, value, hi: int) -> int:
    """``value`` as a Python int in ``[0, hi)``; bools are not ints here."""
    if isinstance(value, (bool, np.bool_)):
        raise PacketError(f"{name} must be an int, got bool {value!r}")
    try:
        i = operator.index(value)
    except TypeError:
        raise PacketError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if not 0 <= i < hi:
        raise PacketError(f"{name} must be in [0, {hi}), got {i}")
    return i


def _int_array(name: str, values, dtype: np.dtype, n: int | None) -> np.ndarray:
    """``values`` as a 1-D array of ``dtype``, checked to fit it, of length ``n`` if given."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise PacketError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and len(a) != n:
        raise PacketError(f"{name} must have one entry per key ({n}), got {len(a)}")
    if a.size == 0:
        # np.asarray([]) is float64; an empty array has no values to check.
        return np.empty(0, dtype)
    if a.dtype == dtype:
        return a  # the fast path: nothing to check or convert
    if a.dtype.kind not in "iu":
        raise PacketError(f"{name} must hold integers, got dtype {a.dtype}")
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    have = np.iinfo(a.dtype)
    # Skip the scan when the input dtype cannot hold an out-of-range value.
    if have.min < lo or have.max > hi:
        amin, amax = int(a.min()), int(a.max())
        if amin < lo or amax > hi:
            bad = amin if amin < lo else amax
            raise PacketError(f"{name} must be in [{lo}, {hi + 1}), got {bad}")
    return a.astype(dtype)


def _payload_array(values, n: int) -> np.ndarray:
    """``values`` as a 1-D float32 array of length ``n``, every value finite."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise PacketError(f"payload must be 1-D, got shape {a.shape}")
    if len(a) != n:
        raise PacketError(f"payload must have one entry per key ({n}), got {len(a)}")
    if a.size and a.dtype.kind not in "iuf":
        raise PacketError(f"payload must hold real numbers, got dtype {a.dtype}")
    if a.dtype == PAYLOAD_DTYPE:
        f32 = a
    else:
        # A finite float64 beyond float32's range becomes inf: the check below catches it.
        with np.errstate(over="ignore"):
            f32 = a.astype(PAYLOAD_DTYPE)
    finite = np.isfinite(f32)
    if not finite.all():
        i = int(np.argmin(finite))
        raise PacketError(f"payload must be finite as float32, got {a[i]} at event {i}")
    return f32


def encode(kind, src, step, keys, offsets, batch=None, payload=None) -> bytes:
    """One frame holding ``len(keys)`` events.

    ``keys`` are routing keys in ``[0, 2**32)``; ``offsets`` in ``[0, 2**16)``
    give each event's step as ``step + offset``; ``batch`` is None (one sample)
    or each event's sample index in ``[0, 2**16)``; ``payload`` is None for
    SPIKE and one finite float32 per event for ERROR.  Arrays already of the
    wire dtype are not converted, only serialised.

    Raises ``PacketError`` naming the field and value if anything is invalid.
    """
    kind = Kind(_index("kind", kind, len(Kind)))
    src = _index("src", src, _U32)
    step = _index("step", step, _U32)
    keys = _int_array("keys", keys, KEY_DTYPE, None)
    n = len(keys)
    if n > MAX_EVENTS:
        raise PacketError(f"a packet holds at most MAX_EVENTS={MAX_EVENTS} events, got {n}")
    offsets = _int_array("offsets", offsets, OFFSET_DTYPE, n)
    # Offsets are < 2**16, so only a step this close to 2**32 can overflow.
    if n and step >= _U32 - _U16 and step + int(offsets.max()) >= _U32:
        raise PacketError(f"step + offset must be < 2**32, got step {step} + offset {int(offsets.max())}")
    batch_bin = b"" if batch is None else _int_array("batch", batch, BATCH_DTYPE, n).tobytes()
    if kind is Kind.SPIKE:
        if payload is not None:
            raise PacketError("a SPIKE packet carries no payload, got one (pass payload=None)")
        payload_bin = b""
    else:
        if payload is None:
            raise PacketError(f"an ERROR packet needs a payload of {n} float32 values, got None")
        payload_bin = _payload_array(payload, n).tobytes()
    frame = [VERSION, int(kind), src, step, n, keys.tobytes(), offsets.tobytes(), batch_bin, payload_bin]
    return msgpack.packb(frame, use_bin_type=True)


def encode_packet(p: Packet) -> bytes:
    """``encode`` of the fields of ``p``."""
    return encode(*p)


# --------------------------------------------------------------------- decode
#
# The decoder reads the frame's bytes itself and never hands them to msgpack:
# the 9 items have a fixed order and a fixed type, so it reads the array header,
# the five ints and the four bin length prefixes in place, checks every declared
# length against ``n`` and against the bytes that remain *before* it uses it,
# and views the event fields with ``np.frombuffer`` at their offsets.  It never
# descends into a container: a nested array, map or ext where a field should be
# is refused by its type byte.  Work and memory are therefore linear in the
# frame's size whatever it holds, and nothing can recurse.
#
# The frame must be exactly what ``encode`` (``msgpack.packb``) writes: ints
# in their smallest encoding (positive fixint, uint8, uint16, uint32) and bins
# with the smallest length prefix (bin8, bin16, bin32).  Then a frame that
# decodes re-encodes to the same bytes.
#
# Two readers share that grammar.  ``_layout`` takes the usual frame with as
# few operations as possible and answers None for anything else; ``_decode_careful``
# reads field by field and raises the ``PacketError`` that names what is wrong.
# Messages never format the frame's contents beyond a few bytes shown as hex.

_FIXARRAY_9 = 0x90 | _N_ITEMS
_BIN8, _BIN16, _BIN32 = 0xC4, 0xC5, 0xC6
_HEX_SHOWN = 8   # bytes of a frame a message shows at most


def _uint_at(b: bytes, pos: int) -> tuple[int, int]:
    """``(value, end)`` of the canonical uint8/16/32 at ``b[pos]``, or ``(-1, 0)``."""
    t = b[pos]
    if t == 0xCC:
        v = b[pos + 1]
        return (v, pos + 2) if v >= 0x80 else (-1, 0)
    if t == 0xCD:
        v = b[pos + 1] << 8 | b[pos + 2]
        return (v, pos + 3) if v > 0xFF else (-1, 0)
    if t == 0xCE:
        v = int.from_bytes(b[pos + 1:pos + 5], "big")
        return (v, pos + 5) if v > 0xFFFF else (-1, 0)
    return -1, 0


def _bin_at(b: bytes, pos: int) -> tuple[int, int]:
    """``(length, start of data)`` of the canonical bin16/32 at ``b[pos]``, or ``(-1, 0)``."""
    t = b[pos]
    if t == _BIN16:
        v = b[pos + 1] << 8 | b[pos + 2]
        return (v, pos + 3) if v > 0xFF else (-1, 0)
    if t == _BIN32:
        v = int.from_bytes(b[pos + 1:pos + 5], "big")
        return (v, pos + 5) if v > 0xFFFF else (-1, 0)
    return -1, 0


def _layout(b: bytes):
    """``(kind, src, step, n, keys at, offsets at, batch at, batch bytes, payload at)`` of
    ``b`` if it is a well-formed frame, else None (``_decode_careful`` says why).

    Well-formed: the 9 items in their canonical encoding, every bin as long as
    ``n`` asks, and nothing after the last one; the values of the event fields
    are checked by ``_finish``.  A declared length beyond the end of ``b`` makes
    a later index fail (IndexError) or the final length check fail, before
    anything is read from it."""
    try:
        if b[0] != _FIXARRAY_9 or b[1] != VERSION:
            return None
        kind = b[2]
        if kind > 1:
            return None
        # src, step, n: positive fixint and uint16 inline (the usual values), others by _uint_at
        src = b[3]
        if src < 0x80:
            pos = 4
        elif src == 0xCD:
            src, pos = b[4] << 8 | b[5], 6
            if src <= 0xFF:
                return None
        else:
            src, pos = _uint_at(b, 3)
            if src < 0:
                return None
        step = b[pos]
        if step < 0x80:
            pos += 1
        elif step == 0xCD:
            step, pos = b[pos + 1] << 8 | b[pos + 2], pos + 3
            if step <= 0xFF:
                return None
        else:
            step, pos = _uint_at(b, pos)
            if step < 0:
                return None
        n = b[pos]
        if n < 0x80:
            pos += 1
        elif n == 0xCD:
            n, pos = b[pos + 1] << 8 | b[pos + 2], pos + 3
            if n <= 0xFF:
                return None
        else:
            n, pos = _uint_at(b, pos)
            if not 0 <= n <= MAX_EVENTS:
                return None
        if b[pos] == _BIN8:
            length, ko = b[pos + 1], pos + 2
        else:
            length, ko = _bin_at(b, pos)
        if length != 4 * n:
            return None
        pos = ko + length
        if b[pos] == _BIN8:
            length, oo = b[pos + 1], pos + 2
        else:
            length, oo = _bin_at(b, pos)
        if length != 2 * n:
            return None
        pos = oo + length
        if b[pos] == _BIN8:
            blen, bo = b[pos + 1], pos + 2
        else:
            blen, bo = _bin_at(b, pos)
        if blen != 2 * n and blen != 0:
            return None
        pos = bo + blen
        if b[pos] == _BIN8:
            length, po = b[pos + 1], pos + 2
        else:
            length, po = _bin_at(b, pos)
        if length != 4 * n * kind or po + length != len(b):
            return None
    except IndexError:
        return None
    return kind, src, step, n, ko, oo, bo, blen, po


# bytes(range(k)) for k <= 256: the byte values below k.
_BYTES_BELOW = tuple(bytes(range(k)) for k in range(257))


def _u16_below(data: bytes, limit: int, start: int = 0, stop: int | None = None) -> bool:
    """True if every ``<u2`` value in ``data[start:stop]`` is certainly ``< limit``; False
    means "not shown" (the caller then checks with numpy).  For ``limit <= 256`` this is
    three C-level bytes operations: every high byte is 0 and no low byte is
    ``>= limit`` (about 10x faster than ``np.frombuffer(...).max()`` on the tens of
    events of a typical frame, and called on every frame of every step)."""
    if not 0 < limit <= 256:
        return False
    if stop is None:
        stop = len(data)
    return data[start + 1:stop:2].count(0) == (stop - start) // 2 \
        and not data[start:stop:2].translate(None, _BYTES_BELOW[limit])


def _finish(b: bytes, layout: tuple, max_offset: int | None, n_batch: int | None) -> Packet:
    """The packet of a well-formed frame ``b`` (its ``_layout``), once the values of its
    event fields pass the checks of the format and of the receiver."""
    kind, src, step, n, ko, oo, bo, blen, po = layout
    kind = _KIND_OF[kind]
    keys = np.frombuffer(b, KEY_DTYPE, n, ko)
    offsets = np.frombuffer(b, OFFSET_DTYPE, n, oo)
    # Offsets are < 2**16, so only a step this close to 2**32 can overflow.
    if n and (step >= _U32 - _U16 or (max_offset is not None
                                      and not _u16_below(b, max_offset + 1, oo, oo + 2 * n))):
        top = int(offsets.max())
        if step + top >= _U32:
            raise PacketError(f"step + offset must be < 2**32, got step {step} + offset {top}")
        if max_offset is not None and top > max_offset:
            raise PacketError(f"offsets must be <= max_offset={max_offset}, got {top}")
    if blen:
        batch = np.frombuffer(b, BATCH_DTYPE, n, bo)
        if n_batch is not None and not _u16_below(b, n_batch, bo, bo + blen) and int(batch.max()) >= n_batch:
            raise PacketError(f"batch indices must be < n_batch={n_batch}, got {int(batch.max())}")
    else:
        batch = None
    if kind is Kind.SPIKE:
        payload = None
    else:
        payload = np.frombuffer(b, PAYLOAD_DTYPE, n, po)
        # A float32 is inf or nan only if its exponent is all ones, so its high byte
        # (the last of four, little-endian) is 0x7f or 0xff: without one, all are finite.
        high = b[po + 3:po + 4 * n:4]
        if 0x7F in high or 0xFF in high:
            finite = np.isfinite(payload)
            if not finite.all():
                i = int(np.argmin(finite))
                raise PacketError(f"payload must be finite, got {payload[i]} at event {i}")
    return Packet(kind, src, step, keys, offsets, batch, payload)


# -------------------------------------------------- decode: the careful reader


def _type_names() -> tuple[str, ...]:
    """The Python type msgpack decodes each type byte to (the names the reasons use)."""
    names = []
    for t in range(256):
        if t <= 0x7F or t >= 0xE0 or 0xCC <= t <= 0xD3:
            names.append("int")
        elif t <= 0x8F or t in (0xDE, 0xDF):
            names.append("dict")
        elif t <= 0x9F or t in (0xDC, 0xDD):
            names.append("list")
        elif t <= 0xBF or 0xD9 <= t <= 0xDB:
            names.append("str")
        elif t in (0xC4, 0xC5, 0xC6):
            names.append("bytes")
        elif t in (0xCA, 0xCB):
            names.append("float")
        elif t in (0xC2, 0xC3):
            names.append("bool")
        elif t == 0xC0:
            names.append("NoneType")
        elif t == 0xC1:
            names.append("never-used byte")
        else:   # 0xC7-0xC9, 0xD4-0xD8
            names.append("ExtType")
    return tuple(names)


_TYPE_NAME = _type_names()
# type byte -> (bytes after it, signed) of the ints with a separate value
_INT_TAIL = {0xCC: (1, False), 0xCD: (2, False), 0xCE: (4, False), 0xCF: (8, False),
             0xD0: (1, True), 0xD1: (2, True), 0xD2: (4, True), 0xD3: (8, True)}
# type byte -> bytes of the length prefix (str, bin, ext and container headers)
_LEN_PREFIX = {0xD9: 1, 0xDA: 2, 0xDB: 4, _BIN8: 1, _BIN16: 2, _BIN32: 4, 0xC7: 1, 0xC8: 2, 0xC9: 4,
               0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4}
_FIXED_SIZE = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18}


def _hex(data: bytes) -> str:
    """At most ``_HEX_SHOWN`` bytes of ``data`` as hex, marked when there are more."""
    return data[:_HEX_SHOWN].hex(" ") + (" ..." if len(data) > _HEX_SHOWN else "")


def _truncated(where: str, pos: int, need: int, size: int) -> PacketError:
    return PacketError(f"frame is not valid msgpack: truncated in {where}: {need} byte(s) needed "
                       f"at byte {pos}, the frame has {size}")


def _smallest_uint_type(v: int) -> int:
    """The type byte ``msgpack.packb`` writes for the int ``0 <= v < 2**64``."""
    return v if v < 0x80 else 0xCC if v <= 0xFF else 0xCD if v <= 0xFFFF else 0xCE if v < _U32 else 0xCF


def _smallest_bin_type(length: int) -> int:
    return _BIN8 if length <= 0xFF else _BIN16 if length <= 0xFFFF else _BIN32


def _length(b: bytes, pos: int, t: int, where: str) -> tuple[int, int]:
    """``(declared length, end of prefix)`` of the str/bin/ext/container at ``pos`` with type
    byte ``t`` (the fix* forms carry it in ``t``)."""
    if 0x80 <= t <= 0x9F:
        return t & 0x0F, pos + 1
    if 0xA0 <= t <= 0xBF:
        return t & 0x1F, pos + 1
    k = _LEN_PREFIX[t]
    if pos + 1 + k > len(b):
        raise _truncated(where, pos + 1, k, len(b))
    return int.from_bytes(b[pos + 1:pos + 1 + k], "big"), pos + 1 + k


def _got(b: bytes, pos: int, where: str) -> tuple[str, str]:
    """``(type name, short detail)`` of the non-int item at ``pos``, without reading
    beyond a few bytes of it: the value of a nil, bool or float, the length and first
    bytes of a str or bin, the item count of a container; always the type byte in hex."""
    t = b[pos]
    name = _TYPE_NAME[t]
    if t == 0xC0:
        detail = "None"
    elif t in (0xC2, 0xC3):
        detail = str(t == 0xC3)
    elif t in (0xCA, 0xCB):
        k = 4 if t == 0xCA else 8
        raw = b[pos + 1:pos + 1 + k]
        detail = repr(struct.unpack(">f" if k == 4 else ">d", raw)[0]) if len(raw) == k else "(truncated)"
    elif name in ("str", "bytes"):
        length, start = _length(b, pos, t, where)
        detail = f"of {length} bytes" + (f" {_hex(b[start:start + min(length, _HEX_SHOWN + 1)])}" if length else "")
    elif name in ("list", "dict"):
        length, _ = _length(b, pos, t, where)
        detail = f"of {length} {'item' if name == 'list' else 'pair'}(s)"
    else:
        detail = ""
    return name, f"{detail} (type byte 0x{t:02x})".lstrip()


def _read_int(b: bytes, pos: int, where: str) -> tuple[int | None, int]:
    """``(value, end)`` of the msgpack int at ``pos`` in any encoding, or ``(None, pos)``
    when the item there is not an int."""
    size = len(b)
    if pos >= size:
        raise _truncated(where, pos, 1, size)
    t = b[pos]
    if t <= 0x7F:
        return t, pos + 1
    if t >= 0xE0:
        return t - 0x100, pos + 1
    tail = _INT_TAIL.get(t)
    if tail is None:
        return None, pos
    k, signed = tail
    if pos + 1 + k > size:
        raise _truncated(where, pos + 1, k, size)
    return int.from_bytes(b[pos + 1:pos + 1 + k], "big", signed=signed), pos + 1 + k


def _not_smallest(name: str, v: int, t: int) -> PacketError:
    return PacketError(f"{name} = {v} must be in msgpack's smallest int encoding (type byte "
                       f"0x{_smallest_uint_type(v):02x}, as msgpack.packb writes it), got type byte 0x{t:02x}")


def _int_field(b: bytes, pos: int, name: str, hi: int) -> tuple[int, int]:
    """``(value, end)`` of header field ``name``, an int in ``[0, hi)`` in its smallest encoding."""
    v, end = _read_int(b, pos, name)
    if v is None:
        tname, detail = _got(b, pos, name)
        raise PacketError(f"{name} must be an int, got {tname} {detail}")
    if not 0 <= v < hi:
        raise PacketError(f"{name} must be in [0, {hi}), got {v}")
    if b[pos] != _smallest_uint_type(v):
        raise _not_smallest(name, v, b[pos])
    return v, end


def _choice_field(b: bytes, pos: int, name: str, allowed: str, ok) -> tuple[int, int]:
    """``(value, end)`` of ``version`` or ``kind``: an int that ``ok`` accepts, in its smallest encoding."""
    v, end = _read_int(b, pos, name)
    if v is None:
        tname, detail = _got(b, pos, name)
        raise PacketError(f"{name} must be {allowed}, got "
                          + (detail if tname in ("bool", "NoneType", "float") else f"{tname} {detail}"))
    if not ok(v):
        raise PacketError(f"{name} must be {allowed}, got {v}")
    if b[pos] != _smallest_uint_type(v):
        raise _not_smallest(name, v, b[pos])
    return v, end


def _bin_field(b: bytes, pos: int, name: str, lengths: tuple[int, ...]) -> tuple[int, int]:
    """``(length, start of data)`` of bin field ``name``: its declared length is checked
    against ``lengths`` (from ``n``) and against the bytes that remain before it is used."""
    size = len(b)
    if pos >= size:
        raise _truncated(name, pos, 1, size)
    t = b[pos]
    if t not in (_BIN8, _BIN16, _BIN32):
        tname, detail = _got(b, pos, name)
        raise PacketError(f"{name} must be bin, got {tname} {detail}")
    length, start = _length(b, pos, t, name)
    if length not in lengths:
        expected = " or ".join(str(x) for x in lengths)
        raise PacketError(f"{name} must be {expected} bytes long, got {length}")
    if t != _smallest_bin_type(length):
        raise PacketError(f"{name}: a bin of {length} bytes must have msgpack's smallest length prefix "
                          f"(type byte 0x{_smallest_bin_type(length):02x}), got type byte 0x{t:02x}")
    if start + length > size:
        raise _truncated(name, start, length, size)
    return length, start


def _item_end(b: bytes, pos: int, where: str) -> int:
    """The end of the scalar, str, bin or ext item at ``pos`` (not a container)."""
    t = b[pos]
    if t <= 0x7F or t >= 0xE0:
        return pos + 1
    if t in _INT_TAIL:
        end = pos + 1 + _INT_TAIL[t][0]
    elif t in _FIXED_SIZE:
        end = pos + _FIXED_SIZE[t]
    else:
        length, start = _length(b, pos, t, where)
        end = start + length + (1 if t in (0xC7, 0xC8, 0xC9) else 0)   # ext: one byte of ext type
    if end > len(b):
        raise _truncated(where, pos, end - pos, len(b))
    return end


def _top_level_error(b: bytes) -> PacketError:
    """Why ``b``, which does not start with the header of an array of 9, is not a frame.

    Reads the header and, for an array of fewer than 9 items, those items without
    descending into any of them (a nested container is named as such)."""
    t = b[0]
    if t == 0xC1:
        return PacketError("frame is not valid msgpack: FormatError: type byte 0xc1 is never used")
    name = _TYPE_NAME[t]
    if name != "list":
        return PacketError(f"frame must be an array of {_N_ITEMS} items, got {name} (type byte 0x{t:02x})")
    count, pos = _length(b, 0, t, "the array header")
    if count > _N_ITEMS:
        return PacketError(f"frame must be an array of {_N_ITEMS} items, got {count}: "
                           f"{count} exceeds max_array_len({_N_ITEMS}) (type byte 0x{t:02x})")
    for i in range(count):
        where = f"item {i} of the top-level array of {count}"
        if pos >= len(b):
            raise _truncated(where, pos, 1, len(b))
        name = _TYPE_NAME[b[pos]]
        if name in ("list", "dict"):
            return PacketError(f"frame is not valid msgpack for this format (an array of {_N_ITEMS} items, "
                               f"nothing nested): {where} is a nested {name} (type byte 0x{b[pos]:02x})")
        if name == "never-used byte":
            return PacketError(f"frame is not valid msgpack: FormatError: {where} has type byte 0xc1")
        pos = _item_end(b, pos, where)
    if pos < len(b):
        return _extra_data(b, pos)
    return PacketError(f"frame must be an array of {_N_ITEMS} items, got {count}")


def _extra_data(b: bytes, pos: int) -> PacketError:
    return PacketError(f"frame is not valid msgpack: ExtraData: {len(b) - pos} byte(s) after the "
                       f"array, from byte {pos}: {_hex(b[pos:pos + _HEX_SHOWN + 1])}")


def _decode_careful(b: bytes, max_offset: int | None, n_batch: int | None) -> Packet:
    """``decode`` of a frame that ``_layout`` does not take: reads it field by field and
    raises the ``PacketError`` naming the first field that breaks the format (checked in
    frame order, each declared length before it is used)."""
    if not b:
        raise PacketError("frame is not valid msgpack: empty frame (0 bytes)")
    if b[0] != _FIXARRAY_9:
        raise _top_level_error(b)
    _, pos = _choice_field(b, 1, "version", str(VERSION), lambda v: v == VERSION)
    kind, pos = _choice_field(b, pos, "kind", f"one of {_KIND_NAMES}", lambda v: v in _KINDS)
    src, pos = _int_field(b, pos, "src", _U32)
    step, pos = _int_field(b, pos, "step", _U32)
    n, pos = _int_field(b, pos, "n", MAX_EVENTS + 1)
    length, ko = _bin_field(b, pos, "keys", (n * KEY_DTYPE.itemsize,))
    length, oo = _bin_field(b, ko + length, "offsets", (n * OFFSET_DTYPE.itemsize,))
    blen, bo = _bin_field(b, oo + length, "batch", (0, n * BATCH_DTYPE.itemsize))
    length, po = _bin_field(b, bo + blen, "payload", (0,) if kind == Kind.SPIKE else (n * PAYLOAD_DTYPE.itemsize,))
    if po + length != len(b):
        raise _extra_data(b, po + length)
    return _finish(b, (kind, src, step, n, ko, oo, bo, blen, po), max_offset, n_batch)


def _as_bytes(frame) -> bytes:
    """``frame`` (bytes-like) as ``bytes``, copied once; PacketError for anything else."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise PacketError(f"frame must be bytes-like, got {type(frame).__name__:.60}")
    try:
        view = memoryview(frame)   # the buffer itself, whatever a subclass overrides
    except Exception as e:  # noqa: BLE001 - a released view raises ValueError; any failure is a bad frame
        raise PacketError(f"frame must be a readable buffer, got {type(frame).__name__:.60} ({type(e).__name__})") \
            from None
    with view:
        if not view.c_contiguous:
            raise PacketError("frame must be a contiguous buffer, got a non-contiguous memoryview")
        if view.nbytes > MAX_FRAME_BYTES:
            raise PacketError(f"frame must be at most MAX_FRAME_BYTES={MAX_FRAME_BYTES} bytes, got {view.nbytes}")
        return view.tobytes()


def frame_nbytes(frame) -> int:
    """The bytes ``frame`` holds, as the counters count them: its size if it is bytes-like,
    else 0 (``decode`` rejects it).  Never raises, whatever ``frame`` is."""
    if type(frame) is bytes:
        return len(frame)
    if isinstance(frame, (bytes, bytearray, memoryview)):
        try:
            with memoryview(frame) as view:
                return view.nbytes
        except Exception:  # noqa: BLE001 - a released memoryview, a subclass with a broken buffer
            return 0
    return 0


def decode(frame: bytes, *, max_offset: int | None = None, n_batch: int | None = None) -> Packet:
    """The packet in ``frame``, checked against the format above.

    ``max_offset``: if given, every offset must be ``<= max_offset`` (the
    receiver's exchange window).  ``n_batch``: if given, every sample index
    must be ``< n_batch``; an empty batch field is always accepted.

    Raises ``PacketError`` (and nothing else) if ``frame`` is not bytes-like,
    exceeds ``MAX_FRAME_BYTES``, is not exactly the msgpack ``encode`` writes,
    or breaks any contract of the format; the reason names the field and the
    value (for a value of the wrong type, its type byte in hex).  Time and
    memory are linear in ``len(frame)``: a ``bytes`` frame is not copied (the
    arrays view it), any other bytes-like frame is copied once.
    """
    if type(frame) is not bytes:
        frame = _as_bytes(frame)
    elif len(frame) > MAX_FRAME_BYTES:
        raise PacketError(f"frame must be at most MAX_FRAME_BYTES={MAX_FRAME_BYTES} bytes, got {len(frame)}")
    layout = _layout(frame)
    if layout is None:
        return _decode_careful(frame, max_offset, n_batch)
    return _finish(frame, layout, max_offset, n_batch)


def spike_round(frames: list, *, step: int, max_offset: int, n_batch: int):
    """The SPIKE frames a core receives in one round, decoded together: ``(keys, offsets,
    batch, counts)``, the events of all frames concatenated in frame order (``batch`` zeros
    for frames without a batch field) and the number of events of each frame.

    Only the usual round is taken: every frame ``bytes``, valid, of kind SPIKE, of base step
    ``step``, its offsets ``<= max_offset`` and sample indices ``< n_batch``.  Otherwise the
    answer is None and the caller decodes frame by frame with :func:`decode`, which names
    what is wrong.  The same checks as :func:`decode` (the same ``_layout``), with the numpy
    work done once per round instead of once per frame.
    """
    kb, ob, bb, counts = [], [], [], []
    for frame in frames:
        if type(frame) is not bytes or len(frame) > MAX_FRAME_BYTES:
            return None
        layout = _layout(frame)
        if layout is None:
            return None
        kind, _, st, n, ko, oo, bo, blen, _ = layout
        if kind != Kind.SPIKE or st != step or step >= _U32 - _U16:
            return None
        kb.append(frame[ko:ko + 4 * n])
        ob.append(frame[oo:oo + 2 * n])
        bb.append(frame[bo:bo + blen] if blen else bytes(2 * n))
        counts.append(n)
    keys, offsets, batch = b"".join(kb), b"".join(ob), b"".join(bb)
    if offsets and not _u16_below(offsets, max_offset + 1) \
            and int(np.frombuffer(offsets, OFFSET_DTYPE).max()) > max_offset:
        return None
    if batch and not _u16_below(batch, n_batch) and int(np.frombuffer(batch, BATCH_DTYPE).max()) >= n_batch:
        return None
    return (np.frombuffer(keys, KEY_DTYPE), np.frombuffer(offsets, OFFSET_DTYPE),
            np.frombuffer(batch, BATCH_DTYPE), counts)


# --------------------------------------------------------------------- subset


def subset(p: Packet, index: np.ndarray) -> Packet:
    """A packet with only the events selected by ``index`` (a bool mask of
    length ``p.n`` or integer indices), with the same kind, src and step."""
    index = np.asarray(index)
    return p._replace(
        keys=p.keys[index],
        offsets=p.offsets[index],
        batch=None if p.batch is None else p.batch[index],
        payload=None if p.payload is None else p.payload[index],
    )
