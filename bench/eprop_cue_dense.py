"""Tuning proxy for ``eprop_cue``: the same ALIF network and e-prop on one process, with a choice of loss.

    python bench/eprop_cue_dense.py [--trials 1600] [--seeds 0 1 2] [--loss window per_step]
        [--w-rec-scale 1] [--test 512] [--json out.json]

The equations are those of :mod:`spinnray.rules.eprop` (delays 1, no refractory period, symmetric feedback),
written here batch-vectorised in float32 with no cores, routers or budget, so that variants the cores do not
offer yet can be tried in minutes:

- ``window``: the scenario's loss, cross-entropy of the readout averaged over the recall window; one learning
  signal per sample, ``L_j = sum_k W_out[j,k] err_k``, times the window's sum of the filtered traces.
- ``per_step``: NEST's and Bellec et al.'s loss, the cross-entropy at every recall step (averaged over the
  window); a learning signal per step, ``L_j[t]``, times that step's filtered trace ``ebar[t]``.

Trials come from spinnray's cue generator (Bellec et al.'s, ``p_group`` 0.3), fresh for every batch of 32,
as the scenario's ``data.resample`` draws them; the test trials are test seed 2's (the scenario's). Initial
weights follow the scenario's distributions (not its exact draws). With ``--loss window`` this is the
scenario's learning rule up to float32 summation order; the check that it is (``--check``) runs one batch
of a tiny network against the float64 reference of the tests (``tests/oracle/eprop_reference.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from spinnray.data.cue import CueSplit, cue_trials  # noqa: E402


def params(hidden=100, w_in_scale=25.0, w_rec_scale=1.0, w_out_scale=20.0):
    """The scenario's network (conf/scenario/eprop_cue.yaml) and Adam."""
    return dict(n_in=40, hidden=hidden, n_out=2, dt=1.0, tau_m=20.0, tau_a=2000.0, tau_out=20.0, beta=35.0,
                v_th=0.6, gamma=0.3, w_in_scale=w_in_scale, w_rec_scale=w_rec_scale, w_out_scale=w_out_scale,
                lr=0.005, b1=0.9, b2=0.999, eps=1e-5)


def init_weights(p, rng):
    n_in, n_h, n_out = p["n_in"], p["hidden"], p["n_out"]
    w_in = rng.normal(0, p["w_in_scale"] / np.sqrt(n_in), (n_in, n_h))
    w_rec = rng.normal(0, p["w_rec_scale"] / np.sqrt(n_h), (n_h, n_h))
    np.fill_diagonal(w_rec, 0.0)
    w_out = rng.normal(0, p["w_out_scale"] / np.sqrt(n_h), (n_h, n_out))
    return [w.astype(np.float64) for w in (w_in, w_rec, w_out)]


def run_batch(p, ws, x, labels, window, loss, dtype=np.float32, grads=True):
    """Forward and e-prop gradients of one batch ``x`` (T, B, n_in): (grads, mean loss, predictions);
    ``grads`` False: the forward pass only (grads None)."""
    w_in, w_rec, w_out = (w.astype(dtype) for w in ws)
    T, B, n_in = x.shape
    n_h, n_out = w_out.shape
    al, rho, ka = (np.exp(-p["dt"] / p[k]) for k in ("tau_m", "tau_a", "tau_out"))
    beta, v_th, gam = p["beta"], p["v_th"], p["gamma"]
    v, a, z = (np.zeros((B, n_h), dtype) for _ in range(3))
    y = np.zeros((B, n_out), dtype)
    ev = np.zeros((B, n_in + n_h), dtype)                    # eps_v of the pre neurons (input, recurrent)
    ea = np.zeros((B, n_in + n_h, n_h), dtype)               # eps_a
    e_prev = np.zeros((B, n_in + n_h, n_h), dtype)           # e[t-1]
    ebar = np.zeros((B, n_in + n_h, n_h), dtype)
    zbar = np.zeros((B, n_h), dtype)                         # readout-filtered z[t-1]
    g = np.zeros((n_in + n_h, n_h))
    g_out = np.zeros((n_h, n_out))
    ysum = np.zeros((B, n_out), dtype)
    ebar_sum = np.zeros_like(ebar) if loss == "window" else None
    zbar_sum = np.zeros((B, n_h), dtype)
    onehot = np.eye(n_out, dtype=dtype)[labels]
    fb = w_out                                               # symmetric feedback
    t0, losses = T - window, []
    for t in range(T):
        if not grads:
            y = ka * y + (1 - ka) * (z @ w_out)
            a = rho * a + (1 - rho) * z
            thr = v_th + beta * a
            v = al * v + (1 - al) * (x[t] @ w_in + z @ w_rec) - z * thr
            z = (v > thr).astype(dtype)
            if t >= t0:
                ysum += y
            continue
        # e[t-1] = psi[t-1] (eps_v[t-1] - beta eps_a[t-1]); eps_a[t] = rho eps_a[t-1] + (1 - rho) e[t-1]
        ea *= rho
        ea += (1 - rho) * e_prev
        ebar *= ka
        ebar += (1 - ka) * e_prev                            # out_delay 1: ebar[t] takes e[t-1]
        zbar *= ka
        zbar += (1 - ka) * z                                  # z[t-1]
        y = ka * y + (1 - ka) * (z @ w_out)
        pre = np.concatenate([x[t], z], axis=1)              # x[t], z[t-1] (rec_delay 1)
        ev *= al
        ev += (1 - al) * pre
        a = rho * a + (1 - rho) * z
        thr = v_th + beta * a
        v = al * v + (1 - al) * (pre[:, :n_in] @ w_in + pre[:, n_in:] @ w_rec) - z * thr
        z = (v > thr).astype(dtype)
        psi = gam / v_th * np.maximum(0.0, 1.0 - np.abs((v - thr) / v_th)).astype(dtype)
        e_prev = psi[:, None, :] * (ev[:, :, None] - beta * ea)
        if t >= t0:
            ysum += y
            if loss == "window":
                ebar_sum += ebar
                zbar_sum += zbar
            else:
                q = np.exp(y - y.max(axis=1, keepdims=True))
                q /= q.sum(axis=1, keepdims=True)
                losses.append(-np.log(q[np.arange(B), labels] + 1e-30))
                err = (q - onehot) / (window * B)             # per step, averaged over the window and batch
                sig = err @ fb.T                              # L[t] (B, n_h)
                g += np.einsum("bj,bij->ij", sig.astype(np.float64), ebar.astype(np.float64))
                g_out += zbar.astype(np.float64).T @ err.astype(np.float64)
    logits = ysum / window
    if not grads:
        return None, None, np.argmax(logits, axis=1)
    if loss == "window":
        q = np.exp(logits - logits.max(axis=1, keepdims=True))
        q /= q.sum(axis=1, keepdims=True)
        loss_v = float(np.mean(-np.log(q[np.arange(B), labels] + 1e-30)))
        err = (q - onehot) / (window * B)
        sig = err @ fb.T
        g = np.einsum("bj,bij->ij", sig.astype(np.float64), ebar_sum.astype(np.float64))
        g_out = zbar_sum.astype(np.float64).T @ err.astype(np.float64)
    else:
        loss_v = float(np.mean(losses))
    g_rec = g[n_in:]
    np.fill_diagonal(g_rec, 0.0)
    return [g[:n_in], g_rec, g_out], loss_v, np.argmax(logits, axis=1)


class Adam:
    def __init__(self, p, ws):
        self.p, self.t = p, 0
        self.m = [np.zeros_like(w) for w in ws]
        self.v = [np.zeros_like(w) for w in ws]

    def step(self, ws, gs):
        p = self.p
        self.t += 1
        for w, g, m, v in zip(ws, gs, self.m, self.v):
            m[:] = p["b1"] * m + (1 - p["b1"]) * g
            v[:] = p["b2"] * v + (1 - p["b2"]) * g * g
            mh, vh = m / (1 - p["b1"] ** self.t), v / (1 - p["b2"] ** self.t)
            w -= p["lr"] * mh / (np.sqrt(vh) + p["eps"])


def train(p, seed, trials, loss, test, batch=32, log=print):
    rng = np.random.default_rng(seed)
    ws = init_weights(p, rng)
    adam = Adam(p, ws)
    tr = cue_trials(seed, p_group=0.3)
    window = tr.layout.steps - tr.layout.recall_start
    curve = []
    for k in range(trials // batch):
        split = CueSplit(cue_trials(seed * 1_000_003 + k + 1, p_group=0.3), batch)
        x, yl = split.batch(np.arange(batch)), split.labels
        gs, lv, pred = run_batch(p, ws, x, yl, window, loss)
        adam.step(ws, gs)
        curve.append((lv, float(np.mean(pred == yl))))
        if (k + 1) % 10 == 0:
            last = curve[-10:]
            log(f"seed {seed} {loss}: trials {(k + 1) * batch}: loss {np.mean([c[0] for c in last]):.4f} "
                f"acc {np.mean([c[1] for c in last]):.3f}")
    ts = CueSplit(cue_trials(2 + 10_000, p_group=0.3), test)
    correct = 0
    for lo in range(0, test, 64):
        idx = np.arange(lo, min(test, lo + 64))
        _, _, pred = run_batch(p, ws, ts.batch(idx), ts.labels[idx], window, "window", grads=False)
        correct += int(np.sum(pred == ts.labels[idx]))
    return {"seed": seed, "loss": loss, "trials": trials, "test_accuracy": correct / test, "curve": curve}


def check() -> None:
    """One batch of a tiny network, window loss: these gradients against the tests' float64 reference."""
    sys.path.insert(0, str(REPO / "tests"))
    from oracle.eprop_reference import eprop
    p = params(hidden=6, w_rec_scale=3.0)
    p.update(n_in=5)
    rng = np.random.default_rng(3)
    ws = init_weights(p, rng)
    T, B, window = 30, 3, 8
    x = (rng.random((T, B, 5)) < 0.2).astype(np.float64)
    labels = np.array([0, 1, 1])
    gs, _, _ = run_batch(p, ws, x, labels, window, "window", dtype=np.float64)
    ref = {"tau_m_ms": 20.0, "tau_a_ms": 2000.0, "tau_out_ms": 20.0, "dt_ms": 1.0, "beta": 35.0,
           "v_th": 0.6, "surrogate": "triangle", "gamma": 0.3, "loss_window": window}
    want, _, _ = eprop(ref, *ws, x, labels)
    for name, a, b in zip(("w_in", "w_rec", "w_out"), gs, (want["w_in"], want["w_rec"], want["w_out"])):
        rel = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)
        print(f"{name}: max relative difference {rel:.2e}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--loss", nargs="+", default=["window", "per_step"], choices=["window", "per_step"])
    ap.add_argument("--w-rec-scale", type=float, default=1.0)
    ap.add_argument("--test", type=int, default=512)
    ap.add_argument("--json")
    ap.add_argument("--check", action="store_true", help="compare one tiny batch with the tests' reference")
    args = ap.parse_args(argv)
    if args.check:
        check()
        return
    p = params(w_rec_scale=args.w_rec_scale)
    rows = []
    for seed in args.seeds:
        for loss in args.loss:
            t = time.perf_counter()
            r = train(p, seed, args.trials, loss, args.test, log=lambda s: print(s, flush=True))
            r["wall_s"] = time.perf_counter() - t
            rows.append(r)
            print(f"== seed {seed} {loss}: test {r['test_accuracy']:.3f} ({r['wall_s']:.0f} s)", flush=True)
    print("\n| loss | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    for loss in args.loss:
        acc = [r["test_accuracy"] for r in rows if r["loss"] == loss]
        print(f"| {loss} | " + " | ".join(f"{100 * a:.1f} %" for a in acc) + f" | {100 * np.mean(acc):.1f} % |")
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "params": p, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
