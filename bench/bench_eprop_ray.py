"""Wall time of e-prop training batches on ``ray`` (the keyword network, 12 + 1 core actors), for A/B
comparisons of two checkouts:

    PYTHONPATH=/path/to/A python bench/bench_eprop_ray.py [--batch 32] [--batches 8]
    PYTHONPATH=/path/to/B python bench/bench_eprop_ray.py ...

Uses ``trainer`` and ``data`` of ``bench_eprop.py`` from the checkout that ``spinnray`` is imported
from, runs one warm-up batch, then ``--batches`` timed ones, and prints the median seconds per
batch, the real-time factor per sample (emulated ms per wall ms, T = 100 steps of 1 ms) and the
weights' CRC32 (equal CRCs: the checkouts trained identically).  The working directory is moved to
a temporary one first: Ray puts the driver's directory on its workers' path, which would otherwise
import the ``spinnray`` of the current directory instead of the one under test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import spinnray


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32, help="samples per batch (default 32)")
    ap.add_argument("--batches", type=int, default=8, help="timed batches (default 8)")
    args = ap.parse_args()
    checkout = Path(spinnray.__file__).resolve().parent.parent
    sys.path.insert(0, str(checkout / "bench"))
    os.chdir(tempfile.gettempdir())
    import bench_eprop
    from spinnray.backend import ensure_ray

    ensure_ray(None, num_cpus=2)
    tr = bench_eprop.trainer("ray", args.batch, sram=1 << 24)
    x, y = bench_eprop.data(100, args.batch, seed=1)
    try:
        tr.train_batch(x, y)                       # warm-up
        times = []
        for _ in range(args.batches):
            t0 = time.perf_counter()
            tr.train_batch(x, y)
            times.append(time.perf_counter() - t0)
        crc = tr.checksum()
    finally:
        tr.close()
    s = float(np.median(times))
    print(f"{checkout}: batch {args.batch}, median {s:.3f} s per batch (range {min(times):.3f}-{max(times):.3f}), "
          f"real-time factor per sample {args.batch * 100 / (s * 1000):.2f}, crc32 {crc}")


if __name__ == "__main__":
    main()
