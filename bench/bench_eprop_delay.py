"""What the exchange interval K buys e-prop: the keyword network with recurrent and readout delays of
2 steps, trained at K = 2 and K = 1 on ``local`` and ``ray``, same weights, time per step.

    python bench/bench_eprop_delay.py [--samples 8] [--repeats 3] [--delay 2] [--backends local ray]

The network is scenario ``eprop_kws`` as ``run.py`` composes it (conf/: 80 analog inputs -> 120
recurrent ALIF on 12 hidden cores -> 12 LI readouts on one core, 100 steps of 1 ms, float32,
online: batch 1, every core inside the 128 KB PE) with ``network.rec_delay=D network.out_delay=D``;
the inputs are synthetic, N(0, 0.5) of the keyword features' shape (no keyword set is generated).

Every (backend, K) trainer starts from the same weights and trains the same ``--samples`` samples
(one Adam step each, after one untimed warm-up sample), interleaved sample by sample so that the
machine's noise falls on all alike; that is repeated ``--repeats`` times with fresh trainers.  It
prints the median ms per emulated step (and the real-time factor) of each, and the weights' CRC32:
equal CRCs on every trainer, or the run fails (K must not change a single bit).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import spinnray
from spinnray.backends import ensure_ray
from spinnray.config import RunConfig, from_dict
from spinnray.experiments.setup import resolve
from spinnray.experiments.trainer import Trainer
from spinnray.model.builders import DataShape

N_IN, N_OUT, STEPS = 80, 12, 100
CHECKOUT = Path(spinnray.__file__).resolve().parent.parent


def scenario(delay: int, seed: int = 0):
    """The typed run of ``eprop_kws`` with both delays set to ``delay``, and its network."""
    with initialize_config_dir(config_dir=str(CHECKOUT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["scenario=eprop_kws", f"network.rec_delay={delay}",
                                           f"network.out_delay={delay}", f"seed={seed}"])
    run = resolve(from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True)))
    net = run.builder.build(run.network, DataShape(N_IN, N_OUT, "analog"), run.config.seed)
    return run, net


def trainer(run, net, backend: str, k: int) -> Trainer:
    cfg = run.config
    return Trainer(net, run.rule, run.learning, machine=cfg.machine,
                   parallel=replace(cfg.parallel, exchange_interval=k), backend=backend, cluster=cfg.cluster)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=8, help="timed training samples per repeat (default 8)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats with fresh trainers (default 3)")
    ap.add_argument("--delay", type=int, default=2, help="recurrent and readout delay D; K = 1 .. D (default 2)")
    ap.add_argument("--backends", nargs="+", default=["local", "ray"], choices=("local", "ray"))
    args = ap.parse_args()
    # Ray puts the driver's directory on its workers' path: leave the checkout's parent out of it
    os.chdir(tempfile.gettempdir())
    run, net = scenario(args.delay)
    if run.learning.batch_size != 1:
        sys.exit(f"eprop_kws: learning.batch_size = {run.learning.batch_size}; this benchmark times online training")
    if "ray" in args.backends:
        ensure_ray(None, num_cpus=2)
    rng = np.random.default_rng(1)
    xs = rng.normal(0, 0.5, (args.samples + 1, STEPS, 1, N_IN)).astype(np.float32)
    ys = rng.integers(0, N_OUT, (args.samples + 1, 1))
    keys = [(b, k) for b in args.backends for k in sorted({1, args.delay})]
    per_step: dict[tuple, list[float]] = {key: [] for key in keys}
    crcs: dict[tuple, set[int]] = {key: set() for key in keys}
    for _ in range(args.repeats):
        trainers = {key: trainer(run, net, *key) for key in keys}
        try:
            for key, tr in trainers.items():
                tr.train_batch(xs[0], ys[0])                      # warm-up (Ray: actors, connections)
            for i in range(1, args.samples + 1):
                for key, tr in trainers.items():
                    t0 = time.perf_counter()
                    tr.train_batch(xs[i], ys[i])
                    per_step[key].append((time.perf_counter() - t0) / STEPS * 1e3)
            for key, tr in trainers.items():
                crcs[key].add(tr.checksum())
            cores, _ = next(iter(trainers.values())).sim.reports()
        finally:
            for tr in trainers.values():
                tr.close()
    largest = max(sum(c["memory"].values()) for c in cores)
    print(f"{CHECKOUT}: eprop_kws ({N_IN}-120-{N_OUT}, 12 + 1 cores, {STEPS} steps, batch 1, "
          f"{run.config.machine.dtype}), rec_delay = out_delay = {args.delay}; largest core {largest:,} B of "
          f"{run.config.machine.sram_per_pe_bytes:,}; {args.repeats} x {args.samples} timed samples")
    for key in keys:
        ms = float(np.median(per_step[key]))
        print(f"  {key[0]:5s} K={key[1]}: {ms:.3f} ms per step (IQR {np.percentile(per_step[key], 25):.3f}-"
              f"{np.percentile(per_step[key], 75):.3f}), real-time factor {run.network.dt_ms / ms:.2f}, "
              f"crc32 {sorted(crcs[key])}")
    for b in args.backends:
        if args.delay > 1:
            k1, kd = np.median(per_step[b, 1]), np.median(per_step[b, args.delay])
            print(f"  {b}: K={args.delay} takes {kd / k1:.2f}x the time of K=1 per step ({k1 / kd:.2f}x faster)")
    every = set().union(*crcs.values())
    if len(every) != 1:
        sys.exit(f"weights differ between trainers: {crcs}")
    print(f"  identical weights on every backend and K: crc32 {every.pop()}")


if __name__ == "__main__":
    main()
