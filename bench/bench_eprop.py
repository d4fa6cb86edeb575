"""Model-parallel e-prop: memory against T, real-time factor and training throughput.

    python bench/bench_eprop.py [--repeats 3] [--samples 4] [--json PATH]

The paper's network (Rostami et al. 2022): 80 analog inputs -> 120 recurrent
ALIF on 12 hidden cores of 10 -> 12 LI readouts on one core, float32.

1. Training memory, from the arrays the cores hold (``cores.json`` memory
   categories) at T = 100 and T = 1000, beside dense BPTT of the same network
   (``spinnray.rules.bptt.dense.training_memory_bytes`` of one layer: weights,
   gradients, Adam and the per-step activations it stores); writes ``bench/eprop_memory.png``.
2. Real-time factor (emulated ms per wall ms of training: forward, learning
   signals, Adam) on ``local`` and ``ray`` at batch 1 (online) and batch 32
   (lockstep), measured interleaved in one run (the machines are shared and
   noisy), medians of ``--repeats``.
3. Training samples/s at T = 100, batch 32, beside two BPTT baselines on CPU torch
   (one thread; optional: ``pip install torch==2.13.0 snntorch``; skipped with a
   note when missing): the same ALIF network as a hand-written torch loop
   (snnTorch has no adaptive-threshold neuron), and the nearest network snnTorch
   builds itself, 80 -> 120 recurrent LIF (``snn.RLeaky``) -> 12 leaky readouts.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time

import numpy as np

from spinnray.backends import ensure_ray
from spinnray.config import MachineConfig
from spinnray.rules.bptt.dense import ALIFNetConfig
from spinnray.rules.eprop import TRAINING_STATE
from trainers import EPropConfig, RecurrentALIFConfig, Trainer, eprop_net, eprop_trainer

from spinnray.rules.bptt.dense import training_memory_bytes as dense_training_memory_bytes


def training_memory_bytes(cfg, steps: int, batch: int) -> dict:
    """The dense BPTT figure: the library's count for one ALIF layer (what a dense run reports as
    ``training_memory_bytes``).  Before 0.2 this benchmark used the single-layer reference BPTT's
    count, now a test oracle; that one was 1,584 B lower at every T (no forward state, one activation
    row fewer)."""
    return dense_training_memory_bytes(cfg, 1, steps, batch)



N_IN, N_OUT = 80, 12
TORCH_ALIF = "torch BPTT B=32 (1 thread)"
SNNTORCH_LIF = "snnTorch BPTT, LIF (RLeaky) B=32 (1 thread)"


def trainer(backend: str, batch: int, sram: int = 131072) -> Trainer:
    net = eprop_net(RecurrentALIFConfig(w_in_scale=4.0, w_out_scale=10.0), N_IN, N_OUT, seed=0)
    return eprop_trainer(net, EPropConfig(batch_size=batch), backend=backend, hidden_cores=12,
                         machine=MachineConfig(dtype="float32", sram_per_pe_bytes=sram))


def data(steps: int, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.5, (steps, batch, N_IN)).astype(np.float32), rng.integers(0, N_OUT, batch)


def eprop_memory(steps: int) -> dict:
    tr = trainer("local", 1)
    try:
        tr.train_batch(*data(steps, 1))
        cores, _ = tr.sim.reports()
    finally:
        tr.close()
    by_cat: dict[str, int] = {}
    for c in cores:
        for k, v in c["memory"].items():
            by_cat[k] = by_cat.get(k, 0) + v
    state = sum(v for k, v in by_cat.items() if k in TRAINING_STATE)
    return {"training_state": state, "all": sum(by_cat.values()), "by_category": by_cat,
            "max_core": max(sum(c["memory"].values()) for c in cores)}


def snntorch_runner(batch: int):
    """BPTT of the same 80-120-12 recurrent ALIF network in torch (snnTorch-style loop, 1 thread)."""
    import torch

    torch.set_num_threads(1)
    alpha, rho, kappa = math.exp(-1 / 5.0), math.exp(-1 / 150.0), math.exp(-1 / 10.0)
    beta, v_th = 0.184, 1.6

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, h):
            ctx.save_for_backward(h)
            return (h > 0).to(h.dtype)

        @staticmethod
        def backward(ctx, g):
            (h,) = ctx.saved_tensors
            return g * 0.3 * torch.clamp(1 - h.abs(), min=0)

    g = torch.Generator().manual_seed(0)
    w_in = torch.nn.Parameter(torch.randn(N_IN, 120, generator=g) * 4 / math.sqrt(N_IN))
    w_rec = torch.nn.Parameter(torch.randn(120, 120, generator=g) / math.sqrt(120))
    w_out = torch.nn.Parameter(torch.randn(120, N_OUT, generator=g) * 10 / math.sqrt(120))
    mask = 1 - torch.eye(120)
    opt = torch.optim.Adam([w_in, w_rec, w_out], lr=0.01, eps=1e-5)

    def step(x, y):
        xt = torch.from_numpy(x)
        T, B, _ = xt.shape
        v = torch.zeros(B, 120)
        a = torch.zeros(B, 120)
        z = torch.zeros(B, 120)
        yo = torch.zeros(B, N_OUT)
        ysum = 0
        for t in range(T):
            a = rho * a + (1 - rho) * z
            thr = v_th + beta * a
            v = alpha * v + (1 - alpha) * (xt[t] @ w_in + z @ (w_rec * mask)) - (z * thr).detach()
            yo = kappa * yo + (1 - kappa) * (z @ w_out)
            z = Spike.apply((v - thr) / v_th)
            ysum = ysum + yo
        loss = torch.nn.functional.cross_entropy(ysum / T, torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def snntorch_lif_runner(batch: int):
    """BPTT of the nearest network snnTorch builds: 80 -> 120 recurrent LIF (``snn.RLeaky``, all to
    all, subtractive reset; snnTorch has no adaptive-threshold ALIF) -> 12 leaky readouts
    (``snn.Leaky`` without reset), loss on the summed readout potential, Adam, 1 thread."""
    import snntorch as snn
    import torch
    from snntorch import surrogate

    torch.set_num_threads(1)
    torch.manual_seed(0)
    alpha, kappa = math.exp(-1 / 5.0), math.exp(-1 / 10.0)
    fc_in = torch.nn.Linear(N_IN, 120, bias=False)
    rlif = snn.RLeaky(beta=alpha, linear_features=120, all_to_all=True, threshold=1.6,
                      spike_grad=surrogate.triangular(), reset_mechanism="subtract")
    fc_out = torch.nn.Linear(120, N_OUT, bias=False)
    readout = snn.Leaky(beta=kappa, reset_mechanism="none")
    params = list(fc_in.parameters()) + list(rlif.parameters()) + list(fc_out.parameters())
    opt = torch.optim.Adam(params, lr=0.01, eps=1e-5)

    def step(x, y):
        xt = torch.from_numpy(x)
        spk, mem = rlif.init_rleaky()
        mem_out = readout.init_leaky()
        ysum = 0
        for t in range(xt.shape[0]):
            spk, mem = rlif(fc_in(xt[t]), spk, mem)
            _, mem_out = readout(fc_out(spk), mem_out)
            ysum = ysum + mem_out
        loss = torch.nn.functional.cross_entropy(ysum / xt.shape[0], torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median reported)")
    ap.add_argument("--samples", type=int, default=4, help="batch-1 samples / batch-32 batches per measurement")
    ap.add_argument("--json", help="write every number to this path")
    ap.add_argument("--plot", default="bench/eprop_memory.png", help="memory-vs-T plot")
    args = ap.parse_args()
    out: dict = {"memory": {}, "rtf": {}, "throughput": {}}

    # 1. memory
    for steps in (100, 1000):
        out["memory"][f"eprop T={steps}"] = eprop_memory(steps)
        out["memory"][f"bptt T={steps}"] = training_memory_bytes(ALIFNetConfig(dtype="float32"), steps, 1)
        print(f"T={steps}: e-prop training state {out['memory'][f'eprop T={steps}']['training_state']} B, "
              f"BPTT {out['memory'][f'bptt T={steps}']['total']} B", file=sys.stderr)
    ts = [50, 100, 200, 500, 1000, 2000]
    bptt = [training_memory_bytes(ALIFNetConfig(dtype="float32"), t, 1)["total"] for t in ts]
    ep = out["memory"]["eprop T=100"]["training_state"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(ts, [b / 1024 for b in bptt], "o-", label="dense BPTT (weights, grads, Adam, activations)")
        ax.plot(ts, [ep / 1024] * len(ts), "s-", label="e-prop on 13 cores (weights, grads, Adam, traces)")
        ax.axhline(680e3 / 1024, color="grey", ls=":", label="680 KB (Rostami et al.)")
        ax.set_xscale("log")
        ax.set_xlabel("sequence length T (steps of 1 ms)")
        ax.set_ylabel("training memory (KiB, float32, batch 1)")
        ax.set_title("80-120-12 ALIF network: training memory against T")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}", file=sys.stderr)
    except ImportError:
        pass

    # 2/3. speed
    ensure_ray(None, num_cpus=2)
    runners = {}
    for backend in ("local", "ray"):
        runners[f"{backend} B=1"] = (trainer(backend, 1), 1)
        runners[f"{backend} B=32"] = (trainer(backend, 32, sram=1 << 24), 32)
    baselines = {}
    for name, make in ((TORCH_ALIF, snntorch_runner), (SNNTORCH_LIF, snntorch_lif_runner)):
        try:
            baselines[name] = make(32)
        except ImportError as e:
            print(f"{name} skipped ({e}; pip install torch==2.13.0 snntorch)", file=sys.stderr)
    inputs = {b: data(100, b, seed=1) for b in (1, 32)}
    for tr, b in runners.values():
        tr.train_batch(*inputs[b])                     # warm-up
    for base in baselines.values():
        base(*inputs[32])
    times = {k: [] for k in list(runners) + list(baselines)}
    for r in range(args.repeats):
        for k, (tr, b) in runners.items():
            t0 = time.perf_counter()
            for _ in range(args.samples):
                tr.train_batch(*inputs[b])
            times[k].append((time.perf_counter() - t0) / (args.samples * b))
            print(f"{k}: {1 / times[k][-1]:.1f} samples/s", file=sys.stderr)
        for k, base in baselines.items():
            t0 = time.perf_counter()
            for _ in range(args.samples):
                base(*inputs[32])
            times[k].append((time.perf_counter() - t0) / (args.samples * 32))
    for tr, _ in runners.values():
        tr.close()
    for k, v in times.items():
        s = float(np.median(v))
        out["throughput"][k] = 1 / s
        out["rtf"][k] = 100.0 / (s * 1000)

    print(f"### `python {' '.join(sys.argv)}`\n")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, Python {platform.python_version()}, 80-120-12 ALIF, 12 hidden "
          f"cores + 1 readout core, float32, T = 100 steps of 1 ms, {args.repeats} interleaved repeats, medians.\n")
    print("| memory (batch 1) | T = 100 | T = 1000 |")
    print("|---|---:|---:|")
    for label, key in (("e-prop training state (13 cores)", "training_state"),
                       ("e-prop all core bytes (incl. scratch, history, input buffer)", "all")):
        print(f"| {label} | {out['memory']['eprop T=100'][key]:,} B | {out['memory']['eprop T=1000'][key]:,} B |")
    print(f"| dense BPTT total | {out['memory']['bptt T=100']['total']:,} B | "
          f"{out['memory']['bptt T=1000']['total']:,} B |")
    print(f"| e-prop largest core | {out['memory']['eprop T=100']['max_core']:,} B | "
          f"{out['memory']['eprop T=1000']['max_core']:,} B |\n")
    bt, bs = out["throughput"].get(TORCH_ALIF), out["throughput"].get(SNNTORCH_LIF)
    print("| runner | train samples/s | real-time factor per sample | / torch BPTT (ALIF) | / snnTorch (LIF) |")
    print("|---|---:|---:|---:|---:|")
    for k in times:
        ratio = f"{out['throughput'][k] / bt:.2f}x" if bt else "-"
        ratio_s = f"{out['throughput'][k] / bs:.2f}x" if bs else "-"
        print(f"| {k} | {out['throughput'][k]:.1f} | {out['rtf'][k]:.2f} | {ratio} | {ratio_s} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
