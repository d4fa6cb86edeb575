"""Tests of the multicast router (spinnray.machine.router), without Ray.

The table lookup is checked against a brute-force walk of the entries (first
match wins); ``Router.route`` against a reference that decides, event by
event, which cores must receive it; counters against values computed by hand.
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from spinnray.errors import RoutingError
from spinnray.machine import packet
from spinnray.machine.packet import Kind, decode, encode
from spinnray.machine.router import Router, RoutingEntry, RoutingTable

M32 = 0xFFFFFFFF


def ref_lookup(entries: list[RoutingEntry], key: int) -> int:
    """Index of the first entry whose (key, mask) matches ``key``, or -1."""
    for i, e in enumerate(entries):
        if (key & e.mask) == e.key:
            return i
    return -1


def ref_route(entries, cores, inbox):
    """What every core must receive: a list of (src, step, kind, keys, offsets,
    batch, payload) per destination, in ascending source order, for valid frames."""
    expected = {c: [] for c in cores}
    for src in sorted(inbox):
        for frame in inbox[src]:
            p = decode(frame)
            dests = []
            for k in p.keys.tolist():
                i = ref_lookup(entries, k)
                dests.append(set() if i < 0 else set(entries[i].destinations))
            for dst in sorted(cores):
                sel = np.array([dst in d for d in dests], bool)
                if sel.any():
                    expected[dst].append((
                        src, p.step, p.kind, p.keys[sel].tolist(), p.offsets[sel].tolist(),
                        None if p.batch is None else p.batch[sel].tolist(),
                        None if p.payload is None else p.payload[sel].tolist(),
                        bool(sel.all()),
                    ))
    return expected


def as_tuple(frame: bytes):
    p = decode(frame)
    return (p.src, p.step, p.kind, p.keys.tolist(), p.offsets.tolist(),
            None if p.batch is None else p.batch.tolist(),
            None if p.payload is None else p.payload.tolist())


def spike(src, keys, offsets=None, batch=None, step=0):
    keys = np.asarray(keys, np.uint32)
    offsets = np.zeros(len(keys), np.uint16) if offsets is None else np.asarray(offsets, np.uint16)
    return encode(Kind.SPIKE, src, step, keys, offsets,
                  batch=None if batch is None else np.asarray(batch, np.uint16))


@pytest.mark.parametrize("key, mask, value", [
    (0x0000_0101, 0xFFFF_FF00, "0x00000101"),   # bit 0 outside the mask
    (0x8000_0000, 0x7FFF_FFFF, "0x80000000"),   # top bit outside the mask
    (0x0000_0001, 0x0000_0000, "0x00000001"),   # mask 0 admits only key 0
])
def test_entry_rejects_key_bits_outside_mask(key, mask, value):
    with pytest.raises(RoutingError) as info:
        RoutingEntry(key, mask, (0,))
    msg = str(info.value)
    assert value in msg and f"{mask:#010x}" in msg


@pytest.mark.parametrize("field, bad", [
    ("key", -1), ("key", 2**32), ("mask", -1), ("mask", 2**32), ("key", 1.0), ("mask", "0xff"),
])
def test_entry_rejects_out_of_range_ints(field, bad):
    kwargs = {"key": 0, "mask": M32, "destinations": (1,)}
    kwargs[field] = bad
    with pytest.raises(RoutingError) as info:
        RoutingEntry(**kwargs)
    msg = str(info.value)
    assert f"RoutingEntry.{field}" in msg and repr(bad) in msg


@pytest.mark.parametrize("dests", [(), (3, 1), (1, 1), (2, 5, 4)])
def test_entry_rejects_empty_or_unsorted_destinations(dests):
    with pytest.raises(RoutingError) as info:
        RoutingEntry(0x100, 0xFFFFFF00, dests)
    assert repr(dests) in str(info.value)


def test_entry_accepts_boundaries():
    e = RoutingEntry(M32, M32, (0, 7, 9))
    assert (e.key, e.mask, e.destinations) == (M32, M32, (0, 7, 9))
    assert RoutingEntry(0, 0, (2,)).mask == 0


def test_table_rejects_duplicates_naming_them():
    a = RoutingEntry(0x200, 0xFFFFFF00, (1,))
    b = RoutingEntry(0x200, 0xFFFFFF00, (2,))
    with pytest.raises(RoutingError) as info:
        RoutingTable([a, RoutingEntry(0x300, 0xFFFFFF00, (1,)), b])
    assert "0x00000200" in str(info.value) and "0xffffff00" in str(info.value)
    # The same key under a different mask is a different entry.
    assert len(RoutingTable([a, RoutingEntry(0x200, 0xFFFFFFF0, (3,))])) == 2


MASKS = [M32, 0xFFFFFFF0, 0xFFFFFF00, 0xFFFF0000, 0xF0F0F0F0, 0xFFFFFFFC, 0x0000FF00]


def random_table(rng, n_entries, masks, catch_all=False):
    """Entries with keys drawn from a small universe so that they overlap."""
    entries, seen = [], set()
    high = rng.integers(0, 4, size=64) << 8          # few distinct high parts -> overlaps
    for _ in range(50 * n_entries):           # small mask/key universes may hold fewer entries
        if len(entries) == n_entries:
            break
        mask = int(masks[rng.integers(len(masks))])
        raw = int(high[rng.integers(len(high))]) | int(rng.integers(0, 256))
        key = raw & mask
        if (key, mask) in seen:
            continue
        seen.add((key, mask))
        dests = tuple(sorted(set(rng.integers(0, 8, size=rng.integers(1, 4)).tolist())))
        entries.append(RoutingEntry(key, mask, dests))
    if catch_all:
        entries.insert(int(rng.integers(len(entries) + 1)), RoutingEntry(0, 0, (0,)))
    return entries


@pytest.mark.parametrize("seed", range(12))
def test_lookup_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_masks = 1 + seed % len(MASKS)
    masks = [MASKS[(seed + j) % len(MASKS)] for j in range(n_masks)]
    entries = random_table(rng, int(rng.integers(1, 40)), masks, catch_all=seed % 4 == 3)
    table = RoutingTable(entries)
    assert len(table) == len(entries)
    keys = np.concatenate([
        rng.integers(0, 2**32, 200, dtype=np.uint64),                    # mostly unmatched
        rng.integers(0, 4 << 8 | 0xFF, 400, dtype=np.uint64),            # the entries' universe
        np.array([e.key for e in entries], np.uint64),                   # every entry's own key
        np.array([e.key | (~e.mask & M32 & 0x3) for e in entries], np.uint64),  # inside a block
        np.array([0, M32], np.uint64),
    ]).astype(np.uint32)
    got = table.lookup(keys)
    want = np.array([ref_lookup(entries, int(k)) for k in keys], np.int64)
    assert got.dtype == np.int64 and got.shape == keys.shape
    np.testing.assert_array_equal(got, want)
    # The test is not vacuous: overlaps resolved by order, and misses, both occur.
    n_hits = np.array([sum((int(k) & e.mask) == e.key for e in entries) for k in keys])
    if seed % 4 != 3:
        assert (want == -1).any()
    else:
        assert (want >= 0).all()
    if n_masks > 1:
        assert (n_hits > 1).any()


@pytest.mark.parametrize("seed", range(8))
def test_frame_entry_is_lookup_when_one_entry_routes_every_key(seed):
    """frame_entry (the router's per-frame shortcut) answers an entry only when lookup sends
    every key of the frame to that entry, and None otherwise; asked twice (the cache) the same."""
    rng = np.random.default_rng(100 + seed)
    masks = [MASKS[seed % len(MASKS)]] if seed < 6 else MASKS[:2]
    entries = random_table(rng, int(rng.integers(1, 20)), masks)
    table = RoutingTable(entries)
    one_mask = len({e.mask for e in entries}) == 1
    seen = {"one": 0, "none": 0}
    for _ in range(300):
        base = entries[int(rng.integers(len(entries)))].key if rng.random() < 0.7 else int(rng.integers(0, 2**32))
        n = int(rng.integers(1, 6))
        keys = (base | rng.integers(0, 4 if rng.random() < 0.8 else 2**12, n)).astype(np.uint32)
        want = table.lookup(keys)
        for _repeat in range(2):
            got = table.frame_entry(keys)
            if got is None:
                assert not one_mask or not ((want == want[0]).all() and want[0] >= 0)
            else:
                assert (want == got).all()
        seen["one" if got is not None else "none"] += 1
    if one_mask:
        assert seen["one"] and seen["none"]
    else:                                   # several masks: always the full lookup
        assert seen["one"] == 0
    assert table.frame_entry(np.array([], np.uint32)) is None


def test_lookup_first_match_wins_across_masks():
    # A broad entry first shadows a narrower one behind it, and vice versa.
    broad, narrow = RoutingEntry(0x100, 0xFFFFFF00, (1,)), RoutingEntry(0x110, 0xFFFFFFF0, (2,))
    keys = np.array([0x115, 0x105, 0x215], np.uint32)
    assert RoutingTable([broad, narrow]).lookup(keys).tolist() == [0, 0, -1]
    assert RoutingTable([narrow, broad]).lookup(keys).tolist() == [0, 1, -1]


def test_lookup_empty_table_and_no_keys():
    assert RoutingTable([]).lookup(np.array([0, 5, M32], np.uint32)).tolist() == [-1, -1, -1]
    t = RoutingTable([RoutingEntry(0, M32, (0,))])
    assert t.lookup(np.array([], np.uint32)).shape == (0,)


def test_multicast_forwards_identical_bytes():
    table = RoutingTable([RoutingEntry(0x100, 0xFFFFFF00, (1, 2, 3))])
    router = Router(table, [0, 1, 2, 3], max_offset=3, n_batch=2)
    frame = spike(0, [0x100, 0x1FF, 0x105], offsets=[0, 3, 1], batch=[1, 0, 1])
    out = router.route({0: [frame]})
    assert sorted(out) == [0, 1, 2, 3]
    assert out[0] == []
    for dst in (1, 2, 3):
        assert out[dst] == [frame]
    c = router.counters
    assert (c.packets_in, c.packets_out) == (1, 3)
    assert (c.spike_events_in, c.spike_events_out, c.error_events_in, c.error_events_out) == (3, 9, 0, 0)
    assert (c.bytes_in, c.bytes_out) == (len(frame), 3 * len(frame))
    assert c.links == {(0, d): [3, len(frame)] for d in (1, 2, 3)}
    assert (c.dropped, c.rejected, router.reasons) == (0, 0, [])


def test_events_to_same_destinations_through_different_entries_forward_bytes():
    table = RoutingTable([RoutingEntry(0x100, 0xFFFFFF00, (1, 2)),
                          RoutingEntry(0x200, 0xFFFFFF00, (1, 2))])
    router = Router(table, [0, 1, 2], max_offset=0, n_batch=1)
    frame = spike(0, [0x101, 0x202, 0x103])
    out = router.route({0: [frame]})
    assert out[1] == [frame] and out[2] == [frame] and out[0] == []


def test_split_frame_is_reencoded_into_subsets():
    entries = [RoutingEntry(0x000, 0xFFFFFF00, (1, 2)),
               RoutingEntry(0x100, 0xFFFFFF00, (2, 3)),
               RoutingEntry(0x200, 0xFFFFFF00, (3,))]
    router = Router(RoutingTable(entries), [0, 1, 2, 3], max_offset=7, n_batch=4)
    keys = [0x001, 0x101, 0x002, 0x2AA, 0x105, 0x0FF]
    offs = [0, 1, 2, 3, 4, 7]
    bat = [3, 2, 1, 0, 1, 2]
    frame = spike(0, keys, offs, bat, step=1000)
    out = router.route({0: [frame]})
    # Core 2 gets the first two entries' events only, core 1 the first's, core 3 the last two.
    want = {
        1: ([0x001, 0x002, 0x0FF], [0, 2, 7], [3, 1, 2]),
        2: ([0x001, 0x101, 0x002, 0x105, 0x0FF], [0, 1, 2, 4, 7], [3, 2, 1, 1, 2]),
        3: ([0x101, 0x2AA, 0x105], [1, 3, 4], [2, 0, 1]),
    }
    assert out[0] == []
    for dst, (k, o, b) in want.items():
        assert len(out[dst]) == 1
        assert as_tuple(out[dst][0]) == (0, 1000, Kind.SPIKE, k, o, b, None)
        # The subset is the canonical encoding of those events.
        assert out[dst][0] == encode(Kind.SPIKE, 0, 1000, np.array(k, np.uint32), np.array(o, np.uint16),
                                     batch=np.array(b, np.uint16))
    c = router.counters
    lens = {d: len(out[d][0]) for d in want}
    assert (c.packets_in, c.packets_out) == (1, 3)
    assert (c.spike_events_in, c.spike_events_out) == (6, 3 + 5 + 3)
    assert (c.bytes_in, c.bytes_out) == (len(frame), sum(lens.values()))
    assert c.links == {(0, d): [len(want[d][0]), lens[d]] for d in want}
    assert c.dropped == 0 and c.rejected == 0


def test_error_events_counted_apart_and_payload_kept():
    table = RoutingTable([RoutingEntry(0x10, 0xFFFFFFF0, (1,)), RoutingEntry(0x20, 0xFFFFFFF0, (2,))])
    router = Router(table, [0, 1, 2], max_offset=0, n_batch=1)
    frame = encode(Kind.ERROR, 0, 7, np.array([0x11, 0x21, 0x12], np.uint32), np.zeros(3, np.uint16),
                   payload=np.array([0.5, -1.5, 2.25], np.float32))
    out = router.route({0: [frame]})
    assert as_tuple(out[1][0]) == (0, 7, Kind.ERROR, [0x11, 0x12], [0, 0], None, [0.5, 2.25])
    assert as_tuple(out[2][0]) == (0, 7, Kind.ERROR, [0x21], [0], None, [-1.5])
    c = router.counters
    assert (c.error_events_in, c.error_events_out, c.spike_events_in, c.spike_events_out) == (3, 3, 0, 0)


@pytest.mark.parametrize("seed", range(8))
def test_route_equals_reference_on_random_rounds(seed):
    rng = np.random.default_rng(100 + seed)
    cores = list(range(8))
    entries = random_table(rng, int(rng.integers(1, 25)), MASKS[: 1 + seed % len(MASKS)],
                           catch_all=False)
    n_batch, max_offset = int(rng.integers(1, 5)), int(rng.integers(0, 6))
    router = Router(RoutingTable(entries), cores, max_offset=max_offset, n_batch=n_batch)
    inbox = {}
    for src in rng.permutation(cores)[: rng.integers(1, 9)].tolist():
        frames = []
        for _ in range(int(rng.integers(0, 4))):
            n = int(rng.integers(0, 40))
            near = (rng.choice(np.array([e.key for e in entries], np.uint64), n)
                    | rng.integers(0, 256, n, dtype=np.uint64))
            keys = np.where(rng.random(n) < 0.8, near,
                            rng.integers(0, 2**32, n, dtype=np.uint64)).astype(np.uint32)
            kind = Kind.ERROR if rng.random() < 0.3 else Kind.SPIKE
            frames.append(encode(kind, src, int(rng.integers(0, 10**6)), keys,
                                 rng.integers(0, max_offset + 1, n).astype(np.uint16),
                                 batch=rng.integers(0, n_batch, n).astype(np.uint16) if n_batch > 1 else None,
                                 payload=rng.standard_normal(n).astype(np.float32) if kind is Kind.ERROR
                                 else None))
        inbox[src] = frames
    out = router.route(inbox)
    want = ref_route(entries, cores, inbox)
    assert sorted(out) == cores
    n_out = 0
    for dst in cores:
        assert [as_tuple(f) for f in out[dst]] == [w[:7] for w in want[dst]], dst
        for f, w in zip(out[dst], want[dst]):
            src_frames = inbox[w[0]]
            if w[7]:   # every event of the frame goes here: the frame's bytes are forwarded
                assert any(f == g for g in src_frames)
        n_out += len(out[dst])
    assert n_out > 0
    # Counters against the reference.
    c = router.counters
    all_frames = [f for fs in inbox.values() for f in fs]
    events_in = {k: sum(decode(f).n for f in all_frames if decode(f).kind is k) for k in Kind}
    events_out = {k: sum(len(w[3]) for ws in want.values() for w in ws if w[2] is k) for k in Kind}
    unroutable = sum(ref_lookup(entries, int(k)) < 0 for f in all_frames for k in decode(f).keys)
    assert c.packets_in == len(all_frames)
    assert c.bytes_in == sum(len(f) for f in all_frames)
    assert (c.spike_events_in, c.error_events_in) == (events_in[Kind.SPIKE], events_in[Kind.ERROR])
    assert (c.spike_events_out, c.error_events_out) == (events_out[Kind.SPIKE], events_out[Kind.ERROR])
    assert c.packets_out == n_out
    assert c.bytes_out == sum(len(f) for fs in out.values() for f in fs)
    assert c.dropped == unroutable and c.rejected == 0
    links = {}
    for dst in cores:
        for f in out[dst]:
            cell = links.setdefault((decode(f).src, dst), [0, 0])
            cell[0] += decode(f).n
            cell[1] += len(f)
    assert c.links == links


def test_unroutable_keys_are_dropped_and_noted():
    table = RoutingTable([RoutingEntry(0x100, 0xFFFFFF00, (1,))])
    router = Router(table, [0, 1], max_offset=0, n_batch=1)
    frame = spike(0, [0x101, 0xDEAD0000, 0x102, 0xBEEF0001])
    out = router.route({0: [frame]})
    assert [as_tuple(f)[3] for f in out[1]] == [[0x101, 0x102]]
    c = router.counters
    assert c.dropped == 2 and c.rejected == 0
    assert (c.spike_events_in, c.spike_events_out) == (4, 2)
    assert len(router.reasons) == 1
    assert "core 0" in router.reasons[0] and "0xdead0000" in router.reasons[0]
    assert "dropped 2" in router.reasons[0]


def test_destination_not_served_by_router_is_dropped_and_noted():
    table = RoutingTable([RoutingEntry(0x100, 0xFFFFFF00, (1, 9))])
    router = Router(table, [0, 1], max_offset=0, n_batch=1, router_id=4)
    frame = spike(0, [0x101, 0x102, 0x103])
    out = router.route({0: [frame]})
    assert out == {0: [], 1: [frame]}
    assert router.counters.dropped == 3
    assert any("router 4" in r and "core 9" in r for r in router.reasons)


def test_empty_frame_counts_in_but_sends_nothing():
    router = Router(RoutingTable([RoutingEntry(0, 0, (1,))]), [0, 1], max_offset=0, n_batch=1)
    frame = spike(0, [])
    out = router.route({0: [frame]})
    assert out == {0: [], 1: []}
    c = router.counters
    assert (c.packets_in, c.bytes_in, c.packets_out, c.dropped, c.rejected) == (1, len(frame), 0, 0, 0)


def _bad_frames():
    """(name, source core it arrives from, frame, text expected in the reason)."""
    good = spike(2, [0x101, 0x102], offsets=[0, 1], batch=[0, 1])
    items = msgpack.unpackb(good)
    wrong_version = msgpack.packb([2] + items[1:], use_bin_type=True)
    return [
        ("truncated", 2, good[:-3], "msgpack"),
        ("garbage", 2, b"\xc1\x00garbage", "msgpack"),
        ("not bytes", 2, "a string", "bytes-like"),
        ("wrong version", 2, wrong_version, "version must be 1"),
        ("src mismatch", 3, good, "claims source core 2 but arrived from core 3"),
        ("offset beyond max_offset", 2, spike(2, [0x101], offsets=[4], batch=[0]), "max_offset=3"),
        ("batch beyond n_batch", 2, spike(2, [0x101, 0x102], batch=[1, 2]), "n_batch=2"),
    ]


@pytest.mark.parametrize("name, src, bad, reason", _bad_frames(), ids=[b[0] for b in _bad_frames()])
def test_malformed_frame_is_rejected_noted_and_round_goes_on(name, src, bad, reason):
    table = RoutingTable([RoutingEntry(0x100, 0xFFFFFF00, (0, 1))])
    router = Router(table, [0, 1, 2, 3], max_offset=3, n_batch=2)
    ok2 = spike(2, [0x103], offsets=[3], batch=[1])
    ok3 = spike(3, [0x104, 0x105], offsets=[0, 2], batch=[0, 0])
    inbox = {2: [ok2], 3: [ok3]}
    inbox[src] = [inbox[src][0], bad] if src == 2 else [bad, inbox[src][0]]
    out = router.route(inbox)           # never raises
    assert out[0] == out[1] == [ok2, ok3]
    assert out[2] == out[3] == []
    c = router.counters
    assert c.rejected == 1 and c.dropped == 0
    assert c.packets_in == 3 and c.packets_out == 4
    assert c.spike_events_in == 3
    assert c.bytes_in == len(ok2) + len(ok3) + (len(bad) if isinstance(bad, bytes) else 0)
    assert len(router.reasons) == 1
    assert f"from core {src}" in router.reasons[0] and reason in router.reasons[0], router.reasons


def test_all_malformed_frames_in_one_round():
    table = RoutingTable([RoutingEntry(0x100, 0xFFFFFF00, (0, 1))])
    router = Router(table, [0, 1, 2, 3], max_offset=3, n_batch=2)
    inbox = {2: [], 3: []}
    for _, src, bad, _ in _bad_frames():
        inbox[src].append(bad)
    ok = spike(2, [0x1AA], offsets=[1], batch=[1])
    inbox[2].insert(3, ok)
    out = router.route(inbox)
    assert out[0] == out[1] == [ok]
    assert router.counters.rejected == len(_bad_frames())
    assert len(router.reasons) == len(_bad_frames())


def test_reasons_are_capped_but_counts_exact():
    router = Router(RoutingTable([]), [0], max_offset=0, n_batch=1)
    router.route({0: [b"junk"] * 30})
    router.route({0: [spike(0, [1, 2, 3])] * 5})
    c = router.counters
    assert c.rejected == 30 and c.dropped == 15
    assert len(router.reasons) == 20


def test_configure_changes_the_bounds():
    table = RoutingTable([RoutingEntry(0, 0, (0,))])
    router = Router(table, [0], max_offset=0, n_batch=1)
    frame = spike(0, [5, 6], offsets=[0, 2], batch=[0, 3])
    router.route({0: [frame]})
    assert router.counters.rejected == 1
    router.configure(max_offset=2, n_batch=4)
    assert router.route({0: [frame]}) == {0: [frame]}
    assert router.counters.rejected == 1


def test_frames_emitted_in_ascending_source_order():
    table = RoutingTable([RoutingEntry(0, 0, (0, 9))])
    router = Router(table, [0, 2, 3, 5, 9], max_offset=0, n_batch=1)
    frames = {s: [spike(s, [s]), spike(s, [100 + s])] for s in (5, 2, 9, 3)}
    inbox = {s: frames[s] for s in (9, 5, 3, 2)}       # inserted in descending order
    out = router.route(inbox)
    want = [f for s in (2, 3, 5, 9) for f in frames[s]]
    assert out[0] == want and out[9] == want
    assert out[2] == out[3] == out[5] == []


def test_counters_accumulate_over_rounds_and_as_dict():
    table = RoutingTable([RoutingEntry(0x10, 0xFFFFFFF0, (1,))])
    router = Router(table, [0, 1], max_offset=0, n_batch=1)
    f = spike(0, [0x11, 0x12])
    for _ in range(3):
        router.route({0: [f], 1: []})
    d = router.counters.as_dict()
    assert d["packets_in"] == 3 and d["packets_out"] == 3 and d["spike_events_out"] == 6
    assert d["bytes_in"] == d["bytes_out"] == 3 * len(f)
    assert d["links"] == {"0->1": [6, 3 * len(f)]}
    assert packet.decode(f).n == 2


def _hostile_frames():
    """(name, frame, text expected in the reason): nested containers, huge declared
    lengths, garbage; packet.decode rejects each with a short PacketError."""
    import struct

    head = msgpack.packb([1, 0, 2, 0, 2], use_bin_type=True)[1:]     # version .. n of a frame from core 2
    return [
        ("nested in version", b"\x99" + b"\x91" * 1000 + b"\xc0" + b"\x00" * 8, "version must be 1, got list"),
        ("nested 100000 deep", b"\x91" * 100_000 + b"\xc0", "nested list (type byte 0x91)"),
        ("nested maps", b"\x81\x00" * 50_000 + b"\xc0", "got dict (type byte 0x81)"),
        ("nested array in keys", b"\x99" + head + b"\xdd" + struct.pack(">I", 10**6) + b"\x90" * 10**6,
         "keys must be bin, got list"),
        ("bin32 declaring 4 GB", b"\x99" + head + b"\xc6\xff\xff\xff\xff" + bytes(64), "keys must be 8 bytes long"),
        ("n = MAX_EVENTS, short body", b"\x99" + msgpack.packb([1, 0, 2, 0, packet.MAX_EVENTS])[1:] + b"\xc6"
         + struct.pack(">I", 4 * packet.MAX_EVENTS) + bytes(64), "truncated in keys"),
        ("random bytes", bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)), "type byte"),
        ("non-canonical src", spike(2, [0x101])[:3] + b"\xcc\x02" + spike(2, [0x101])[4:], "smallest int encoding"),
        ("None", None, "bytes-like"),
    ]


def test_hostile_frames_are_rejected_and_valid_frames_routed_unchanged():
    """Nested, oversized and garbage frames in a round are each counted as rejected with a
    reason, and the round's valid frames are routed exactly as in a round without them."""
    table = RoutingTable([RoutingEntry(0x100, 0xFFFFFF00, (0, 1)), RoutingEntry(0x200, 0xFFFFFF00, (3,))])
    valid = {2: [spike(2, [0x101, 0x102], offsets=[0, 1], batch=[0, 1]), spike(2, [0x103, 0x201], batch=[1, 0])],
             3: [spike(3, [0x104], offsets=[3], batch=[1])]}
    clean = Router(table, [0, 1, 2, 3], max_offset=3, n_batch=2)
    want = clean.route(valid)
    hostile = _hostile_frames()
    inbox = {2: [valid[2][0]] + [h[1] for h in hostile] + [valid[2][1]], 3: list(valid[3])}
    router = Router(table, [0, 1, 2, 3], max_offset=3, n_batch=2)
    out = router.route(inbox)                             # never raises
    assert out == want
    c, w = router.counters, clean.counters
    assert c.rejected == len(hostile) and c.dropped == 0
    assert c.packets_in == w.packets_in + len(hostile)
    assert (c.packets_out, c.bytes_out, c.spike_events_in, c.spike_events_out, c.links) == \
        (w.packets_out, w.bytes_out, w.spike_events_in, w.spike_events_out, w.links)
    assert c.bytes_in == w.bytes_in + sum(len(h[1]) for h in hostile if h[1] is not None)
    assert len(router.reasons) == len(hostile)
    for (name, _, match), reason in zip(hostile, router.reasons):
        assert "from core 2" in reason and match in reason and len(reason) < 250, (name, reason)


def test_hostile_frames_forwarded_by_a_router_are_rejected():
    table = RoutingTable([RoutingEntry(0x100, 0xFFFFFF00, (1,))])
    r = Router(table, [1], max_offset=3, n_batch=2, router_id=1, node=1, router_of={2: 0, 1: 1})
    good = spike(2, [0x101], batch=[1])
    hostile = [h[1] for h in _hostile_frames()]
    out = r.deliver(r.route_forwarded({0: hostile[:4] + [good] + hostile[4:]}))
    assert out == {1: [good]}
    c = r.counters
    assert c.rejected == len(hostile) and c.from_routers_packets == len(hostile) + 1
    assert c.from_routers_events == 1 and all("from router 0" in x for x in r.reasons)


def test_router_with_links_refuses_single_router_routing():
    table = RoutingTable([RoutingEntry(0x10, 0xFFFFFFF0, (), (1,))])
    frame = packet.encode(packet.Kind.SPIKE, 0, 0, np.array([0x11], np.uint32), np.zeros(1, np.uint16))
    with pytest.raises(RoutingError, match="links to routers"):
        Router(table, [0], max_offset=0, n_batch=1).route({0: [frame]})


def test_forwarded_frame_from_the_wrong_router_is_rejected():
    table = RoutingTable([RoutingEntry(0x10, 0xFFFFFFF0, (1,))])
    r = Router(table, [1], max_offset=0, n_batch=1, router_id=1, node=1, router_of={0: 0, 1: 1, 2: 2})
    frame = packet.encode(packet.Kind.SPIKE, 0, 0, np.array([0x11], np.uint32), np.zeros(1, np.uint16))
    assert r.deliver(r.route_forwarded({2: [frame]})) == {1: []}      # core 0 is served by router 0, not 2
    assert r.counters.rejected == 1 and "forwarded by router 2" in r.reasons[0]
    assert r.deliver(r.route_forwarded({0: [frame]})) == {1: [frame]}


def test_forwarded_copies_are_counted_by_the_class_of_the_peer():
    """Router 0 shares node 0 with router 1 (another chip) and sends to router 2 on node 1: one copy
    each, counted as inter-chip (same_node) and inter-node (across_nodes); the receivers count alike."""
    routers_node = [0, 0, 1]
    router_of = {0: 0, 1: 1, 2: 2}
    tables = [RoutingTable([RoutingEntry(0x10, 0xFFFFFFF0, (0,), (1, 2))]),
              RoutingTable([RoutingEntry(0x10, 0xFFFFFFF0, (1,))]), RoutingTable([RoutingEntry(0x10, 0xFFFFFFF0, (2,))])]
    rs = [Router(t, [n], max_offset=0, n_batch=1, router_id=n, node=routers_node[n], router_of=router_of,
                 router_node=routers_node) for n, t in enumerate(tables)]
    frame = packet.encode(packet.Kind.SPIKE, 0, 0, np.array([0x11, 0x12], np.uint32), np.zeros(2, np.uint16))
    local, remote = rs[0].route_local({0: [frame]})
    assert remote == {1: [frame], 2: [frame]}
    c = rs[0].counters
    size = len(frame)
    assert c.forwarded_by_class == {"same_node": {"packets": 1, "events": 2, "bytes": size},
                                    "across_nodes": {"packets": 1, "events": 2, "bytes": size}}
    assert (c.forwarded_packets, c.forwarded_events, c.peers) == (2, 4, {1: [2, size], 2: [2, size]})
    for n in (1, 2):
        assert rs[n].deliver(rs[n].route_forwarded({0: remote[n]})) == {n: [frame]}
    assert rs[1].counters.from_routers_by_class["same_node"] == {"packets": 1, "events": 2, "bytes": size}
    assert rs[2].counters.from_routers_by_class["across_nodes"] == {"packets": 1, "events": 2, "bytes": size}
    assert rs[1].counters.from_routers_by_class["across_nodes"]["packets"] == 0
    assert rs[0].deliver(local) == {0: [frame]}
