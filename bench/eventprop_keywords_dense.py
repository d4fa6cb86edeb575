"""Tune ``eventprop_keywords`` fast: the same network and EventProp gradient, computed by the dense
single-process reference of the tests (tests/oracle/eventprop_reference.py, equal to the cores'
gradient to 1e-6 in float64: tests/oracle/test_eventprop_recurrent.py), trained with the same Adam
on the same data.  Not the emulator: no cores, no 128 KB budget, float64 -- a proxy to pick settings,
which are then run with ``python run.py scenario=eventprop_keywords``.

    python bench/eventprop_keywords_dense.py --limit 960 --epochs 3 --reg-upper 0.001 --nu 10
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from oracle import eventprop_reference as ref          # noqa: E402
from spinnray.config import from_dict                   # noqa: E402
from spinnray.data.base import Timing, load_dataset     # noqa: E402
from spinnray.data.shd import SHDConfig                 # noqa: E402
from spinnray.rules.optim import Adam                   # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--limit", type=int, default=None, help="first N samples of each split")
    a("--epochs", type=int, default=3)
    a("--batch", type=int, default=16)
    a("--lr", type=float, default=5e-3)
    a("--lr-decay", type=float, default=0.95)
    a("--lr-scale", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("IN", "REC", "OUT"),
      help="per-projection factors on --lr (input, recurrent, readout): Adam steps by about lr whatever the "
           "weights' scale, and these weights span a 30x range of scales")
    a("--hidden", type=int, default=64)
    a("--dt", type=float, default=2.0)
    a("--tau-mem", type=float, default=20.0)
    a("--tau-syn", type=float, default=5.0)
    a("--tau-out", type=float, default=20.0)
    a("--w-in-mean", type=float, default=0.3)
    a("--w-in-std", type=float, default=0.3)
    a("--w-rec-mean", type=float, default=0.0)
    a("--w-rec-std", type=float, default=0.02)
    a("--w-out-mean", type=float, default=0.0)
    a("--w-out-std", type=float, default=0.03)
    a("--loss", default="mean_voltage", choices=("mean_voltage", "sum_voltage", "max_voltage"))
    a("--reg-upper", type=float, default=0.0)
    a("--reg-lower", type=float, default=0.0)
    a("--nu", type=float, default=0.0)
    a("--guard", type=float, default=1e-3)
    a("--seed", type=int, default=0)
    a("--eval-limit", type=int, default=None, help="samples of val / test evaluated (default: all of the split)")
    a("--json", default=None)
    args = p.parse_args(argv)

    data = load_dataset(from_dict(SHDConfig, {"name": "keyword_spikes", "limit": args.limit}),
                        Timing(args.dt), progress=False)
    rng = np.random.default_rng(args.seed)
    n_in, h, n_out = data.n_inputs, args.hidden, len(data.class_names)
    layers = [ref.Layer("inp", n_in, "source"), ref.Layer("hid", h, "lif", args.tau_mem, args.tau_syn),
              ref.Layer("out", n_out, "li", args.tau_out, args.tau_syn)]
    conns = [ref.Conn("inp", "hid", rng.normal(args.w_in_mean, args.w_in_std, (n_in, h))),
             ref.Conn("hid", "hid", rng.normal(args.w_rec_mean, args.w_rec_std, (h, h))),
             ref.Conn("hid", "out", rng.normal(args.w_out_mean, args.w_out_std, (h, n_out)))]
    adams = [Adam(c.W.shape, np.float64, args.lr * f) for c, f in zip(conns, args.lr_scale)]
    reg = (args.reg_upper, args.reg_lower, args.nu)

    def step(x, y, learn):
        recs = ref.run(layers, conns, x, args.dt)
        scale = 1.0 / len(y)
        z, loss, dv = ref.voltage(recs["out"], y, args.loss)
        inject = {"out": ref.voltage_inject(dv, args.tau_out, args.tau_syn, args.dt, scale)}
        if args.reg_upper or args.reg_lower:
            r, inject["hid"] = ref.count_regulariser(recs["hid"], *reg, scale)
            loss = loss + r
        if learn:
            grads = ref.adjoint(layers, conns, recs, args.dt, args.guard, None, inject)
            for c, opt, g in zip(conns, adams, grads):
                opt.step(c.W, g)
        counts = recs["hid"]["s"].sum(axis=0)            # (B, h)
        return loss, np.argmax(z, axis=1) == y, counts

    def evaluate(split):
        n = len(split) if args.eval_limit is None else min(args.eval_limit, len(split))
        ok, loss = 0, 0.0
        for lo in range(0, n, 64):
            idx = np.arange(lo, min(lo + 64, n))
            l, c, _ = step(split.batch(idx), split.labels[idx], False)
            ok += int(c.sum())
            loss += float(l.sum())
        return ok / n, loss / n

    history = []
    t0 = time.time()
    for epoch in range(args.epochs):
        order = rng.permutation(len(data.train))
        ok = n = 0
        losses, spikes, peak = [], [], 0
        for lo in range(0, len(order), args.batch):
            idx = order[lo:lo + args.batch]
            l, c, counts = step(data.train.batch(idx), data.train.labels[idx], True)
            ok += int(c.sum())
            n += len(idx)
            losses.append(float(l.mean()))
            spikes.append(float(counts.mean()))
            peak = max(peak, int(counts.sum(axis=1).max()))
            if not all(math.isfinite(float(np.abs(cn.W).max())) for cn in conns):
                raise SystemExit("weights not finite")
        for opt in adams:
            opt.lr *= args.lr_decay
        val = evaluate(data.val) if data.val is not None else (float("nan"), float("nan"))
        test = evaluate(data.test)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "train_acc": ok / n, "val_acc": val[0],
               "test_acc": test[0], "hidden_spikes_per_neuron": float(np.mean(spikes)),
               "max_hidden_spikes_per_sample": peak, "wall_s": round(time.time() - t0, 1)}
        history.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "history": history}, indent=1))


if __name__ == "__main__":
    main()
