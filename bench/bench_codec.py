"""Time the packet codec: encode and decode of 1e2, 1e4 and 1e5 events.

Usage: python bench/bench_codec.py [--json PATH]

Prints two markdown tables: the wire format (raw little-endian ``bin`` event
fields) per size and kind, and, side by side in the same run, the naive
alternative that packs the same event fields as msgpack lists of ints/floats.
Every time is the median over repeats, measured with ``time.perf_counter``.
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spinnray.machine.packet import VERSION, Kind, decode, encode  # noqa: E402

SIZES = (100, 10_000, 100_000)
REPEATS = 15
CALLS_PER_SIZE = 10_000  # events timed per repeat, so that small sizes loop many calls


def median_us(fn, n_events: int) -> float:
    """Median over REPEATS of the time of one call of fn, in microseconds."""
    number = max(1, CALLS_PER_SIZE // n_events)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times) * 1e6


def naive_encode(kind, src, step, keys, offsets, payload) -> bytes:
    """The same frame with event fields as msgpack lists instead of bin."""
    return msgpack.packb([VERSION, int(kind), src, step, len(keys), keys.tolist(), offsets.tolist(), [],
                          [] if payload is None else payload.tolist()], use_bin_type=True)


def naive_decode(frame: bytes):
    _, kind, _, _, _, keys, offsets, _, payload = msgpack.unpackb(frame)
    return (np.array(keys, np.uint32), np.array(offsets, np.uint16),
            np.array(payload, np.float32) if kind == Kind.ERROR else None)


def measure(n: int, kind: Kind, rng) -> dict:
    keys = rng.integers(0, 2**32, n, dtype=np.uint32)
    offsets = rng.integers(0, 16, n, dtype=np.uint16)
    payload = rng.standard_normal(n).astype(np.float32) if kind is Kind.ERROR else None
    frame = encode(kind, 3, 1000, keys, offsets, payload=payload)
    naive = naive_encode(kind, 3, 1000, keys, offsets, payload)
    row = dict(events=n, kind=kind.name, bytes=len(frame),
               encode_us=median_us(lambda: encode(kind, 3, 1000, keys, offsets, payload=payload), n),
               decode_us=median_us(lambda: decode(frame), n),
               list_bytes=len(naive),
               list_encode_us=median_us(lambda: naive_encode(kind, 3, 1000, keys, offsets, payload), n),
               list_decode_us=median_us(lambda: naive_decode(naive), n))
    row["ns_per_event"] = (row["encode_us"] + row["decode_us"]) * 1e3 / n
    row["list_ns_per_event"] = (row["list_encode_us"] + row["list_decode_us"]) * 1e3 / n
    row["speedup"] = row["list_ns_per_event"] / row["ns_per_event"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    rows = [measure(n, kind, rng) for n in SIZES for kind in Kind]

    print("| events | kind | bytes | encode us | decode us | ns/event |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['events']} | {r['kind']} | {r['bytes']} | {r['encode_us']:.1f} | "
              f"{r['decode_us']:.1f} | {r['ns_per_event']:.1f} |")
    print()
    print("Naive alternative (event fields as msgpack lists), same run; "
          "ns/event and speedup count encode + decode.")
    print()
    print("| events | kind | list bytes | list encode us | list decode us | list ns/event | bin speedup |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['events']} | {r['kind']} | {r['list_bytes']} | {r['list_encode_us']:.1f} | "
              f"{r['list_decode_us']:.1f} | {r['list_ns_per_event']:.1f} | {r['speedup']:.0f}x |")

    if args.json:
        meta = dict(python=platform.python_version(), numpy=np.__version__,
                    msgpack=".".join(map(str, msgpack.version)), repeats=REPEATS)
        args.json.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n")


if __name__ == "__main__":
    main()
