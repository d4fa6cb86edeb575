"""Training memory against sequence length T: e-prop, EventProp, full BPTT, truncated local BPTT.

``python bench/bench_memory.py`` prints a markdown table and writes ``bench/memory_vs_T.png``.
Every figure is counted from arrays, none measured from the process:

* e-prop: the training state the emulated cores hold (``cores.json`` memory categories in
  ``spinnray.rules.eprop.TRAINING_STATE`` plus ``weight_accumulator``), for the paper network
  (80 inputs -> 120 recurrent ALIF on 12 cores -> 12 LI readouts), batch 1, float32; at 32 bits and
  at 4 bits (``machine.weight_bits=4``; with and without the float32 accumulator); T only changes
  how long a sample runs, so it is built once and checked equal at T = 100 and T = 1000.
* EventProp: the learning cores' memory model (``EventPropCoreSpec.memory`` of
  ``spinnray.rules.eventprop.core``: the float32 weights, gradients, Adam, masks, error keys, adjoint
  and spike records; not the forward-only neuron state, spike history and key table) of a
  feed-forward 80-120-12 LIF network (EventProp here has no recurrence), batch 1; its spike records
  grow with the spikes of a sample, estimated at ``--rate`` Hz for every neuron (input included),
  so ``spikes_per_neuron = rate x T x dt``.
* full BPTT and truncated local BPTT: ``spinnray.rules.bptt.dense.training_memory_bytes`` (weights,
  gradients, Adam, the stored activations, inputs, state and adjoints) of the same 80-120-12
  recurrent ALIF network; and, for blocks, of a two-layer 80-120-120-12 network (scenario
  ``tlbptt_kws``) at batch 32.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from spinnray.config import MachineConfig
from spinnray.machine.core import forward_memory
from spinnray.mapping import core_shape
from spinnray.model.network import Network
from spinnray.model.neurons import LIF, SpikeSource
from spinnray.rules import rule
from spinnray.rules.bptt.dense import ALIFNetConfig, training_memory_bytes
from spinnray.rules.eprop import TRAINING_STATE
from trainers import EPropConfig, EventPropConfig, RecurrentALIFConfig, eprop_net, eprop_trainer

N_IN, N_H, N_OUT = 80, 120, 12
STATE = set(TRAINING_STATE) | {"weight_accumulator"}


def eprop_state(steps: int, **machine) -> int:
    net = eprop_net(RecurrentALIFConfig(w_in_scale=4.0, w_out_scale=10.0), N_IN, N_OUT, seed=0)
    tr = eprop_trainer(net, EPropConfig(batch_size=1), backend="local", hidden_cores=12,
                       machine=MachineConfig(dtype="float32", **machine))
    try:
        rng = np.random.default_rng(0)
        tr.train_batch(rng.normal(0, 0.5, (steps, 1, N_IN)).astype(np.float32), rng.integers(0, N_OUT, 1))
        cores, _ = tr.sim.reports()
    finally:
        tr.close()
    return sum(v for c in cores for k, v in c["memory"].items() if k in STATE)


def eventprop_state(steps: int, rate_hz: float, dt_ms: float = 1.0) -> int:
    net = Network(dt_ms=dt_ms)
    net.population("input", N_IN, SpikeSource())
    net.population("hidden", N_H, LIF(tau_mem_ms=20.0, tau_syn_ms=5.0))
    net.population("output", N_OUT, LIF(tau_mem_ms=20.0, tau_syn_ms=5.0))
    net.connect("input", "hidden", np.zeros((N_IN, N_H)))
    net.connect("hidden", "output", np.zeros((N_H, N_OUT)))
    spikes = rate_hz * steps * dt_ms / 1000.0
    learning = rule("eventprop").learning(net, EventPropConfig(batch_size=1), MachineConfig(dtype="float32"))
    total = 0
    for name in ("hidden", "output"):
        pop = net[name]
        shape = core_shape(net, pop, 0, pop.size, "float32", 1, learning=learning)
        mem = replace(learning.spec(name), spikes_per_neuron=spikes).memory(shape)
        forward_only = set(forward_memory(shape)) - {"weights"}
        total += sum(v for k, v in mem.items() if k not in forward_only)
    return total


def dense(steps: int, layers: int = 1, batch: int = 1, window=None, block_size=None) -> int:
    cfg = ALIFNetConfig(n_in=N_IN, n_h=N_H, n_out=N_OUT, dtype="float32")
    return training_memory_bytes(cfg, layers, steps, batch, window=window, block_size=block_size)["total"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plot", default="bench/memory_vs_T.png", help="where the plot goes ('' = none)")
    ap.add_argument("--rate", type=float, default=20.0, help="EventProp: assumed firing rate of every neuron (Hz)")
    args = ap.parse_args()
    ts = [25, 50, 100, 200, 400, 1000, 2000]
    ep = {"e-prop, float32": eprop_state(100), "e-prop, 4-bit + float32 accumulator": eprop_state(100, weight_bits=4),
          "e-prop, 4-bit, no accumulator": eprop_state(100, weight_bits=4, accumulate=False)}
    assert ep["e-prop, float32"] == eprop_state(1000), "e-prop memory must not depend on T"
    rows = {**{k: [v] * len(ts) for k, v in ep.items()},
            f"EventProp (feed-forward LIF, {args.rate:g} Hz)": [eventprop_state(t, args.rate) for t in ts],
            "full BPTT": [dense(t) for t in ts],
            "truncated BPTT, window 10": [dense(t, window=10) for t in ts],
            "truncated BPTT, window 50": [dense(t, window=50) for t in ts]}
    two = {"2 layers, full BPTT": [dense(t, 2, 32) for t in ts],
           "2 layers, tlbptt window 50, block 2": [dense(t, 2, 32, 50, 2) for t in ts],
           "2 layers, tlbptt window 50, block 1": [dense(t, 2, 32, 50, 1) for t in ts],
           "2 layers, tlbptt window 10, block 1": [dense(t, 2, 32, 10, 1) for t in ts]}
    print("Training memory (bytes, float32), counted from the arrays each rule holds.\n")
    print("80-120-12 network, batch 1 | " + " | ".join(f"T = {t}" for t in ts))
    print("|---" * (len(ts) + 1) + "|")
    for k, v in rows.items():
        print(f"| {k} | " + " | ".join(f"{x:,}" for x in v) + " |")
    print("\n80-120-120-12 network (tlbptt_kws), batch 32 | " + " | ".join(f"T = {t}" for t in ts))
    print("|---" * (len(ts) + 1) + "|")
    for k, v in two.items():
        print(f"| {k} | " + " | ".join(f"{x:,}" for x in v) + " |")
    i = ts.index(100)
    full = two["2 layers, full BPTT"][i]
    print("\nAt T = 100, 2 layers, batch 32: " + "; ".join(
        f"{k}: {v[i]:,} B ({100 * (1 - v[i] / full):.1f} % less than full BPTT)" for k, v in two.items()
        if k != "2 layers, full BPTT"))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        for k, v in rows.items():
            axes[0].plot(ts, [b / 1024 for b in v], "o-", label=k, ms=3)
        axes[0].set_title("80-120-12 (e-prop's paper network), batch 1")
        for k, v in two.items():
            axes[1].plot(ts, [b / 1024 for b in v], "o-", label=k, ms=3)
        axes[1].set_title("80-120-120-12 recurrent ALIF, batch 32")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("T (steps of 1 ms)")
            ax.set_ylabel("training memory (KiB, float32)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"\nwrote {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
