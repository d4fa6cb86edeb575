"""Fuzz the packet decoder with hostile frames (issue 22): only PacketError may escape.

Usage: python bench/bench_fuzz.py [--frames 100000] [--seed 0] [--legacy-giant] [--json PATH]

Builds ``--frames`` hostile frames from a seeded numpy RNG, spread over eight kinds:

* ``random``: random bytes (0-2 KB, a quarter of them starting with the 0x99 header);
* ``truncated``: a valid frame cut anywhere, sometimes with random bytes after the cut;
* ``bitflip``: one to three single-bit flips of a valid frame;
* ``splice``: a run of bytes inserted, deleted or appended;
* ``nested``: nested arrays, maps or both, 1 to 100,000 levels, at the top level or in
  place of any of the 9 items;
* ``huge_length``: str32/bin32/array32/map32/ext32 prefixes declaring up to 4 GB, n = MAX_EVENTS
  with a short body, array headers claiming more items than bytes;
* ``wrong_type``: each of the 9 items replaced by a value of another msgpack type (nil, bools,
  floats, str, bin, array, map, ext, negative and 64-bit ints, ints and bins in a larger
  encoding than msgpack.packb writes);
* ``header``: the 0x99 array header replaced by another array or map header.

The valid frames mutated hold 0 to 10,000 events, so many hostile frames are 1-100 KB.
Each frame is decoded three times with the clock (``time.perf_counter_ns``; its time is the
best of the three, the machine being shared), the 20 slowest of each kind five more times
(their time: the best of all eight), and once under ``tracemalloc`` (peak traced bytes during
that decode, above what was traced before it).  A frame that happens to stay valid must
re-encode to the same bytes.  Reported: the count of exceptions that are not PacketError
(target 0), the slowest input, and the peak memory over the frame size (target <= 4x for
frames of at least 1 KB; for smaller frames the constant).

Then three giant frames of ~48 MB (a 9-ary tree of nested arrays 9 levels deep, the shape
that took the old decoder 17 s and 3.5 GB; 48 M levels of one-item arrays; the tree in the keys
field), and decode of valid frames (10, 100, 10,000 events), timed against ``legacy_decode``:
a copy of the decoder before issue 22 (``msgpack.unpackb`` first), kept here for comparison
only.  The same hostile frames (those under 1 MB) also go through the legacy decoder, to show
what it let escape.  ``--legacy-giant`` also runs the legacy decoder on the 48 MB tree
(~17 s, ~3.5 GB).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import struct
import sys
import time
import tracemalloc
from collections import Counter, defaultdict
from pathlib import Path

import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spinnray.errors import PacketError  # noqa: E402
from spinnray.machine.packet import (  # noqa: E402
    BATCH_DTYPE, KEY_DTYPE, MAX_EVENTS, MAX_FRAME_BYTES, OFFSET_DTYPE, PAYLOAD_DTYPE, VERSION, Kind, Packet,
    decode, encode, encode_packet,
)

# --------------------------------------------------------------------- legacy decoder
# The decoder as it was before issue 22 (commit 9954faf), for comparison only.

_U16, _U32, _N_ITEMS = 1 << 16, 1 << 32, 9
_LEGACY_LIMITS = dict(max_bin_len=MAX_EVENTS * KEY_DTYPE.itemsize, max_str_len=64, max_array_len=_N_ITEMS,
                      max_map_len=_N_ITEMS, max_ext_len=16)
_KINDS = frozenset(k.value for k in Kind)
_KIND_NAMES = ", ".join(f"{k.name}={k.value}" for k in Kind)
_KIND_OF = tuple(Kind(v) for v in range(len(Kind)))
_BYTES_BELOW = tuple(bytes(range(k)) for k in range(257))


def _legacy_u16_below(data: bytes, limit: int) -> bool:
    if not 0 < limit <= 256:
        return False
    return data[1::2].count(0) == len(data) // 2 and not data[0::2].translate(None, _BYTES_BELOW[limit])


def _legacy_field_int(name, value, hi):
    if type(value) is not int:
        raise PacketError(f"{name} must be an int, got {type(value).__name__} {value!r:.40}")
    if not 0 <= value < hi:
        raise PacketError(f"{name} must be in [0, {hi}), got {value}")
    return value


def _legacy_field_bin(name, value, lengths):
    if type(value) is not bytes:
        raise PacketError(f"{name} must be bin, got {type(value).__name__} {value!r:.40}")
    if len(value) not in lengths:
        raise PacketError(f"{name} must be {' or '.join(str(x) for x in lengths)} bytes long, got {len(value)}")
    return value


def _legacy_check_fields(items):
    version, kind, src, step, n, keys, offsets, batch, payload = items
    if type(version) is not int or version != VERSION:
        raise PacketError(f"version must be {VERSION}, got {version!r:.40}")
    if type(kind) is not int or kind not in _KINDS:
        raise PacketError(f"kind must be one of {_KIND_NAMES}, got {kind!r:.40}")
    _legacy_field_int("src", src, _U32)
    _legacy_field_int("step", step, _U32)
    n = _legacy_field_int("n", n, MAX_EVENTS + 1)
    _legacy_field_bin("keys", keys, (n * 4,))
    _legacy_field_bin("offsets", offsets, (n * 2,))
    _legacy_field_bin("batch", batch, (0, n * 2))
    _legacy_field_bin("payload", payload, (0,) if kind == Kind.SPIKE else (n * 4,))


def legacy_decode(frame, *, max_offset=None, n_batch=None) -> Packet:
    """packet.decode before issue 22: msgpack.unpackb, then the field checks."""
    if isinstance(frame, memoryview):
        if not frame.c_contiguous:
            raise PacketError("frame must be a contiguous buffer, got a non-contiguous memoryview")
        frame = frame.cast("B")
    elif not isinstance(frame, (bytes, bytearray)):
        raise PacketError(f"frame must be bytes-like, got {type(frame).__name__}")
    if len(frame) > MAX_FRAME_BYTES:
        raise PacketError(f"frame must be at most MAX_FRAME_BYTES={MAX_FRAME_BYTES} bytes, got {len(frame)}")
    try:
        items = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True, **_LEGACY_LIMITS)
    except Exception as e:  # noqa: BLE001 - as it was
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise PacketError(f"frame is not valid msgpack: {detail}") from None
    if type(items) is not list:
        raise PacketError(f"frame must be an array of {_N_ITEMS} items, got {type(items).__name__}")
    if len(items) != _N_ITEMS:
        raise PacketError(f"frame must be an array of {_N_ITEMS} items, got {len(items)}")
    version, kind, src, step, n, keys, offsets, batch, payload = items
    if not (type(version) is int and version == VERSION and type(kind) is int and 0 <= kind < 2
            and type(src) is int and 0 <= src < _U32 and type(step) is int and 0 <= step < _U32
            and type(n) is int and 0 <= n <= MAX_EVENTS
            and type(keys) is bytes and len(keys) == 4 * n
            and type(offsets) is bytes and len(offsets) == 2 * n
            and type(batch) is bytes and (not batch or len(batch) == 2 * n)
            and type(payload) is bytes and len(payload) == 4 * n * kind):
        _legacy_check_fields(items)
        raise PacketError("frame breaks the format (the field checks found no reason: a bug in decode)")
    kind = _KIND_OF[kind]
    keys = np.frombuffer(keys, KEY_DTYPE)
    offsets_bin, offsets = offsets, np.frombuffer(offsets, OFFSET_DTYPE)
    if n and (step >= _U32 - _U16 or (max_offset is not None and not _legacy_u16_below(offsets_bin, max_offset + 1))):
        top = int(offsets.max())
        if step + top >= _U32:
            raise PacketError(f"step + offset must be < 2**32, got step {step} + offset {top}")
        if max_offset is not None and top > max_offset:
            raise PacketError(f"offsets must be <= max_offset={max_offset}, got {top}")
    if batch:
        batch_bin, batch = batch, np.frombuffer(batch, BATCH_DTYPE)
        if n_batch is not None and not _legacy_u16_below(batch_bin, n_batch) and int(batch.max()) >= n_batch:
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


# --------------------------------------------------------------------- hostile frames

SLOWEST_KEPT = 20   # frames re-timed to find the slowest input
KINDS = ("random", "truncated", "bitflip", "splice", "nested", "huge_length", "wrong_type", "header")
FIELDS = ("version", "kind", "src", "step", "n", "keys", "offsets", "batch", "payload")


def pack(x) -> bytes:
    return msgpack.packb(x, use_bin_type=True)


def valid_bases(rng) -> list[tuple[bytes, list[bytes]]]:
    """Valid frames (0 to 10,000 events, both kinds, with and without batch, ints in
    every encoding) and the packed bytes of their 9 items."""
    bases = []
    for n in (0, 1, 3, 10, 40, 100, 300, 1000, 10_000):
        for kind in Kind:
            for with_batch in (False, True):
                src = int(rng.choice([0, 5, 127, 128, 300, 70_000, 2**32 - 1]))
                step = int(rng.choice([0, 9, 200, 1000, 90_000, 2**32 - 2**16 - 1]))
                frame = encode(kind, src, step, rng.integers(0, 2**32, n, dtype=np.uint32),
                               rng.integers(0, 16, n, dtype=np.uint16),
                               batch=rng.integers(0, 32, n, dtype=np.uint16) if with_batch else None,
                               payload=rng.standard_normal(n).astype(np.float32) if kind is Kind.ERROR else None)
                items = [pack(x) for x in msgpack.unpackb(frame)]
                assert b"\x99" + b"".join(items) == frame
                bases.append((frame, items))
    return bases


def nested(rng) -> bytes:
    depth = int(rng.choice([1, 2, 10, 100, 1000, 100_000]))
    shape = int(rng.integers(3))
    leaf = bytes([int(rng.choice([0x00, 0xC0, 0x90, 0x80]))])
    if shape == 0:
        return b"\x91" * depth + leaf
    if shape == 1:
        return b"\x81\x00" * depth + leaf
    return b"\x91\x81\x00" * max(1, depth // 2) + leaf


_HUGE = [b"\xc6", b"\xdb", b"\xdd", b"\xdf", b"\xc9"]   # bin32, str32, array32, map32, ext32


def huge_item(rng) -> bytes:
    size = int(rng.choice([2**32 - 1, 2**31, MAX_EVENTS * 4, MAX_FRAME_BYTES, 10**6]))
    prefix = _HUGE[int(rng.integers(len(_HUGE)))] + struct.pack(">I", size)
    return prefix + (b"\x01" if prefix[0] == 0xC9 else b"")


def wrong_value(rng) -> bytes:
    """One item of a type or encoding no field accepts, or a value out of range."""
    choices = [pack(None), pack(True), pack(False), pack(1.5), struct.pack(">Bf", 0xCA, 2.5), pack("x" * 40),
               pack(b"\x00" * 3), pack([1, [2]]), pack({"a": 1}), pack(msgpack.ExtType(1, b"ab")), pack(-1),
               pack(-(2**63)), pack(2**64 - 1), pack(2**32), b"\xcc\x05", b"\xcd\x00\x07", b"\xce\x00\x00\x00\x01",
               b"\xd0\x01", b"\xc5\x00\x00", b"\xc6\x00\x00\x00\x00", b"\xc1", pack(MAX_EVENTS + 1), pack(2)]
    return choices[int(rng.integers(len(choices)))]


def hostile(rng, kind: str, bases) -> bytes:
    frame, items = bases[int(rng.integers(len(bases)))]
    if kind == "random":
        b = rng.bytes(int(rng.choice([int(rng.integers(0, 16)), int(rng.integers(16, 2048))])))
        return (b"\x99" + b) if rng.random() < 0.25 else b
    if kind == "truncated":
        cut = frame[:int(rng.integers(0, len(frame)))]
        return cut + (rng.bytes(int(rng.integers(1, 9))) if rng.random() < 0.3 else b"")
    if kind == "bitflip":
        b = bytearray(frame)
        for i in rng.integers(0, len(b), int(rng.integers(1, 4))):
            b[i] ^= 1 << int(rng.integers(8))
        return bytes(b)
    if kind == "splice":
        b = bytearray(frame)
        op = int(rng.integers(3))
        i = int(rng.integers(0, len(b) + 1))
        if op == 0:
            b[i:i] = rng.bytes(int(rng.integers(1, 16)))
        elif op == 1:
            del b[i:i + int(rng.integers(1, 16))]
        else:
            b += rng.bytes(int(rng.integers(1, 16)))
        return bytes(b)
    if kind == "nested":
        inner = nested(rng)
        where = int(rng.integers(10))
        if where == 9:
            return inner
        return b"\x99" + b"".join(inner if j == where else items[j] for j in range(9))
    if kind == "huge_length":
        op = int(rng.integers(4))
        if op == 0:                                      # in place of one item, the rest follows
            where = int(rng.integers(9))
            return b"\x99" + b"".join(huge_item(rng) if j == where else items[j] for j in range(9))
        if op == 1:                                      # n = MAX_EVENTS, keys declared to match, short body
            return b"\x99" + b"".join(items[:4]) + pack(MAX_EVENTS) + b"\xc6" + struct.pack(">I", 4 * MAX_EVENTS) \
                + frame[len(frame) // 2:]
        if op == 2:                                      # a top-level header claiming more items than bytes
            return b"\xdd" + struct.pack(">I", int(rng.integers(10, 2**32))) + frame[1:]
        return frame[:-1] + b"\xc6\xff\xff\xff\xff"      # a tail declaring 4 GB more
    if kind == "wrong_type":
        where = int(rng.integers(9))
        return b"\x99" + b"".join(wrong_value(rng) if j == where else items[j] for j in range(9))
    if kind == "header":
        return bytes([int(rng.choice([0x90, 0x91, 0x98, 0x9A, 0x9F, 0x80, 0x89, 0xDC]))]) + frame[1:]
    raise ValueError(kind)


def corpus(n_frames: int, seed: int):
    """``(kind, frame, kwargs)`` for ``n_frames`` hostile frames, kinds in turn."""
    rng = np.random.default_rng(seed)
    bases = valid_bases(rng)
    for i in range(n_frames):
        kind = KINDS[i % len(KINDS)]
        kwargs = dict(max_offset=int(rng.integers(0, 20)), n_batch=int(rng.integers(1, 40))) \
            if rng.random() < 0.5 else {}
        yield kind, hostile(rng, kind, bases), kwargs


# --------------------------------------------------------------------- measuring

def run_once(fn, frame, kwargs):
    """``(outcome, ns, packet or reason)``: outcome is "packet", "PacketError" or the name of
    another exception."""
    t0 = time.perf_counter_ns()
    try:
        q = fn(frame, **kwargs)
        outcome = "packet"
    except PacketError as e:
        q, outcome = e.reason, "PacketError"
        if not isinstance(e.reason, str) or not e.reason:
            outcome = "PacketError without reason"
    except BaseException as e:   # noqa: BLE001 - counting what escapes is the point
        q, outcome = None, type(e).__name__
    return outcome, time.perf_counter_ns() - t0, q


def peak_bytes(fn, frame, kwargs) -> int:
    """Peak bytes traced during one call, above what was traced before it (tracemalloc on)."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    try:
        fn(frame, **kwargs)
    except BaseException:   # noqa: BLE001
        pass
    return tracemalloc.get_traced_memory()[1] - before


def fuzz(n_frames: int, seed: int, *, legacy_max_bytes: int = 1 << 20) -> dict:
    stats = dict(frames=0, by_kind=Counter(), outcomes=Counter(), escaped=Counter(), reencode_mismatch=0,
                 accepted=0, longest_reason=0, slowest=None, legacy_escaped=Counter(), legacy_frames=0,
                 legacy_slowest=None, big_frames=0, max_ratio_big=0.0, max_ratio_big_frame=None,
                 max_peak_small=0, max_excess=0, bytes_total=0, max_ratio_16k=0.0)
    times = defaultdict(list)
    legacy_time = 0
    new_time_same = 0
    slow = defaultdict(list)        # kind -> (ns, frame, kwargs) of its slowest frames in the first pass
    for kind, frame, kwargs in corpus(n_frames, seed):
        stats["frames"] += 1
        stats["by_kind"][kind] += 1
        stats["bytes_total"] += len(frame)
        outcome, ns, q = run_once(decode, frame, kwargs)
        ns = min(ns, run_once(decode, frame, kwargs)[1], run_once(decode, frame, kwargs)[1])   # best of 3
        times[kind].append(ns)
        stats["outcomes"][outcome] += 1
        if outcome not in ("packet", "PacketError"):
            stats["escaped"][outcome] += 1
        if outcome == "packet":
            stats["accepted"] += 1
            if encode_packet(q) != frame:
                stats["reencode_mismatch"] += 1
        elif outcome == "PacketError":
            stats["longest_reason"] = max(stats["longest_reason"], len(q))
        slow[kind].append((ns, frame, kwargs))
        if len(slow[kind]) > 4 * SLOWEST_KEPT:
            slow[kind] = sorted(slow[kind], key=lambda x: -x[0])[:SLOWEST_KEPT]
        if len(frame) <= legacy_max_bytes:
            stats["legacy_frames"] += 1
            lo, lns, _ = run_once(legacy_decode, frame, kwargs)
            legacy_time += lns
            new_time_same += ns
            if lo not in ("packet", "PacketError"):
                stats["legacy_escaped"][lo] += 1
            if stats["legacy_slowest"] is None or lns > stats["legacy_slowest"]["ns"]:
                stats["legacy_slowest"] = dict(kind=kind, ns=lns, bytes=len(frame), head=frame[:12].hex(" "))
    # The machine is shared: re-time the slowest frames of each kind (best of 5) so that a
    # preempted call does not pass for the slowest input.
    stats["slowest_first_pass_ns"] = max(x[0] for v in slow.values() for x in v)
    retimed = {}
    for kind, v in slow.items():
        retimed[kind] = []
        for ns, frame, kwargs in sorted(v, key=lambda x: -x[0])[:SLOWEST_KEPT]:
            best = min([ns] + [run_once(decode, frame, kwargs)[1] for _ in range(5)])
            retimed[kind].append(dict(kind=kind, ns=best, first_ns=ns, bytes=len(frame), head=frame[:12].hex(" ")))
    stats["slowest"] = max((r for v in retimed.values() for r in v), key=lambda r: r["ns"])
    # memory: a second pass over the same frames, tracemalloc on
    tracemalloc.start()
    for kind, frame, kwargs in corpus(n_frames, seed):
        peak = peak_bytes(decode, frame, kwargs)
        stats["max_excess"] = max(stats["max_excess"], peak - 4 * len(frame))
        if len(frame) >= 16 * 1024:
            stats["max_ratio_16k"] = max(stats["max_ratio_16k"], peak / len(frame))
        if len(frame) >= 1024:
            stats["big_frames"] += 1
            ratio = peak / len(frame)
            if ratio > stats["max_ratio_big"]:
                stats["max_ratio_big"] = ratio
                stats["max_ratio_big_frame"] = dict(kind=kind, bytes=len(frame), peak=peak)
        else:
            stats["max_peak_small"] = max(stats["max_peak_small"], peak)
    tracemalloc.stop()
    stats["per_kind"] = {k: dict(frames=len(v), median_us=statistics.median(v) / 1e3,
                                 max_us=max(r["ns"] for r in retimed[k]) / 1e3,
                                 slowest_bytes=max(retimed[k], key=lambda r: r["ns"])["bytes"],
                                 first_pass_max_us=max(v) / 1e3)
                         for k, v in times.items()}
    stats["legacy_total_s"] = legacy_time / 1e9
    stats["new_total_same_s"] = new_time_same / 1e9
    return stats


def giant_frames() -> dict[str, bytes]:
    """~48 MB hostile frames (under MAX_FRAME_BYTES, so the size check does not stop them)."""
    def tree(depth):       # fixarrays of 9 fixarrays of 9 ... of empty arrays: (9**(depth+1) - 1) / 8 bytes
        node = b"\x90"
        for _ in range(depth):
            node = b"\x99" + node * 9
        return node
    head = pack([1, 0, 3, 7, 2])[1:]                  # version, kind, src, step, n
    frames = {
        "9-ary tree of arrays, 9 levels": tree(8),
        "one-item arrays, 48 M levels": b"\x91" * 48_000_000 + b"\xc0",
        "9-ary tree in the keys field": b"\x99" + head + tree(8) + b"\xc4\x00" * 3,
    }
    for name, f in frames.items():
        assert len(f) <= MAX_FRAME_BYTES, (name, len(f))
    return frames


def measure_giant(fn, frame) -> tuple[str, float, int]:
    tracemalloc.start()
    try:
        outcome, ns, _ = run_once(fn, frame, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return outcome, ns / 1e9, peak


def _legacy_giant_child(conn) -> None:
    import resource

    frame = giant_frames()["9-ary tree in the keys field"]
    with open("/proc/self/statm") as f:
        rss0 = int(f.read().split()[1]) * resource.getpagesize()
    outcome, ns, _ = run_once(legacy_decode, frame, {})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    conn.send((outcome, ns / 1e9, peak))


def measure_legacy_giant() -> tuple[str, float, int]:
    """The legacy decoder on the 48 MB tree, in a child process (its memory is returned to the
    system when the child ends); the peak is the child's peak RSS above its RSS before decoding
    (tracemalloc would itself need gigabytes to trace 43 M lists)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_legacy_giant_child, args=(child,))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def valid_speed(repeats: int = 15) -> list[dict]:
    """Time of decode and legacy_decode of valid frames, interleaved in one run: the best
    (least disturbed by other work on the machine) and the median of ``repeats``."""
    rng = np.random.default_rng(1)
    rows = []
    for n in (10, 100, 10_000):
        for kind in Kind:
            frame = encode(kind, 3, 1000, rng.integers(0, 2**32, n, dtype=np.uint32),
                           rng.integers(0, 16, n, dtype=np.uint16), batch=rng.integers(0, 8, n, dtype=np.uint16),
                           payload=rng.standard_normal(n).astype(np.float32) if kind is Kind.ERROR else None)
            for kwargs in ({}, dict(max_offset=15, n_batch=8)):
                number = max(20, 50_000 // max(n, 10))
                t = {"legacy": [], "new": []}
                for _ in range(repeats):
                    for name, fn in (("legacy", legacy_decode), ("new", decode)):
                        t0 = time.perf_counter()
                        for _ in range(number):
                            fn(frame, **kwargs)
                        t[name].append((time.perf_counter() - t0) / number * 1e6)
                assert encode_packet(decode(frame, **kwargs)) == frame
                rows.append(dict(events=n, kind=kind.name, bytes=len(frame), checks=bool(kwargs),
                                 legacy_us=min(t["legacy"]), new_us=min(t["new"]),
                                 legacy_median_us=statistics.median(t["legacy"]),
                                 new_median_us=statistics.median(t["new"])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--legacy-giant", action="store_true",
                        help="also run the legacy decoder on the 48 MB tree (~17 s, ~3.5 GB)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    t_start = time.perf_counter()
    s = fuzz(args.frames, args.seed)
    slow, lslow = s["slowest"], s["legacy_slowest"]
    print(f"## Fuzz: {s['frames']} hostile frames, seed {args.seed}, {s['bytes_total'] / 1e6:.1f} MB in all")
    print()
    print("| kind | frames | median us | max us | its bytes | first-pass max us |")
    print("|---|---:|---:|---:|---:|---:|")
    for k in KINDS:
        r = s["per_kind"][k]
        print(f"| {k} | {r['frames']} | {r['median_us']:.1f} | {r['max_us']:.1f} | {r['slowest_bytes']} | "
              f"{r['first_pass_max_us']:.0f} |")
    print()
    print("| figure | value | target |")
    print("|---|---|---|")
    print(f"| exceptions other than PacketError | **{sum(s['escaped'].values())}** {dict(s['escaped'])} | 0 |")
    print(f"| decoded to a packet (still valid) | {s['accepted']}, re-encoding differently: "
          f"{s['reencode_mismatch']} | mismatches 0 |")
    print(f"| longest reason | {s['longest_reason']} characters | short |")
    print(f"| slowest input | {slow['kind']}, {slow['bytes']} bytes, "
          f"{slow['ns'] / 1e3:.0f} us (starts {slow['head']}); first pass max {s['slowest_first_pass_ns'] / 1e3:.0f} us "
          f"| - |")
    br = s["max_ratio_big_frame"]
    print(f"| peak memory / frame size, frames >= 1 KB ({s['big_frames']}) | **{s['max_ratio_big']:.2f}x** "
          f"({br['kind']}, {br['bytes']} bytes, peak {br['peak']} B) | <= 4x |")
    print(f"| peak memory / frame size, frames >= 16 KB | {s['max_ratio_16k']:.3f}x | <= 4x |")
    print(f"| peak memory, frames < 1 KB ({s['frames'] - s['big_frames']}) | {s['max_peak_small']} bytes | constant |")
    print(f"| max over all frames of peak - 4 x size | {s['max_excess']} bytes | <= 64 KB |")
    print(f"| legacy decoder, same frames (<= 1 MB: {s['legacy_frames']}): non-PacketError | "
          f"{sum(s['legacy_escaped'].values())} {dict(s['legacy_escaped'])} | - |")
    print(f"| legacy decoder: slowest input | {lslow['kind']}, {lslow['bytes']} bytes, {lslow['ns'] / 1e3:.0f} us "
          f"(starts {lslow['head']}) | - |")
    print(f"| total decode time, same frames: new / legacy | {s['new_total_same_s']:.2f} s / "
          f"{s['legacy_total_s']:.2f} s | - |")
    print()

    giants = []
    print("## Giant hostile frames (~48 MB)")
    print()
    print("| frame | bytes | decoder | outcome | seconds | peak MB | peak / size |")
    print("|---|---:|---|---|---:|---:|---:|")
    for name, frame in giant_frames().items():
        outcome, secs, peak = measure_giant(decode, frame)
        giants.append(dict(frame=name, bytes=len(frame), decoder="new", outcome=outcome, seconds=secs, peak=peak))
        print(f"| {name} | {len(frame)} | new | {outcome} | {secs:.5f} | {peak / 1e6:.3f} (traced) | "
              f"{peak / len(frame):.5f} |")
        if args.legacy_giant and name == "9-ary tree in the keys field":
            outcome, secs, peak = measure_legacy_giant()
            giants.append(dict(frame=name, bytes=len(frame), decoder="legacy", outcome=outcome, seconds=secs,
                               peak=peak))
            print(f"| {name} | {len(frame)} | legacy | {outcome} | {secs:.2f} | {peak / 1e6:.0f} (RSS) | "
                  f"{peak / len(frame):.1f} |")
        del frame
    print()

    rows = valid_speed()
    print("## Decode of valid frames, legacy (msgpack.unpackb) vs new, same run, interleaved")
    print()
    print("| events | kind | bytes | max_offset/n_batch | legacy us best (median) | new us best (median) "
          "| new / legacy (best) |")
    print("|---:|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['events']} | {r['kind']} | {r['bytes']} | {'yes' if r['checks'] else 'no'} | "
              f"{r['legacy_us']:.2f} ({r['legacy_median_us']:.2f}) | {r['new_us']:.2f} ({r['new_median_us']:.2f}) "
              f"| {r['new_us'] / r['legacy_us']:.2f} |")
    print()
    print(f"(total {time.perf_counter() - t_start:.0f} s)")

    if args.json:
        meta = dict(python=platform.python_version(), numpy=np.__version__,
                    msgpack=".".join(map(str, msgpack.version)), frames=args.frames, seed=args.seed)
        out = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in s.items()}
        args.json.write_text(json.dumps(dict(meta=meta, fuzz=out, giant=giants, valid=rows), indent=2) + "\n")


if __name__ == "__main__":
    main()
