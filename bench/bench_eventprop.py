"""Training throughput of data-parallel EventProp beside an snnTorch BPTT baseline.

    python bench/bench_eventprop.py [--repeats 3] [--batches 12] [--only-default] [--json PATH]

Measures training samples per second, interleaved in one run (the machines are
shared and noisy), for the same 5-H-3 LIF network and the same Yin-Yang
mini-batches (batch 32):

* spinnray EventProp on ``local`` (R = 1, and R = 2 layered) and on ``ray``
  (R = 1 and R = 2), with ``parallel.schedule`` ``layered`` (the scenario's
  default: one exchange round per layer) and ``lockstep`` (one per step);
* snnTorch surrogate-gradient BPTT (``snn.Synaptic`` LIF with the same decays,
  fast-sigmoid surrogate, cross-entropy on spike counts, Adam), CPU torch with
  one thread -- an optional benchmark dependency (``pip install torch==2.13.0
  snntorch``); it is skipped with a note when missing.

Three networks: the scenario's default (5-200-3, T = 160 steps of 0.25 ms,
staggered input rounding, silent-output surrogate), its previous default
(5-200-3, T = 100 steps of 0.5 ms, label bump) and the size of the issue's
baseline figure (5-120-3, T = 40 steps of 1 ms).
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
from spinnray.data import yin_yang
from spinnray.data.yinyang import YinYangConfig, encode_inputs
from trainers import EventPropConfig, FeedForwardConfig, eventprop_trainer, yinyang_net

BATCH = 32


def spinnray_runner(net_cfg, backend, replicas, learn, schedule):
    tr = eventprop_trainer(yinyang_net(net_cfg, 0), learn, machine=MachineConfig(), cores_per_population=None,
                           replicas=replicas, backend=backend, schedule=schedule)

    def step(x, y):
        tr.train_batch(x, y)

    return step, tr.close


def snntorch_runner(net_cfg):
    import snntorch as snn
    import torch
    from snntorch import surrogate

    torch.set_num_threads(1)
    a = math.exp(-net_cfg.dt_ms / net_cfg.tau_syn_ms)
    b = math.exp(-net_cfg.dt_ms / net_cfg.tau_mem_ms)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(5, net_cfg.hidden, bias=False)
            self.fc2 = torch.nn.Linear(net_cfg.hidden, 3, bias=False)
            grad = surrogate.fast_sigmoid()
            self.lif1 = snn.Synaptic(alpha=a, beta=b, threshold=1.0, spike_grad=grad, reset_mechanism="zero")
            self.lif2 = snn.Synaptic(alpha=a, beta=b, threshold=1.0, spike_grad=grad, reset_mechanism="zero")

        def forward(self, x):
            syn1, mem1 = self.lif1.reset_mem()
            syn2, mem2 = self.lif2.reset_mem()
            count = 0
            for t in range(x.shape[0]):
                spk1, syn1, mem1 = self.lif1(self.fc1(x[t]), syn1, mem1)
                spk2, syn2, mem2 = self.lif2(self.fc2(spk1), syn2, mem2)
                count = count + spk2
            return count

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        xt = torch.from_numpy(x.astype(np.float32))
        opt.zero_grad()
        loss = loss_fn(net(xt), torch.from_numpy(y))
        loss.backward()
        opt.step()

    return step, lambda: None


def measure(step, x, y, batches):
    t0 = time.perf_counter()
    for k in range(batches):
        idx = np.arange(k * BATCH, (k + 1) * BATCH) % len(y)
        step(x[:, idx], y[idx])
    return batches * BATCH / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median reported)")
    ap.add_argument("--batches", type=int, default=12, help="mini-batches of 32 per measurement")
    ap.add_argument("--json", help="write every number to this path")
    ap.add_argument("--only-default", action="store_true", help="measure the scenario's default network only")
    args = ap.parse_args()
    ensure_ray(None, num_cpus=2)
    try:
        import snntorch  # noqa: F401
        have_snntorch = True
    except ImportError:
        have_snntorch = False
        print("snnTorch not installed: baseline skipped (pip install torch==2.13.0 snntorch)", file=sys.stderr)

    old = EventPropConfig(batch_size=BATCH, bump=5e-3, silent_ms=0.0)
    configs = {"5-200-3, T=160 x 0.25 ms (default)": (FeedForwardConfig(steps=160, dt_ms=0.25, hidden=200),
                                                      YinYangConfig(stagger=0.5),
                                                      EventPropConfig(batch_size=BATCH, bump=0.0, silent_ms=20.0)),
               "5-200-3, T=100 x 0.5 ms": (FeedForwardConfig(steps=100, dt_ms=0.5, hidden=200),
                                           YinYangConfig(), old),
               "5-120-3, T=40 x 1 ms": (FeedForwardConfig(steps=40, dt_ms=1.0, hidden=120),
                                        YinYangConfig(), old)}
    if args.only_default:
        configs = dict(list(configs.items())[:1])
    xs, ys = yin_yang(BATCH * args.batches, 42)
    results = {}
    for name, (net_cfg, data_cfg, learn) in configs.items():
        x = encode_inputs(xs, data_cfg, net_cfg.steps, net_cfg.dt_ms)
        runners = {f"spinnray {be} R={r} {sched}": spinnray_runner(net_cfg, be, r, learn, sched)
                   for be, r, sched in (("local", 1, "layered"), ("local", 2, "layered"), ("ray", 1, "layered"),
                                        ("ray", 2, "layered"), ("local", 1, "lockstep"), ("ray", 1, "lockstep"),
                                        ("ray", 2, "lockstep"))}
        if have_snntorch:
            runners["snnTorch BPTT (1 thread)"] = snntorch_runner(net_cfg)
        for step, _ in runners.values():
            measure(step, x, ys, 2)                               # warm-up
        rates = {k: [] for k in runners}
        for r in range(args.repeats):
            for k, (step, _) in runners.items():
                rates[k].append(measure(step, x, ys, args.batches))
                print(f"{name} | {k}: {rates[k][-1]:.0f} samples/s", file=sys.stderr)
        for _, close in runners.values():
            close()
        results[name] = {k: float(np.median(v)) for k, v in rates.items()}

    print(f"### `python {' '.join(sys.argv)}`\n")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.python_version()}, batch {BATCH}, "
          f"{args.batches} mini-batches per measurement, {args.repeats} interleaved repeats, medians.\n")
    print("| network | runner | train samples/s | / snnTorch |")
    print("|---|---|---:|---:|")
    for name, row in results.items():
        base = row.get("snnTorch BPTT (1 thread)")
        for k, v in row.items():
            print(f"| {name} | {k} | {v:.0f} | {v / base:.2f} |" if base else f"| {name} | {k} | {v:.0f} | - |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
