"""Tests of the wire format: round trips, every rejection reason, and a fuzz."""

import struct
import tracemalloc

import msgpack
import numpy as np
import pytest

from spinnray.errors import PacketError
from spinnray.machine import packet as packet_module
from spinnray.machine.packet import (
    BATCH_DTYPE,
    KEY_DTYPE,
    MAX_EVENTS,
    MAX_FRAME_BYTES,
    OFFSET_DTYPE,
    PAYLOAD_DTYPE,
    VERSION,
    Kind,
    Packet,
    decode,
    encode,
    encode_packet,
    frame_nbytes,
    spike_round,
    subset,
)


def random_packet(rng, kind, n, with_batch, *, n_batch=32, max_offset=15):
    """A valid Packet with n random events."""
    return Packet(
        kind=kind,
        src=int(rng.integers(0, 2**32)),
        step=int(rng.integers(0, 2**31)),
        keys=rng.integers(0, 2**32, n, dtype=np.uint32),
        offsets=rng.integers(0, max_offset + 1, n, dtype=np.uint16),
        batch=rng.integers(0, n_batch, n, dtype=np.uint16) if with_batch else None,
        payload=rng.standard_normal(n).astype(np.float32) if kind is Kind.ERROR else None,
    )


def msgpack_uint_size(v):
    """Bytes msgpack uses for a non-negative int < 2**32."""
    return 1 if v < 128 else 2 if v < 2**8 else 3 if v < 2**16 else 5


def msgpack_bin_size(length):
    """Bytes msgpack uses for a bin of `length` bytes (bin8/bin16/bin32 prefix + data)."""
    return length + (2 if length < 2**8 else 3 if length < 2**16 else 5)


def expected_frame_size(p):
    """fixarray(9) + version + kind + src + step + n + four bins."""
    n = p.n
    return (
        3
        + msgpack_uint_size(p.src)
        + msgpack_uint_size(p.step)
        + msgpack_uint_size(n)
        + msgpack_bin_size(4 * n)
        + msgpack_bin_size(2 * n)
        + msgpack_bin_size(0 if p.batch is None else 2 * n)
        + msgpack_bin_size(0 if p.payload is None else 4 * n)
    )


def frame_items(p):
    """The 9 msgpack items of packet p, for building malformed frames."""
    return msgpack.unpackb(encode_packet(p))


def pack(items):
    return msgpack.packb(items, use_bin_type=True)


def rejects(frame, match, **kwargs):
    """Assert decode(frame) raises PacketError whose reason contains `match`."""
    with pytest.raises(PacketError) as info:
        decode(frame, **kwargs)
    assert match in info.value.reason, info.value.reason
    return info.value.reason


@pytest.fixture
def spike():
    return random_packet(np.random.default_rng(1), Kind.SPIKE, 10, with_batch=True)


@pytest.fixture
def error():
    return random_packet(np.random.default_rng(2), Kind.ERROR, 10, with_batch=False)


def assert_same(a, b):
    assert (a.kind, a.src, a.step, a.n) == (b.kind, b.src, b.step, b.n)
    np.testing.assert_array_equal(a.keys, b.keys)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    for x, y in ((a.batch, b.batch), (a.payload, b.payload)):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
@pytest.mark.parametrize("with_batch", [False, True])
@pytest.mark.parametrize("kind", list(Kind))
def test_round_trip(kind, with_batch, n):
    rng = np.random.default_rng(1000 * n + 10 * int(kind) + with_batch)
    p = random_packet(rng, kind, n, with_batch)
    frame = encode_packet(p)
    q = decode(frame, max_offset=15, n_batch=32)
    if n == 0 and with_batch:
        # An empty batch array is the empty batch field, which decodes to None.
        p = p._replace(batch=None)
    assert_same(p, q)
    assert isinstance(q.kind, Kind)
    assert q.keys.dtype == KEY_DTYPE and q.offsets.dtype == OFFSET_DTYPE
    if q.batch is not None:
        assert q.batch.dtype == BATCH_DTYPE
    if q.payload is not None:
        assert q.payload.dtype == PAYLOAD_DTYPE
    assert len(frame) == expected_frame_size(p)
    assert encode_packet(q) == frame


def test_header_overhead_is_small():
    p = random_packet(np.random.default_rng(3), Kind.SPIKE, 100, with_batch=False)
    assert len(encode_packet(p)) < 100 * 6 + 32


def test_encode_accepts_lists_numpy_ints_and_other_dtypes():
    frame = encode(1, np.int64(5), np.uint32(9), [1, 2**32 - 1], np.array([0, 3], np.int64),
                   batch=[0, 1], payload=[0.5, -2.0])
    q = decode(frame)
    assert (q.kind, q.src, q.step) == (Kind.ERROR, 5, 9)
    assert q.keys.tolist() == [1, 2**32 - 1]
    assert q.offsets.tolist() == [0, 3]
    assert q.batch.tolist() == [0, 1]
    assert q.payload.tolist() == [0.5, -2.0]
    assert decode(encode(Kind.SPIKE, 0, 0, np.array([], dtype=">u4"), [])).n == 0


def test_decode_accepts_bytes_like(spike):
    frame = encode_packet(spike)
    assert_same(decode(bytearray(frame)), spike)
    assert_same(decode(memoryview(frame)), spike)


def test_decoded_arrays_are_read_only_views(spike):
    q = decode(encode_packet(spike))
    assert not q.keys.flags.writeable


def test_largest_packet_fits_max_frame_bytes():
    n = MAX_EVENTS
    frame = encode(Kind.ERROR, 2**32 - 1, 2**32 - 2**16, np.full(n, 2**32 - 1, KEY_DTYPE),
                   np.zeros(n, OFFSET_DTYPE), np.zeros(n, BATCH_DTYPE), np.zeros(n, PAYLOAD_DTYPE))
    assert len(frame) <= MAX_FRAME_BYTES
    assert decode(frame).n == n


def test_subset_by_mask_and_by_index():
    p = random_packet(np.random.default_rng(4), Kind.ERROR, 50, with_batch=True)
    mask = p.keys % 3 == 0
    s = subset(p, mask)
    assert (s.kind, s.src, s.step) == (p.kind, p.src, p.step)
    np.testing.assert_array_equal(s.keys, p.keys[mask])
    np.testing.assert_array_equal(s.offsets, p.offsets[mask])
    np.testing.assert_array_equal(s.batch, p.batch[mask])
    np.testing.assert_array_equal(s.payload, p.payload[mask])
    assert_same(subset(p, np.flatnonzero(mask)), s)
    assert_same(decode(encode_packet(s)), s)


def test_subset_of_spike_without_batch_keeps_none():
    p = random_packet(np.random.default_rng(5), Kind.SPIKE, 20, with_batch=False)
    s = subset(p, np.arange(0, 20, 2))
    assert s.n == 10 and s.batch is None and s.payload is None


def test_rejects_non_bytes():
    for x in ["abc", None, 5, [1, 2], np.zeros(4, np.uint8)]:
        rejects(x, "bytes-like")


def test_rejects_non_contiguous_memoryview():
    rejects(memoryview(b"abcdef")[::2], "contiguous")


def test_rejects_oversized_frame():
    rejects(bytes(MAX_FRAME_BYTES + 1), "MAX_FRAME_BYTES")


def test_rejects_truncated_frame(spike):
    frame = encode_packet(spike)
    for cut in (0, 1, 5, len(frame) // 2, len(frame) - 1):
        rejects(frame[:cut], "not valid msgpack")


def test_rejects_trailing_garbage(spike):
    rejects(encode_packet(spike) + b"\x00", "ExtraData")


def test_rejects_bad_msgpack_format():
    rejects(b"\xc1", "FormatError")


def test_rejects_too_deep_nesting():
    rejects(b"\x91" * 100_000 + b"\x00", "not valid msgpack")


def test_rejects_not_a_list():
    rejects(pack({"a": 1}), "got dict")
    rejects(pack(5), "got int")
    rejects(pack(b"abc"), "got bytes")


def test_rejects_wrong_item_count(spike):
    items = frame_items(spike)
    rejects(pack(items[:8]), "9 items, got 8")
    # Longer arrays are refused while unpacking, by the max_array_len limit.
    rejects(pack(items + [0]), "10 exceeds max_array_len(9)")


def test_rejects_wrong_version(spike):
    items = frame_items(spike)
    items[0] = VERSION + 1
    rejects(pack(items), "version must be 1, got 2")
    items[0] = True
    rejects(pack(items), "version")


def test_rejects_unknown_kind(spike):
    items = frame_items(spike)
    items[1] = 7
    rejects(pack(items), "kind must be one of SPIKE=0, ERROR=1, got 7")
    items[1] = False
    rejects(pack(items), "got False")


def test_rejects_bool_instead_of_int(spike):
    for i, name in [(2, "src"), (3, "step"), (4, "n")]:
        items = frame_items(spike)
        items[i] = True
        rejects(pack(items), f"{name} must be an int, got bool True")


def test_rejects_float_str_none_instead_of_int(spike):
    for value, tname in [(1.5, "float"), ("x", "str"), (None, "NoneType")]:
        items = frame_items(spike)
        items[2] = value
        rejects(pack(items), f"src must be an int, got {tname}")


def test_rejects_int_out_of_range(spike):
    items = frame_items(spike)
    items[3] = 2**32
    rejects(pack(items), "step must be in [0, 4294967296), got 4294967296")
    items = frame_items(spike)
    items[2] = -1
    rejects(pack(items), "src must be in [0, 4294967296), got -1")
    items = frame_items(spike)
    items[4] = MAX_EVENTS + 1
    rejects(pack(items), f"n must be in [0, {MAX_EVENTS + 1})")


def test_rejects_non_bin_event_field(spike):
    for i, name in [(5, "keys"), (6, "offsets"), (7, "batch"), (8, "payload")]:
        items = frame_items(spike)
        items[i] = [1, 2]
        rejects(pack(items), f"{name} must be bin, got list")
    items = frame_items(spike)
    items[5] = "text"
    rejects(pack(items), "keys must be bin, got str")


def test_rejects_wrong_bin_length(spike):
    items = frame_items(spike)
    items[5] = items[5][:-4]
    rejects(pack(items), "keys must be 40 bytes long, got 36")
    items = frame_items(spike)
    items[6] = items[6] + b"\x00\x00"
    rejects(pack(items), "offsets must be 20 bytes long, got 22")
    items = frame_items(spike)
    items[7] = items[7][:2]
    rejects(pack(items), "batch must be 0 or 20 bytes long, got 2")
    items = frame_items(spike)
    items[4] = 9
    rejects(pack(items), "keys must be 36 bytes long, got 40")


def test_rejects_step_plus_offset_overflow(spike):
    items = frame_items(spike)
    items[3] = 2**32 - 1
    rejects(pack(items), "step + offset must be < 2**32")


def test_rejects_offset_beyond_max_offset():
    frame = encode(Kind.SPIKE, 0, 100, [1, 2, 3], [0, 4, 2])
    assert decode(frame, max_offset=4).n == 3
    rejects(frame, "offsets must be <= max_offset=3, got 4", max_offset=3)


def test_rejects_batch_index_beyond_n_batch():
    frame = encode(Kind.SPIKE, 0, 0, [1, 2, 3], [0, 0, 0], batch=[0, 7, 1])
    assert decode(frame, n_batch=8).n == 3
    rejects(frame, "batch indices must be < n_batch=7, got 7", n_batch=7)
    # An empty batch field means sample 0 only, which every batch size has.
    assert decode(encode(Kind.SPIKE, 0, 0, [1], [0]), n_batch=1).batch is None


def test_offset_and_batch_limits_match_numpy_across_byte_boundaries():
    """decode checks the <u2 limits on the raw bytes when the limit is <= 256 (one byte);
    accept/reject must equal the plain numpy comparison, also for values whose high byte
    is set (256 = 0x0100 has a low byte of 0) and for limits beyond one byte."""
    rng = np.random.default_rng(7)
    values = np.array([0, 1, 2, 31, 32, 127, 128, 254, 255, 256, 257, 300, 511, 512, 4096, 65535], np.uint16)
    for _ in range(3000):
        n = int(rng.integers(1, 6))
        offsets = rng.choice(values, n)
        batch = rng.choice(values, n)
        frame = encode(Kind.SPIKE, 0, 10, np.arange(n), offsets, batch=batch)
        max_offset = int(rng.choice([0, 1, 3, 31, 254, 255, 256, 300, 65535]))
        n_batch = int(rng.choice([1, 2, 32, 255, 256, 257, 600, 65536]))
        ok = offsets.max() <= max_offset and batch.max() < n_batch
        try:
            decode(frame, max_offset=max_offset, n_batch=n_batch)
            accepted = True
        except PacketError as e:
            accepted = False
            expect = "offsets must be" if offsets.max() > max_offset else "batch indices must be"
            assert expect in e.reason
        assert accepted == ok, (offsets, batch, max_offset, n_batch)


def test_rejects_spike_with_payload(spike):
    items = frame_items(spike)
    items[8] = np.ones(spike.n, PAYLOAD_DTYPE).tobytes()
    rejects(pack(items), "payload must be 0 bytes long, got 40")


def test_rejects_error_with_wrong_payload_length(error):
    items = frame_items(error)
    items[8] = items[8][:-4]
    rejects(pack(items), "payload must be 40 bytes long, got 36")
    items[8] = b""
    rejects(pack(items), "payload must be 40 bytes long, got 0")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_error_with_non_finite_payload(error, bad):
    items = frame_items(error)
    payload = error.payload.copy()
    payload[3] = bad
    items[8] = payload.tobytes()
    rejects(pack(items), f"payload must be finite, got {payload[3]} at event 3")


def encode_rejects(match, *args, **kwargs):
    with pytest.raises(PacketError) as info:
        encode(*args, **kwargs)
    assert match in info.value.reason, info.value.reason


def test_encode_rejects_mismatched_lengths():
    encode_rejects("offsets must have one entry per key (3), got 2", Kind.SPIKE, 0, 0, [1, 2, 3], [0, 0])
    encode_rejects("batch must have one entry per key (2), got 1", Kind.SPIKE, 0, 0, [1, 2], [0, 0], batch=[0])
    encode_rejects("payload must have one entry per key (2), got 3", Kind.ERROR, 0, 0, [1, 2], [0, 0],
                   payload=[1.0, 2.0, 3.0])


def test_encode_rejects_key_out_of_range():
    encode_rejects("keys must be in [0, 4294967296), got 4294967296", Kind.SPIKE, 0, 0, [1, 2**32], [0, 0])
    encode_rejects("keys must be in [0, 4294967296), got -1", Kind.SPIKE, 0, 0, np.array([-1, 5]), [0, 0])


def test_encode_rejects_offset_and_batch_out_of_range():
    encode_rejects("offsets must be in [0, 65536), got -1", Kind.SPIKE, 0, 0, [1], [-1])
    encode_rejects("offsets must be in [0, 65536), got 65536", Kind.SPIKE, 0, 0, [1], [65536])
    encode_rejects("batch must be in [0, 65536), got 70000", Kind.SPIKE, 0, 0, [1], [0], batch=[70000])
    encode_rejects("step + offset must be < 2**32", Kind.SPIKE, 0, 2**32 - 1, [1], [1])


def test_encode_rejects_non_integer_or_non_1d_arrays():
    encode_rejects("keys must hold integers, got dtype float64", Kind.SPIKE, 0, 0, [1.5], [0])
    encode_rejects("keys must be 1-D, got shape (1, 2)", Kind.SPIKE, 0, 0, [[1, 2]], [0, 0])
    encode_rejects("keys must be 1-D, got shape ()", Kind.SPIKE, 0, 0, 5, [0])


def test_encode_rejects_non_finite_payload():
    encode_rejects("payload must be finite as float32, got", Kind.ERROR, 0, 0, [1, 2], [0, 0],
                   payload=[1.0, np.nan])
    encode_rejects("at event 0", Kind.ERROR, 0, 0, [1], [0], payload=[np.inf])
    # Finite in float64 but not in float32.
    encode_rejects("payload must be finite as float32, got", Kind.ERROR, 0, 0, [1], [0], payload=[1e39])


def test_encode_rejects_payload_mismatch_with_kind():
    encode_rejects("SPIKE packet carries no payload", Kind.SPIKE, 0, 0, [1], [0], payload=[1.0])
    encode_rejects("ERROR packet needs a payload", Kind.ERROR, 0, 0, [1], [0])


def test_encode_rejects_bad_header_values():
    encode_rejects("src must be in [0, 4294967296), got 4294967296", Kind.SPIKE, 2**32, 0, [], [])
    encode_rejects("step must be in [0, 4294967296), got -1", Kind.SPIKE, 0, -1, [], [])
    encode_rejects("src must be an int, got bool", Kind.SPIKE, True, 0, [], [])
    encode_rejects("step must be an int, got float", Kind.SPIKE, 0, 1.0, [], [])
    encode_rejects("kind must be in [0, 2), got 2", 2, 0, 0, [], [])


def test_encode_rejects_too_many_events():
    n = MAX_EVENTS + 1
    encode_rejects(f"at most MAX_EVENTS={MAX_EVENTS} events, got {n}", Kind.SPIKE, 0, 0,
                   np.zeros(n, KEY_DTYPE), np.zeros(n, OFFSET_DTYPE))


_REPLACEMENTS = [None, True, False, 1.5, "x", b"", [1, [2]], {"a": 1}, 2**64 - 1, 2**63, -1, -(2**63)]


def _mutate(rng, frame, items):
    """One malformed (or, by chance, still valid) variant of `frame`."""
    op = rng.integers(7)
    b = bytearray(frame)
    if op == 0:  # flip random bits in a few bytes
        for i in rng.integers(0, len(b), rng.integers(1, 4)):
            b[i] ^= int(rng.integers(1, 256))
    elif op == 1:  # truncate
        del b[rng.integers(0, len(b)):]
    elif op == 2:  # append random bytes
        b += rng.bytes(int(rng.integers(1, 16)))
    elif op == 3:  # insert random bytes
        i = int(rng.integers(0, len(b) + 1))
        b[i:i] = rng.bytes(int(rng.integers(1, 8)))
    elif op == 4:  # delete a run of bytes
        i = int(rng.integers(0, len(b)))
        del b[i:i + int(rng.integers(1, 8))]
    elif op == 5:  # completely random bytes
        b = bytearray(rng.bytes(int(rng.integers(0, 64))))
    else:  # one item replaced by a value of another type
        items = list(items)
        items[rng.integers(len(items))] = _REPLACEMENTS[rng.integers(len(_REPLACEMENTS))]
        b = pack(items)
    return bytes(b)


def test_fuzz_decode_raises_only_packet_error():
    rng = np.random.default_rng(12345)
    bases = []
    for n in (0, 1, 3, 17):
        for kind in Kind:
            for with_batch in (False, True):
                p = random_packet(rng, kind, n, with_batch)
                bases.append((encode_packet(p), frame_items(p)))
    accepted = 0
    for _ in range(20_000):
        frame, items = bases[rng.integers(len(bases))]
        mutant = _mutate(rng, frame, items)
        kwargs = {}
        if rng.random() < 0.5:
            kwargs = dict(max_offset=int(rng.integers(0, 20)), n_batch=int(rng.integers(1, 40)))
        try:
            q = decode(mutant, **kwargs)
        except PacketError as e:
            assert isinstance(e.reason, str) and e.reason
            continue
        accepted += 1
        assert isinstance(q, Packet) and isinstance(q.kind, Kind)
        assert len(q.offsets) == q.n
        assert q.batch is None or len(q.batch) == q.n
        assert (q.payload is None) == (q.kind is Kind.SPIKE)
        assert q.payload is None or (len(q.payload) == q.n and np.isfinite(q.payload).all())
        assert q.step + (int(q.offsets.max()) if q.n else 0) < 2**32
        if kwargs and q.n:
            assert int(q.offsets.max()) <= kwargs["max_offset"]
            assert q.batch is None or int(q.batch.max()) < kwargs["n_batch"]
    # Most mutants must be rejected, but some (e.g. flips inside key bytes) stay valid.
    assert 0 < accepted < 20_000 // 2


def test_spike_round_equals_frame_by_frame_decode():
    """spike_round (a core's usual round, decoded at once) gives the events of decode() frame
    by frame, concatenated in frame order, with zeros for frames without a batch field."""
    from spinnray.machine.packet import spike_round

    rng = np.random.default_rng(3)
    for _ in range(200):
        frames = []
        for _f in range(int(rng.integers(0, 6))):
            n = int(rng.integers(0, 9))
            frames.append(encode(Kind.SPIKE, int(rng.integers(0, 50)), 40, rng.integers(0, 2**32, n, dtype=np.uint32),
                                 rng.integers(0, 3, n), rng.integers(0, 32, n) if rng.random() < 0.7 else None))
        got = spike_round(frames, step=40, max_offset=2, n_batch=32)
        assert got is not None
        keys, offsets, batch, counts = got
        ps = [decode(f, max_offset=2, n_batch=32) for f in frames]
        assert counts == [p.n for p in ps]
        np.testing.assert_array_equal(keys, np.concatenate([p.keys for p in ps] + [np.zeros(0, np.uint32)]))
        np.testing.assert_array_equal(offsets, np.concatenate([p.offsets for p in ps] + [np.zeros(0, np.uint16)]))
        np.testing.assert_array_equal(batch, np.concatenate(
            [p.batch if p.batch is not None else np.zeros(p.n, np.uint16) for p in ps] + [np.zeros(0, np.uint16)]))


@pytest.mark.parametrize("bad", ["error kind", "other step", "offset", "batch", "batch > 256", "garbage",
                                 "memoryview", "truncated"])
def test_spike_round_leaves_unusual_rounds_to_decode(bad):
    """Any frame that decode would reject, or that is not a SPIKE frame of the round's step,
    makes spike_round answer None (the core then decodes frame by frame, naming the problem)."""
    from spinnray.machine.packet import spike_round

    good = encode(Kind.SPIKE, 1, 40, [1, 2], [0, 1], batch=[0, 3])
    other = {
        "error kind": encode(Kind.ERROR, 1, 40, [1], [0], batch=[0], payload=[0.5]),
        "other step": encode(Kind.SPIKE, 1, 41, [1], [0]),
        "offset": encode(Kind.SPIKE, 1, 40, [1, 2], [0, 2]),
        "batch": encode(Kind.SPIKE, 1, 40, [1, 2], [0, 0], batch=[0, 32]),
        "batch > 256": encode(Kind.SPIKE, 1, 40, [1], [0], batch=[256]),
        "garbage": b"\x99\x01",
        "memoryview": memoryview(good),
        "truncated": good[:-1],
    }[bad]
    assert spike_round([good], step=40, max_offset=1, n_batch=32) is not None
    assert spike_round([good, other], step=40, max_offset=1, n_batch=32) is None
    assert spike_round([other, good], step=40, max_offset=1, n_batch=32) is None
    # sample indices beyond one byte are checked exactly when the batch is that large
    assert spike_round([encode(Kind.SPIKE, 1, 40, [1], [0], batch=[299])], step=40, max_offset=0,
                       n_batch=300) is not None


MAX_REASON = 200   # characters: a reason never grows with the frame


def _reason(frame, **kwargs):
    """The reason decode gives for ``frame`` (which must be rejected), checked to be short."""
    with pytest.raises(PacketError) as info:
        decode(frame, **kwargs)
    reason = info.value.reason
    assert isinstance(reason, str) and 0 < len(reason) <= MAX_REASON, reason
    return reason


def _peak(frame, **kwargs):
    """Peak bytes tracemalloc sees while decode rejects ``frame`` (the frame itself exists
    before tracing starts, so it is not counted).  Memory, not time, is asserted: a decoder
    that never allocates what a header declares cannot spend time filling it either, and a
    wall-clock bound in a unit test fails on a loaded machine (bench/bench_fuzz.py times it)."""
    tracemalloc.start()
    try:
        try:
            decode(frame, **kwargs)
        except PacketError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak


def _header(kind=0, src=3, step=7, n=2):
    """The packb bytes of the first five items (fixarray(9) included)."""
    return msgpack.packb([VERSION, kind, src, step, n], use_bin_type=True)[1:].join([b"\x99", b""])


def _nest(kind, depth, leaf=b"\xc0"):
    """``depth`` levels of one-element containers around ``leaf``: arrays, maps (key 0), or
    both alternating."""
    if kind == "array":
        return b"\x91" * depth + leaf
    if kind == "map":
        return b"\x81\x00" * depth + leaf
    return b"\x91\x81\x00" * (depth // 2) + leaf


def test_issue_frame_nested_in_version_is_a_packet_error():
    """The reported frame: RecursionError (repr of the nested list in the reason) before."""
    reason = _reason(b"\x99" + b"\x91" * 1000 + b"\xc0" + b"\x00" * 8)
    assert reason == "version must be 1, got list of 1 item(s) (type byte 0x91)"


@pytest.mark.parametrize("depth", [10, 100_000])
@pytest.mark.parametrize("shape", ["array", "map", "mix"])
def test_rejects_deeply_nested_frames(shape, depth):
    nested = _nest(shape, depth)
    first = f"0x{nested[0]:02x}"
    # at the top level: never unpacked, nothing recurses
    top = _reason(nested)
    if shape == "map":
        assert top == "frame must be an array of 9 items, got dict (type byte 0x81)"
    else:
        assert "not valid msgpack" in top and f"is a nested {'list' if shape == 'array' else 'dict'} " \
            f"(type byte 0x{nested[1]:02x})" in top, top
    assert "item 1 of the top-level array of 2 is a nested" in _reason(b"\x92\x01" + nested)
    # in the place of each item of a frame: the reason names the field and the type byte
    good = frame_items(random_packet(np.random.default_rng(9), Kind.ERROR, 3, with_batch=True))
    names = ["version", "kind", "src", "step", "n", "keys", "offsets", "batch", "payload"]
    for i, name in enumerate(names):
        frame = b"\x99" + b"".join(nested if j == i else pack(good[j]) for j in range(9))
        reason = _reason(frame)
        assert reason.startswith(name) and f"(type byte {first})" in reason, reason


def test_nested_frame_of_48_megabytes_is_rejected_at_once():
    """Issue 22's second report: msgpack unpacked such a frame for 17 s and 3.5 GB."""
    count = 48_000_000
    frame = _header(n=2) + b"\xdd" + struct.pack(">I", count) + b"\x90" * count
    assert "keys must be bin, got list of 48000000 item(s) (type byte 0xdd)" == _reason(frame)
    assert _peak(frame) < 64 * 1024


@pytest.mark.parametrize("name, frame, match", [
    ("bin32 declaring 4 GB", _header(n=1) + b"\xc6\xff\xff\xff\xff" + bytes(1000), "keys must be 4 bytes long"),
    ("n beyond MAX_EVENTS and a bin32 of 4 GB",
     _header(n=2**30 - 1) + b"\xc6\xff\xff\xff\xfc" + bytes(1000), "n must be in"),
    ("n = MAX_EVENTS, short body", _header(n=MAX_EVENTS) + b"\xc6" + struct.pack(">I", 4 * MAX_EVENTS) + bytes(5000),
     "truncated in keys"),
    ("array32 header claiming 2**32-1 items", b"\xdd\xff\xff\xff\xff" + bytes(3000), "exceeds max_array_len"),
    ("array of 8 claiming more items than bytes", b"\x98" + b"\xdb\xff\xff\xff\xff" + bytes(3000), "truncated"),
    ("str32 in src declaring 4 GB", _header()[:3] + b"\xdb\xff\xff\xff\xff" + bytes(2000), "src must be an int, got str"),
    ("map32 in keys declaring 2**32-1 pairs", _header() + b"\xdf\xff\xff\xff\xff" + bytes(2000), "keys must be bin"),
    ("ext32 in payload declaring 4 GB",
     _header(n=0) + b"\xc4\x00" * 3 + b"\xc9\xff\xff\xff\xff\x01" + bytes(2000), "payload must be bin"),
    ("payload bin16 beyond the end", _header(kind=1, n=100) + b"\xc5\x01\x90" + bytes(400) + b"\xc4\xc8" + bytes(200)
     + b"\xc4\x00" + b"\xc5\x01\x90" + bytes(10), "truncated in payload"),
])
def test_oversized_declared_lengths_are_rejected_without_allocating(name, frame, match):
    assert match in _reason(frame)
    peak = _peak(frame)
    assert peak < 4 * len(frame) + 64 * 1024, (name, peak, len(frame))


def test_memory_of_valid_and_invalid_frames_is_linear():
    """Valid frames are viewed, not copied; a bytearray is copied once; numpy checks of the
    event fields stay within 4x the frame."""
    rng = np.random.default_rng(5)
    for n in (1_000, 100_000):
        p = random_packet(rng, Kind.ERROR, n, with_batch=True, max_offset=300, n_batch=300)
        frame = encode_packet(p)
        for f, kwargs in ((frame, {}), (frame, dict(max_offset=300, n_batch=300)), (bytearray(frame), {})):
            tracemalloc.start()
            try:
                q = decode(f, **kwargs)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert q.n == n and peak < 4 * len(frame) + 64 * 1024, (n, type(f), peak)
        bad = bytearray(frame)
        bad[-1] ^= 0x80            # the last float's high byte: a NaN or a huge finite value
        bad[-1] |= 0x7F
        bad[-2] |= 0x80
        peak = _peak(bytes(bad))
        assert "payload must be finite" in _reason(bytes(bad))
        assert peak < 4 * len(frame) + 64 * 1024


def test_reasons_show_at_most_a_few_bytes_as_hex():
    reason = _reason(_header()[:3] + msgpack.packb("A" * 10_000))
    assert "41 41 41 41 41 41 41 41 ..." in reason and "A" not in reason.split("got")[1]
    reason = _reason(encode(Kind.SPIKE, 0, 0, [1], [0]) + bytes(range(200)))
    assert "ExtraData: 200 byte(s)" in reason and "00 01 02 03 04 05 06 07 ..." in reason


def test_wrong_type_reasons_name_field_and_type_byte():
    items = frame_items(random_packet(np.random.default_rng(6), Kind.SPIKE, 2, with_batch=False))
    for i, name in enumerate(["version", "kind", "src", "step", "n", "keys", "offsets", "batch", "payload"]):
        for value, byte in [([1, [2]], 0x92), ({"a": 1}, 0x81), ("x", 0xA1), (msgpack.ExtType(3, b"ab"), 0xD5),
                            (1.5, 0xCB), (None, 0xC0)]:
            frame = pack(items[:i] + [value] + items[i + 1:])
            reason = _reason(frame)
            assert reason.startswith(name) and f"type byte 0x{byte:02x}" in reason, reason
    assert _reason(b"\x99\x01\xc1") == "kind must be one of SPIKE=0, ERROR=1, got never-used byte (type byte 0xc1)"


def test_non_canonical_encodings_are_rejected():
    """A frame is exactly what msgpack.packb writes, so a decoded frame re-encodes to the
    same bytes; the same values in a larger int or bin encoding are refused, by name."""
    frame = encode(Kind.SPIKE, 3, 7, [1, 2], [0, 1])
    assert frame[3] == 3 and frame[4] == 7
    assert "src = 3 must be in msgpack's smallest int encoding" in _reason(frame[:3] + b"\xcc\x03" + frame[4:])
    assert "step = 7" in _reason(frame[:4] + b"\xd0\x07" + frame[5:])
    assert "version = 1" in _reason(b"\x99\xcd\x00\x01" + frame[2:])
    assert frame[6:8] == b"\xc4\x08"
    reason = _reason(frame[:6] + b"\xc5\x00\x08" + frame[8:])
    assert "keys: a bin of 8 bytes must have msgpack's smallest length prefix (type byte 0xc4)" in reason


@pytest.mark.parametrize("value", [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1])
def test_fast_reader_takes_every_encoded_frame(value):
    """_layout (the fast path) takes every frame encode writes, at every int encoding
    boundary, and n at every bin prefix boundary; the careful reader agrees."""
    for n in (0, 63, 64, 127, 128, 16383, 16384):
        p = random_packet(np.random.default_rng(n), Kind.ERROR, n, with_batch=bool(n % 2))
        p = p._replace(src=value, step=min(value, 2**32 - 2**16 - 1))
        frame = encode_packet(p)
        assert packet_module._layout(frame) is not None, (value, n)
        assert_same(packet_module._decode_careful(frame, None, None), decode(frame))
        assert encode_packet(decode(frame)) == frame


def test_unusual_buffers_raise_only_packet_error():
    released = memoryview(b"abc")
    released.release()

    class Weird(bytes):
        def __bytes__(self):
            raise RuntimeError("never called")

        def __len__(self):
            raise RuntimeError("never called")

    frame = encode(Kind.SPIKE, 1, 2, [3], [0])
    assert "readable buffer" in _reason(released)
    assert_same(decode(Weird(frame)), decode(frame))
    assert_same(decode(memoryview(np.frombuffer(frame, np.uint8))), decode(frame))
    assert frame_nbytes(frame) == len(frame) and frame_nbytes(bytearray(frame)) == len(frame)
    assert frame_nbytes(memoryview(np.zeros(3, np.uint16))) == 6
    assert frame_nbytes(released) == 0 and frame_nbytes(None) == 0 and frame_nbytes(Weird(frame)) == len(frame)


_HOSTILE_ITEMS = [b"\x91" * 50 + b"\xc0", b"\x81\x00" * 50 + b"\xc0", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
                  b"\xc6\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x01", b"\xcf" + b"\xff" * 8,
                  b"\xd3\x80" + bytes(7), b"\xc1", b"\xc0", b"\xc3", b"\xca\x7f\xc0\x00\x00", b"\xd4\x01\x00"]


def _hostile(rng, frame, items):
    """One variant of a valid frame, of the kinds _mutate makes and worse: a nested
    container or a huge declared length in place of an item, random bytes, a header
    of another array length, bit flips, truncations."""
    op = rng.integers(5)
    if op == 0:
        i = int(rng.integers(9))
        raw = [pack(x) for x in items]
        raw[i] = _HOSTILE_ITEMS[rng.integers(len(_HOSTILE_ITEMS))]
        return b"\x99" + b"".join(raw)
    if op == 1:
        b = bytearray(frame)
        for i in rng.integers(0, len(b), rng.integers(1, 3)):
            b[i] ^= 1 << int(rng.integers(8))          # single-bit flips
        return bytes(b)
    if op == 2:
        return bytes([int(rng.choice([0x90, 0x98, 0x9A, 0xDC, 0xDD, 0x80, 0xC1]))]) + frame[1:]
    if op == 3:
        return frame[:int(rng.integers(0, len(frame)))] + rng.bytes(int(rng.integers(0, 12)))
    return _mutate(rng, frame, items)


def test_fuzz_only_packet_error_or_exact_reencode():
    """20,000 variants of valid frames (seeded): each raises PacketError with a short reason,
    or decodes to a packet that re-encodes to exactly the same bytes; the fast and careful
    readers agree on every one."""
    rng = np.random.default_rng(2222)
    bases = []
    for n in (0, 1, 2, 5, 40, 70):
        for kind in Kind:
            for with_batch in (False, True):
                p = random_packet(rng, kind, n, with_batch)
                if rng.random() < 0.5:
                    p = p._replace(src=int(rng.choice([5, 200, 300, 70000])), step=int(rng.choice([0, 100, 1000, 90000])))
                bases.append((encode_packet(p), frame_items(p)))
    accepted = 0
    for _ in range(20_000):
        frame, items = bases[rng.integers(len(bases))]
        mutant = _hostile(rng, frame, items)
        kwargs = {}
        if rng.random() < 0.5:
            kwargs = dict(max_offset=int(rng.integers(0, 20)), n_batch=int(rng.integers(1, 40)))
        try:
            q = decode(mutant if rng.random() < 0.9 else bytearray(mutant), **kwargs)
        except PacketError as e:
            assert isinstance(e.reason, str) and 0 < len(e.reason) <= MAX_REASON, e.reason
            with pytest.raises(PacketError) as careful:
                packet_module._decode_careful(mutant, kwargs.get("max_offset"), kwargs.get("n_batch"))
            assert careful.value.reason == e.reason
            continue
        accepted += 1
        assert isinstance(q, Packet) and isinstance(q.kind, Kind)
        assert encode_packet(q) == mutant
        assert_same(packet_module._decode_careful(mutant, kwargs.get("max_offset"), kwargs.get("n_batch")), q)
    assert 0 < accepted < 20_000 // 2


def test_spike_round_answers_none_for_hostile_frames():
    good = encode(Kind.SPIKE, 1, 40, [1, 2], [0, 1], batch=[0, 3])
    for bad in [b"\x91" * 100_000 + b"\xc0", b"\x99" + b"\x91" * 1000 + b"\xc0" + b"\x00" * 8,
                _header(n=MAX_EVENTS) + b"\xc6" + struct.pack(">I", 4 * MAX_EVENTS), b"", None,
                good[:3] + b"\xcc\x01" + good[4:]]:
        assert spike_round([good, bad], step=40, max_offset=1, n_batch=32) is None
