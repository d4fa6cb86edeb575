"""Tests of the wire format: round trips, every rejection reason, and a fuzz."""

import msgpack
import numpy as np
import pytest

from spinnray.errors import PacketError
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
    subset,
)

# ----------------------------------------------------------------- helpers


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


# ----------------------------------------------------------------- round trip


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


# ----------------------------------------------------------------- subset


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


# ----------------------------------------------------------------- decode rejections


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


# ----------------------------------------------------------------- encode rejections


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


# ----------------------------------------------------------------- fuzz

# Values of every msgpack type but the one each field expects.
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


# ----------------------------------------------------------------- spike_round


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
