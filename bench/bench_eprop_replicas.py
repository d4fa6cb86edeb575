"""Data-parallel e-prop: training throughput of a mini-batch of B on one copy in lockstep against R
copies of B / R, and the share of each training step spent in the driver's gradient reduction.

    python bench/bench_eprop_replicas.py [--batch 32] [--replicas 2 4] [--backends local ray] [--batches 5]

The keyword network (80 analog inputs -> 120 recurrent ALIF on 12 cores -> 12 LI readouts, T = 100
steps of 1 ms, float32; ``bench_eprop.trainer``'s weights and data), R copies of 12 + 1 cores.  Per
configuration: one warm-up mini-batch, then ``--batches`` timed ones; printed are the training
samples/s (median batch time), the largest core's bytes, and the reduction
(``Trainer._reduce_and_apply``: fetching every core's reduction terms, summing them on the driver,
sending the sums back with each core's Adam step) as seconds per mini-batch and as a fraction of the
training step, with its three parts.  ``--rate-reg`` turns the firing-rate regulariser on (its
summed traces double what the hidden cores send).  SRAM per core is raised to ``--sram`` for every
configuration (a lockstep batch of 32 does not fit 128 KB) so that the mappings differ only in R.
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


def measure(backend: str, batch: int, replicas: int, batches: int, sram: int, rate_reg: float) -> dict:
    import bench_eprop
    from spinnray.config import MachineConfig
    from spinnray.rules.learning import LearningCore
    from trainers import EPropConfig, RecurrentALIFConfig, eprop_net, eprop_trainer

    net = eprop_net(RecurrentALIFConfig(w_in_scale=4.0, w_out_scale=10.0), bench_eprop.N_IN, bench_eprop.N_OUT, seed=0)
    tr = eprop_trainer(net, EPropConfig(batch_size=batch, rate_reg=rate_reg), backend=backend, hidden_cores=12,
                       replicas=replicas, machine=MachineConfig(dtype="float32", sram_per_pe_bytes=sram))
    x, y = bench_eprop.data(100, batch, seed=1)
    spent = {"reduce": 0.0, "terms": 0.0, "apply": 0.0}
    call, reduce = tr.sim.call, tr._reduce_and_apply

    def timed_call(method, *args, **kwargs):          # the fetch and the apply inside the reduction
        t0 = time.perf_counter()
        try:
            return call(method, *args, **kwargs)
        finally:
            part = {LearningCore.reduction_terms: "terms", LearningCore.apply: "apply"}.get(method)
            if part is not None:
                spent[part] += time.perf_counter() - t0

    def timed_reduce():
        t0 = time.perf_counter()
        try:
            return reduce()
        finally:
            spent["reduce"] += time.perf_counter() - t0

    tr.sim.call, tr._reduce_and_apply = timed_call, timed_reduce
    try:
        tr.train_batch(x, y)                            # warm-up
        for k in spent:
            spent[k] = 0.0
        times = []
        for _ in range(batches):
            t0 = time.perf_counter()
            tr.train_batch(x, y)
            times.append(time.perf_counter() - t0)
        tr.check_replicas()
        cores, _ = tr.sim.reports()
    finally:
        tr.close()
    total = sum(times)
    return {"backend": backend, "replicas": replicas, "shard": -(-batch // replicas),
            "samples_per_s": batch / float(np.median(times)), "batch_s": float(np.median(times)),
            "reduce_s": spent["reduce"] / batches, "reduce_fraction": spent["reduce"] / total,
            "terms_s": spent["terms"] / batches, "apply_s": spent["apply"] / batches,
            "sum_s": (spent["reduce"] - spent["terms"] - spent["apply"]) / batches,
            "max_core_bytes": max(sum(c["memory"].values()) for c in cores)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32, help="mini-batch B over all copies (default 32)")
    ap.add_argument("--replicas", type=int, nargs="+", default=[2, 4], help="copies to compare with one (default 2 4)")
    ap.add_argument("--backends", nargs="+", default=["local", "ray"], choices=("local", "ray"))
    ap.add_argument("--batches", type=int, default=5, help="timed mini-batches per configuration (default 5)")
    ap.add_argument("--sram", type=int, default=1 << 24, help="bytes per PE for every configuration (default 16 MiB)")
    ap.add_argument("--rate-reg", type=float, default=0.0, help="learning.rate_reg (default 0: off)")
    args = ap.parse_args()
    checkout = Path(spinnray.__file__).resolve().parent.parent
    sys.path.insert(0, str(checkout / "bench"))
    os.chdir(tempfile.gettempdir())       # Ray puts the driver's directory on its workers' path
    if "ray" in args.backends:
        from spinnray.backends import ensure_ray
        ensure_ray(None, num_cpus=2)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {checkout}, 80-120-12 ALIF on 12 + 1 cores per copy, T = 100, "
          f"float32, B = {args.batch}, rate_reg = {args.rate_reg}, {os.cpu_count()} CPUs")
    print("| backend | copies x shard | samples/s | s per batch | / one copy | reduction s per batch "
          "(fetch + sum + apply) | reduction share | largest core |")
    print("|---|---|---|---|---|---|---|---|")
    for backend in args.backends:
        base = None
        for r in [1] + args.replicas:
            m = measure(backend, args.batch, r, args.batches, args.sram, args.rate_reg)
            base = base or m["samples_per_s"]
            parts = (f"{m['reduce_s']:.3f} ({m['terms_s']:.3f} + {m['sum_s']:.3f} + {m['apply_s']:.3f})"
                     if r > 1 else "-")
            print(f"| {backend} | {r} x {m['shard']} | {m['samples_per_s']:.1f} | {m['batch_s']:.3f} | "
                  f"{m['samples_per_s'] / base:.2f} | {parts} | {m['reduce_fraction']:.1%} | "
                  f"{m['max_core_bytes'] / 1024:.1f} KB |", flush=True)


if __name__ == "__main__":
    main()
