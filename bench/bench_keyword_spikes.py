"""The spiking keyword set (``data.name=keyword_spikes``): what the front end produces, and how separable
its classes are for a trivial classifier (issue 23, part 5).

``python bench/bench_keyword_spikes.py [--root DIR] [--bins 10] [--bands 32 ...]`` generates the set if
needed (timed), prints its statistics from the manifest (channels, spikes per sample, silent channels),
and trains a multinomial logistic regression in numpy on spike counts per channel per time bin, read
through the data registry exactly as a run reads them (the SHD-layout loader, 1 ms steps summed into
``--bins`` bins of the 1 s sample, each number a separate classifier).  Features are log(1 + count), standardised with the training
split's mean and std; full-batch Adam (lr 0.01, ``--iters`` steps) on the mean cross-entropy plus
``l2 * |W|^2 / 2``; ``l2`` is chosen on the validation split from ``--l2``, and the test accuracy of that
choice is reported.  ``--analog`` adds the same classifier on the analog log-mel features of the same
clips (``data.name=keywords``, 40 bands, their 100 frames averaged into the same bins) for comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spinnray.config import from_dict
from spinnray.data.base import Timing, load_dataset
from spinnray.data.keyword_spikes import MANIFEST, audio_path, spikes_path
from spinnray.data.shd import SHDConfig
from spinnray.data.speech import load_speech_commands


def count_features(split, bins: int, batch: int = 256) -> np.ndarray:
    """log(1 + spike count) per time bin and channel, (N, bins * channels), from 1 ms rasters."""
    out = []
    for first in range(0, len(split), batch):
        x = split.batch(np.arange(first, min(first + batch, len(split))))       # (steps, b, channels) bool
        steps = x.shape[0] - x.shape[0] % bins
        c = x[:steps].reshape(bins, steps // bins, x.shape[1], x.shape[2]).sum(1, dtype=np.float32)
        out.append(np.log1p(c).transpose(1, 0, 2).reshape(x.shape[1], -1))
    return np.concatenate(out)


def analog_features(x: np.ndarray, bins: int) -> np.ndarray:
    """The 40 log-mel channels of (N, 100, 80) features averaged into ``bins`` time bins, (N, bins * 40)."""
    steps = x.shape[1] - x.shape[1] % bins
    return x[:, :steps, :40].reshape(len(x), bins, steps // bins, 40).mean(2).reshape(len(x), -1)


def softmax_regression(x, y, n_classes: int, l2: float, iters: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1e-3, (x.shape[1], n_classes)).astype(np.float32)
    b = np.zeros(n_classes, np.float32)
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    for it in range(1, iters + 1):
        z = x @ w + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(y)
        grads = [x.T @ g + l2 * w, g.sum(0)]
        for i, (param, grad) in enumerate(zip((w, b), grads)):
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad * grad
            param -= 0.01 * (m[i] / (1 - 0.9**it)) / (np.sqrt(v[i] / (1 - 0.999**it)) + 1e-8)
    return w, b


def accuracy(w, b, x, y) -> float:
    return float(np.mean(np.argmax(x @ w + b, 1) == y))


def evaluate(name: str, train, val, test, n_classes: int, l2s, iters: int) -> dict:
    mu, sd = train[0].mean(0), train[0].std(0) + 1e-6
    xs = [(x - mu) / sd for x, _ in (train, val, test)]
    rows = []
    for l2 in l2s:
        w, b = softmax_regression(xs[0], train[1], n_classes, l2, iters)
        rows.append({"l2": l2, "train": accuracy(w, b, xs[0], train[1]), "val": accuracy(w, b, xs[1], val[1]),
                     "test": accuracy(w, b, xs[2], test[1])})
        print(f"  {name} l2={l2:g}: train {rows[-1]['train']:.4f} val {rows[-1]['val']:.4f} "
              f"test {rows[-1]['test']:.4f}", flush=True)
    best = max(rows, key=lambda r: (r["val"], -r["l2"]))
    return {"features": name, "dims": xs[0].shape[1], "rows": rows, "selected": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="data.root of keyword_spikes (default: its default)")
    ap.add_argument("--audio-root", default=None)
    ap.add_argument("--bands", type=int, default=None)
    ap.add_argument("--levels-db", type=float, nargs="+", default=None)
    ap.add_argument("--hysteresis-db", type=float, default=None)
    ap.add_argument("--smooth-ms", type=float, default=None)
    ap.add_argument("--bins", type=int, nargs="+", default=[1, 5, 10], help="time bins of the 1 s sample (each a run)")
    ap.add_argument("--l2", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--analog", action="store_true", help="also the analog log-mel features (data.name=keywords)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    opts = {k: v for k, v in (("root", args.root), ("audio_root", args.audio_root), ("bands", args.bands),
                              ("levels_db", args.levels_db), ("hysteresis_db", args.hysteresis_db),
                              ("smooth_ms", args.smooth_ms)) if v is not None}
    cfg = from_dict(SHDConfig, {"name": "keyword_spikes", **opts}, "data")
    t0 = time.perf_counter()
    data = load_dataset(cfg, Timing(dt_ms=1.0))
    load_s = time.perf_counter() - t0
    manifest = json.loads((spikes_path(cfg) / MANIFEST).read_text())
    print(f"keyword_spikes: {manifest['channels']} channels, encoder {manifest['encoder']}")
    print(f"generation {manifest['generation_s']} s (this load, generation included if it ran: {load_s:.1f} s)")
    for split, s in manifest["stats"].items():
        print(f"  {split}: {s['samples']} samples, {s['spikes_per_sample']:.1f} spikes/sample (max "
              f"{s['spikes_per_sample_max']}), silent channels {s['silent_channels']:.3f} over the split, "
              f"{s['silent_channels_per_sample']:.3f} per sample")
    events = data.train.events_per_sample()
    keys, coarse = data.train.keys.astype(np.int64), {}
    sample = np.repeat(np.arange(len(data.train)), events)
    for dt in (1, 2, 5, 10):                  # input events per sample when the 1 ms steps are merged to dt ms
        step, chan = keys // data.n_inputs // dt, keys % data.n_inputs
        coarse[dt] = len(np.unique((sample * data.steps + step) * data.n_inputs + chan)) / len(data.train)
    print("  input events per training sample at dt = " + ", ".join(f"{dt} ms: {v:.1f}" for dt, v in coarse.items()))
    results = {"manifest": manifest, "iters": args.iters, "events_per_sample": coarse, "runs": []}
    analog = [load_speech_commands(audio_path(cfg), split) for split in ("training", "validation", "testing")] \
        if args.analog else None
    for bins in args.bins:
        print(f"{bins} time bin(s):")
        splits = [(count_features(sp, bins), sp.labels) for sp in (data.train, data.val, data.test)]
        run = {"bins": bins, "spikes": evaluate("spike counts", *splits, data.n_classes, args.l2, args.iters)}
        if analog:
            run["analog"] = evaluate("analog log-mel", *[(analog_features(d.x, bins), d.labels) for d in analog],
                                     len(analog[0].class_names), args.l2, args.iters)
        results["runs"].append(run)
    for run in results["runs"]:
        for key in ("spikes", "analog"):
            if key in run:
                s = run[key]["selected"]
                print(f"{run['bins']} bin(s), {run[key]['features']} ({run[key]['dims']} features): l2 {s['l2']:g} "
                      f"chosen on validation ({s['val']:.4f}); test accuracy {s['test']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
