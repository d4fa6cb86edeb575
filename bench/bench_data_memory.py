"""Driver memory against the size of the data set (issue 26, part 6).

    python bench/bench_data_memory.py                          # cue: train sizes 200, 800, 3200; 400 test trials
    python bench/bench_data_memory.py --sizes 3200 --test-size 2000      # the scenario's data
    python bench/bench_data_memory.py --data files --sizes 1000,4000,16000   # keyword-sized analog files
    PYTHONPATH=/path/to/other/checkout python bench/bench_data_memory.py  # another checkout (before/after)

``cue``: the cue-accumulation trials of ``eprop_cue`` (T = 2250 steps x 40 channels: 0.36 MB of
float32 per trial), loaded as a run does (``data.p_group=0.3 data.resample=true``, the scenario's
options).  ``files``: ``data.name=files`` on analog archives written by ``write_analog`` (uncompressed)
into a temporary directory, samples of 100 steps x 80 channels (32 KB of float32, the size of a keyword
clip's features; the keyword cache is read the same way, :class:`spinnray.data.base.NpzRows`).

Each size runs in a fresh process (peak RSS only grows within a process) that loads the data set, then
does what the epoch loop and the test pass ask of it: every training sample in mini-batches of 32 in a
seeded order, the start of epoch 2 (cue: fresh trials) and a mini-batch of it, and every test sample in
batches of 32.  The mini-batches are dropped as soon as they are made (the cores would take them).
Printed per size:

* ``rss0``: resident memory after the imports, ``peak``: peak resident memory (``ru_maxrss``) at the
  end, ``peak - rss0``: what the data cost (a child's ``ru_maxrss`` starts at the RSS of the process it
  was forked from, so the parent allocates nothing large);
* ``traced``: the peak of the bytes numpy and Python allocated during the data work
  (``tracemalloc``, a second process, so its overhead does not touch the RSS figures);
* ``held``: bytes of the arrays the two splits hold once loaded;
* ``load_s`` and ``batches_s``: wall seconds to load and to make all the mini-batches.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from spinnray.config import from_dict
from spinnray.data.base import Timing, load_dataset
from spinnray.data.cue import CueConfig
from spinnray.data.files import FilesConfig, write_analog

BATCH = 32


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _held(obj, seen: set) -> int:
    """Bytes of the numpy arrays an object holds through its attributes."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (list, tuple)):
        return sum(_held(v, seen) for v in obj)
    if isinstance(obj, dict):
        return sum(_held(v, seen) for v in obj.values())
    return _held(vars(obj), seen) if hasattr(obj, "__dict__") else 0


def _files(root: Path, train_size: int, test_size: int) -> None:
    """Analog archives of keyword-sized samples (in a process of its own: a child process starts with
    the peak RSS of the process it was forked from, so the parent must stay small)."""
    rng = np.random.default_rng(0)
    for name, n in (("train", train_size), ("test", test_size)):
        x = rng.normal(size=(n, 100, 80)).astype(np.float32)
        write_analog(root / f"{name}.npz", rng.integers(0, 12, n), x)
        del x


def child(data: str, train_size: int, test_size: int, root: str | None, trace: bool) -> dict:
    rss0 = _rss()
    if data == "cue":
        cfg = from_dict(CueConfig, {"name": "cue", "train_size": train_size, "test_size": test_size,
                                    "p_group": 0.3, "resample": True, "test_seed": 2}, "data")
    else:
        cfg = from_dict(FilesConfig, {"name": "files", "path": root}, "data")
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    data = load_dataset(cfg, Timing(1.0))
    load_s = time.perf_counter() - t0
    held = _held(data.train, set()) + _held(data.test, set())
    order = np.random.default_rng(0).permutation(len(data.train))
    t0 = time.perf_counter()
    for first in range(0, len(order), BATCH):
        data.train.batch(order[first:first + BATCH])
    data.begin_epoch(1)
    data.train.batch(order[:BATCH])
    for first in range(0, len(data.test), BATCH):
        data.test.batch(np.arange(first, min(first + BATCH, len(data.test))))
    batches_s = time.perf_counter() - t0
    out = {"train": train_size, "test": test_size, "rss0": rss0, "held": held, "load_s": load_s,
           "batches_s": batches_s, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if trace:
        out["traced"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return out


def _run(args: list[str]) -> dict:
    """One child process; its last line of output is its JSON."""
    got = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(got.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=("cue", "files"), default="cue")
    ap.add_argument("--sizes", default="200,800,3200", help="training samples, comma separated")
    ap.add_argument("--test-size", type=int, default=400)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--write", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.write is not None:
        _files(Path(a.root), a.write, a.test_size)
        print("{}")
        return
    if a.child is not None:
        print(json.dumps(child(a.data, a.child, a.test_size, a.root, a.trace)))
        return
    mb = 1 << 20
    print(f"data = {a.data}")
    print("| train | test | rss0 MB | peak MB | peak - rss0 MB | traced MB | held MB | load s | batches s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in a.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench_data_") as root:
            if a.data == "files":
                _run(["--write", str(size), "--test-size", str(a.test_size), "--root", root])
            args = ["--data", a.data, "--child", str(size), "--test-size", str(a.test_size), "--root", root]
            r = _run(args)
            traced = _run([*args, "--trace"])["traced"]
        print(f"| {size} | {a.test_size} | {r['rss0'] / mb:.1f} | {r['peak'] / mb:.1f} | "
              f"{(r['peak'] - r['rss0']) / mb:.1f} | {traced / mb:.1f} | {r['held'] / mb:.2f} | "
              f"{r['load_s']:.2f} | {r['batches_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
