"""Wall time of e-prop training batches on ``ray`` (the keyword network, 12 + 1 core actors), for A/B
comparisons of two checkouts, and for the cost of the rounds alone:

    PYTHONPATH=/path/to/A python bench/bench_eprop_ray.py [--batch 32] [--batches 8]
    PYTHONPATH=/path/to/B python bench/bench_eprop_ray.py ...
    python bench/bench_eprop_ray.py --hidden 12 --inputs 1 [--backend local]

``--hidden 12 --inputs 1`` keeps the 12 + 1 cores, the router and every per-step round but gives
each hidden core one neuron with one input: the time per batch is then the floor that the
messaging and the per-step Python work of 13 cores set, whatever the numerics cost.

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
    ap.add_argument("--backend", default="ray", choices=("ray", "local"), help="backend (default ray)")
    ap.add_argument("--hidden", type=int, default=120,
                    help="recurrent neurons, split over 12 cores (default 120, the keyword network)")
    ap.add_argument("--inputs", type=int, default=80, help="analog inputs (default 80)")
    args = ap.parse_args()
    checkout = Path(spinnray.__file__).resolve().parent.parent
    sys.path.insert(0, str(checkout / "bench"))
    os.chdir(tempfile.gettempdir())
    import bench_eprop
    from spinnray.backends import ensure_ray

    if args.hidden < 12:
        sys.exit(f"--hidden {args.hidden}: expected at least 12 (one neuron per hidden core)")
    if args.backend == "ray":
        ensure_ray(None, num_cpus=2)
    if (args.hidden, args.inputs) == (120, bench_eprop.N_IN):
        tr = bench_eprop.trainer(args.backend, args.batch, sram=1 << 24)
        x, y = bench_eprop.data(100, args.batch, seed=1)
    else:
        from spinnray.config import MachineConfig
        from trainers import EPropConfig, RecurrentALIFConfig, eprop_net, eprop_trainer

        net = eprop_net(RecurrentALIFConfig(hidden=args.hidden, w_in_scale=4.0, w_out_scale=10.0),
                        args.inputs, bench_eprop.N_OUT, seed=0)
        tr = eprop_trainer(net, EPropConfig(batch_size=args.batch), backend=args.backend,
                           hidden_cores=12, machine=MachineConfig(dtype="float32", sram_per_pe_bytes=1 << 24))
        rng = np.random.default_rng(1)
        x = rng.normal(0, 0.5, (100, args.batch, args.inputs)).astype(np.float32)
        y = rng.integers(0, bench_eprop.N_OUT, args.batch)
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
    print(f"{checkout}: {args.backend}, {args.inputs}-{args.hidden}-{bench_eprop.N_OUT}, batch {args.batch}, median {s:.3f} s per batch (range {min(times):.3f}-{max(times):.3f}), "
          f"real-time factor per sample {args.batch * 100 / (s * 1000):.2f}, crc32 {crc}")


if __name__ == "__main__":
    main()
