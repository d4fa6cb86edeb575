"""CPU time of one e-prop training step (batch 32, ``local`` backend) on the two scenario networks.

    python bench/bench_eprop_step.py [--repeats N]                   # this checkout
    PYTHONPATH=/path/to/other/checkout python bench/bench_eprop_step.py   # another one, for A/B

(the other checkout must have the 0.2 layout: the trainer is built by bench/trainers.py from
the rule registry and ``Trainer``; for older ones run their own bench/bench_eprop_step.py, which
prints the same CRC32s).

Measures ``time.process_time()`` (CPU seconds of this process, less sensitive than wall time
to other jobs on a shared machine) and wall time per ``train_batch`` of 32 samples, after one
warm-up batch, on

* ``kws``: the keyword network of ``eprop_kws`` (80 analog inputs -> 120 ALIF on 12 cores -> 12),
  T = 100, random dense input;
* ``cue``: the network of ``eprop_cue`` (40 spiking inputs -> 100 ALIF on 4 cores -> 2),
  T = 2250, cue-accumulation trials.

It prints the weights' CRC32 after the timed batches, so two checkouts that should train
identically can be compared bit for bit.  Run two checkouts alternately (A B A B) in one session
and compare ratios: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import spinnray
from spinnray.config import MachineConfig
from trainers import EPropConfig, RecurrentALIFConfig, eprop_net, eprop_trainer


def _case(name: str):
    if name == "kws":
        net = eprop_net(RecurrentALIFConfig(w_in_scale=4.0, w_out_scale=10.0), 80, 12, seed=0)
        learn = EPropConfig(batch_size=32)
        rng = np.random.default_rng(0)
        x = rng.normal(0, 0.5, (100, 32, 80)).astype(np.float32)
        return net, learn, 12, x, rng.integers(0, 12, 32)
    from spinnray.data.cue import cue_accumulation

    net = eprop_net(RecurrentALIFConfig(hidden=100, tau_mem_ms=20.0, tau_adapt_ms=2000.0, beta=35.0,
                                        v_th=0.6, tau_out_ms=20.0, w_in_scale=25.0, w_out_scale=20.0),
                    40, 2, seed=0)
    learn = EPropConfig(batch_size=32, lr=0.005, surrogate="triangle", gamma=0.3, window_steps=150)
    x, y = cue_accumulation(32, 0, total_ms=2250.0)
    return net, learn, 4, np.ascontiguousarray(x.transpose(1, 0, 2)), y


def measure(name: str, repeats: int) -> dict:
    net, learn, cores, x, y = _case(name)
    tr = eprop_trainer(net, learn, machine=MachineConfig(sram_per_pe_bytes=1 << 24), hidden_cores=cores,
                       backend="local")
    try:
        tr.train_batch(x, y)                       # warm-up
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            tr.train_batch(x, y)
        wall, cpu = (time.perf_counter() - w0) / repeats, (time.process_time() - c0) / repeats
        return {"case": name, "cpu_s_per_batch": round(cpu, 4), "wall_s_per_batch": round(wall, 4),
                "crc32": tr.checksum()}
    finally:
        tr.close()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed batches per case (default 3)")
    ap.add_argument("--cases", default="kws,cue", help="comma-separated: kws, cue")
    args = ap.parse_args(argv)
    print(f"spinnray from {spinnray.__file__}")
    for name in args.cases.split(","):
        print(measure(name.strip(), args.repeats), flush=True)


if __name__ == "__main__":
    main()
