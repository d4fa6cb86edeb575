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

Error contract.  ``encode`` refuses to build an invalid frame and ``decode``
refuses to accept one: both raise ``PacketError`` whose ``reason`` names the
field, the offending value and what was expected.  ``decode`` raises nothing
but ``PacketError``, whatever bytes it is given.
"""

from __future__ import annotations

import enum
import operator
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

# Only the top-level array and the four bins can be valid.  The other limits
# are small but not zero so that a stray str or map still unpacks and gets a
# reason naming the field, instead of a bare msgpack limit error.
_UNPACK_LIMITS = dict(
    max_bin_len=MAX_EVENTS * KEY_DTYPE.itemsize,
    max_str_len=64,
    max_array_len=_N_ITEMS,
    max_map_len=_N_ITEMS,
    max_ext_len=16,
)


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


def _field_int(name: str, value, hi: int) -> int:
    # type() rather than isinstance(): msgpack booleans decode to bool, an int subclass.
    if type(value) is not int:
        raise PacketError(f"{name} must be an int, got {type(value).__name__} {value!r:.40}")
    if not 0 <= value < hi:
        raise PacketError(f"{name} must be in [0, {hi}), got {value}")
    return value


def _field_bin(name: str, value, lengths: tuple[int, ...]) -> bytes:
    if type(value) is not bytes:
        raise PacketError(f"{name} must be bin, got {type(value).__name__} {value!r:.40}")
    if len(value) not in lengths:
        expected = " or ".join(str(x) for x in lengths)
        raise PacketError(f"{name} must be {expected} bytes long, got {len(value)}")
    return value


def _check_fields(items: list) -> None:
    """Raise the ``PacketError`` naming the first field of ``items`` that breaks the format."""
    version, kind, src, step, n, keys, offsets, batch, payload = items
    if type(version) is not int or version != VERSION:
        raise PacketError(f"version must be {VERSION}, got {version!r:.40}")
    if type(kind) is not int or kind not in _KINDS:
        raise PacketError(f"kind must be one of {_KIND_NAMES}, got {kind!r:.40}")
    _field_int("src", src, _U32)
    _field_int("step", step, _U32)
    n = _field_int("n", n, MAX_EVENTS + 1)
    _field_bin("keys", keys, (n * KEY_DTYPE.itemsize,))
    _field_bin("offsets", offsets, (n * OFFSET_DTYPE.itemsize,))
    _field_bin("batch", batch, (0, n * BATCH_DTYPE.itemsize))
    _field_bin("payload", payload, (0,) if kind == Kind.SPIKE else (n * PAYLOAD_DTYPE.itemsize,))


# bytes(range(k)) for k <= 256: the byte values below k.
_BYTES_BELOW = tuple(bytes(range(k)) for k in range(257))


def _u16_below(data: bytes, limit: int) -> bool:
    """True if every ``<u2`` value in ``data`` is certainly ``< limit``; False means
    "not shown" (the caller then checks with numpy).  For ``limit <= 256`` this is
    three C-level bytes operations: every high byte is 0 and no low byte is
    ``>= limit`` (about 10x faster than ``np.frombuffer(...).max()`` on the tens of
    events of a typical frame, and called on every frame of every step)."""
    if not 0 < limit <= 256:
        return False
    return data[1::2].count(0) == len(data) // 2 and not data[0::2].translate(None, _BYTES_BELOW[limit])


def decode(frame: bytes, *, max_offset: int | None = None, n_batch: int | None = None) -> Packet:
    """The packet in ``frame``, checked against the format above.

    ``max_offset``: if given, every offset must be ``<= max_offset`` (the
    receiver's exchange window).  ``n_batch``: if given, every sample index
    must be ``< n_batch``; an empty batch field is always accepted.

    Raises ``PacketError`` (and nothing else) if ``frame`` is not bytes-like,
    exceeds ``MAX_FRAME_BYTES``, is not valid msgpack, or breaks any contract
    of the format; the reason names the field and the value.
    """
    if isinstance(frame, memoryview):
        if not frame.c_contiguous:
            raise PacketError("frame must be a contiguous buffer, got a non-contiguous memoryview")
        frame = frame.cast("B")
    elif not isinstance(frame, (bytes, bytearray)):
        raise PacketError(f"frame must be bytes-like, got {type(frame).__name__}")
    if len(frame) > MAX_FRAME_BYTES:
        raise PacketError(f"frame must be at most MAX_FRAME_BYTES={MAX_FRAME_BYTES} bytes, got {len(frame)}")
    try:
        items = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True, **_UNPACK_LIMITS)
    # msgpack documents that unpackb may raise exceptions beyond its own
    # hierarchy (ValueError, TypeError, ...), and advises catching Exception.
    except Exception as e:
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise PacketError(f"frame is not valid msgpack: {detail}") from None

    if type(items) is not list:
        raise PacketError(f"frame must be an array of {_N_ITEMS} items, got {type(items).__name__}")
    if len(items) != _N_ITEMS:
        raise PacketError(f"frame must be an array of {_N_ITEMS} items, got {len(items)}")
    version, kind, src, step, n, keys, offsets, batch, payload = items
    # The usual, valid frame is accepted by one expression; anything else goes
    # through the field-by-field checks, which name what is wrong.
    if not (type(version) is int and version == VERSION and type(kind) is int and 0 <= kind < 2
            and type(src) is int and 0 <= src < _U32 and type(step) is int and 0 <= step < _U32
            and type(n) is int and 0 <= n <= MAX_EVENTS
            and type(keys) is bytes and len(keys) == 4 * n
            and type(offsets) is bytes and len(offsets) == 2 * n
            and type(batch) is bytes and (not batch or len(batch) == 2 * n)
            and type(payload) is bytes and len(payload) == 4 * n * kind):
        _check_fields(items)
        raise PacketError("frame breaks the format (the field checks found no reason: a bug in decode)")
    kind = _KIND_OF[kind]
    keys = np.frombuffer(keys, KEY_DTYPE)
    offsets_bin, offsets = offsets, np.frombuffer(offsets, OFFSET_DTYPE)
    # Offsets are < 2**16, so only a step this close to 2**32 can overflow.
    if n and (step >= _U32 - _U16 or (max_offset is not None and not _u16_below(offsets_bin, max_offset + 1))):
        top = int(offsets.max())
        if step + top >= _U32:
            raise PacketError(f"step + offset must be < 2**32, got step {step} + offset {top}")
        if max_offset is not None and top > max_offset:
            raise PacketError(f"offsets must be <= max_offset={max_offset}, got {top}")
    if batch:
        batch_bin, batch = batch, np.frombuffer(batch, BATCH_DTYPE)
        if n_batch is not None and not _u16_below(batch_bin, n_batch) and int(batch.max()) >= n_batch:
            raise PacketError(f"batch indices must be < n_batch={n_batch}, got {int(batch.max())}")
    else:
        batch = None
    if kind is Kind.SPIKE:
        payload = None
    else:
        payload = np.frombuffer(payload, PAYLOAD_DTYPE)
        finite = np.isfinite(payload)
        if not finite.all():
            i = int(np.argmin(finite))
            raise PacketError(f"payload must be finite, got {payload[i]} at event {i}")
    return Packet(kind, src, step, keys, offsets, batch, payload)



def spike_round(frames: list, *, step: int, max_offset: int, n_batch: int):
    """The SPIKE frames a core receives in one round, decoded together: ``(keys, offsets,
    batch, counts)``, the events of all frames concatenated in frame order (``batch`` zeros
    for frames without a batch field) and the number of events of each frame.

    Only the usual round is taken: every frame ``bytes``, valid, of kind SPIKE, of base step
    ``step``, its offsets ``<= max_offset`` and sample indices ``< n_batch``.  Otherwise the
    answer is None and the caller decodes frame by frame with :func:`decode`, which names
    what is wrong.  The same checks as :func:`decode`, with the numpy work done once per
    round instead of once per frame.
    """
    kb, ob, bb, counts = [], [], [], []
    for frame in frames:
        if type(frame) is not bytes or len(frame) > MAX_FRAME_BYTES:
            return None
        try:
            items = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True, **_UNPACK_LIMITS)
        except Exception:
            return None
        if type(items) is not list or len(items) != _N_ITEMS:
            return None
        version, kind, src, st, n, keys, offsets, batch, payload = items
        if not (type(version) is int and version == VERSION and type(kind) is int and kind == Kind.SPIKE
                and type(src) is int and 0 <= src < _U32 and type(st) is int and st == step
                and step < _U32 - _U16 and type(n) is int and 0 <= n <= MAX_EVENTS
                and type(keys) is bytes and len(keys) == 4 * n
                and type(offsets) is bytes and len(offsets) == 2 * n
                and type(batch) is bytes and (not batch or len(batch) == 2 * n)
                and type(payload) is bytes and not payload):
            return None
        kb.append(keys)
        ob.append(offsets)
        bb.append(batch or bytes(2 * n))
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
