"""Memory per core of recurrent EventProp (issue 23): input spikes -> recurrent LIF -> LI readout
(``network.name = recurrent_lif``), one training step (forward, reverse pass) on the ``local``
backend with Poisson input, then each core's memory by category as it reports it.

Prints, per configuration, the spikes per sample and the largest hidden core's bytes (budget 128 KB),
and checks that its spike records are 10 bytes per own spike and 6 per spike received (float32):
the records grow with the spikes, not with T.  ``--quiet-tail F`` runs F times the steps with the
input confined to the first T steps (the same spikes, a longer run).

    python bench/bench_eventprop_memory.py --inputs 700 --hidden 256 --classes 20 --steps 1000 \
        --rate-hz 10 --w-in 0.03 --cores 128
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spinnray.config import MachineConfig  # noqa: E402
from spinnray.model.builders import DataShape, RecurrentLIFConfig, build_recurrent_lif  # noqa: E402
from spinnray.rules import rule  # noqa: E402
from spinnray.rules.eventprop import EventPropConfig  # noqa: E402
from spinnray.simulator import Simulator, poisson_spikes  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=700)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    ap.add_argument("--w-in", type=float, default=0.03, help="input weights N(w, w/3)")
    ap.add_argument("--cores", type=int, default=128, help="hidden cores")
    ap.add_argument("--batch", type=int, default=1, help="samples per core")
    ap.add_argument("--quiet-tail", type=int, default=1, help="run F x steps, input in the first steps only")
    a = ap.parse_args(argv)
    cfg = RecurrentLIFConfig(hidden=a.hidden, w_in_mean=a.w_in, w_in_std=a.w_in / 3)
    net = build_recurrent_lif(cfg, DataShape(a.inputs, a.classes, "spikes"), 0)
    machine = MachineConfig()
    learning = rule("eventprop").learning(net, EventPropConfig(loss="mean_voltage"), machine)
    x = poisson_spikes(a.rate_hz, a.steps, a.batch, a.inputs, 1.0, np.random.default_rng(0))
    steps = a.steps * a.quiet_tail
    x = np.concatenate([x, np.zeros((steps - a.steps,) + x.shape[1:], bool)])
    source_cores = -(-a.inputs * steps * a.batch // 120_000)        # the input raster lives on its cores
    with Simulator(net, machine, cores_per_population={"input": source_cores, "hidden": a.cores, "output": 1},
                   batch_size=a.batch, backend="local", learning=learning) as sim:
        t = time.perf_counter()
        res = sim.run(steps, {"input": x}, targets={"output": np.zeros(a.batch, np.int64)})
        sim.backward(1.0 / a.batch)
        wall = time.perf_counter() - t
        reps = sim.reports()[0]
    hidden = [r for r in reps if r["population"] == "hidden"]
    for r in hidden:
        c = r["counters"]
        assert r["memory"]["spike_records"] == 10 * c["spike_events_sent"] + 6 * c["spike_events_received"], r
    worst = max(hidden, key=lambda r: sum(r["memory"].values()))
    out = next(r for r in reps if r["population"] == "output")
    n = -(-a.hidden // a.cores)
    print(f"| {a.inputs}-{a.hidden}-{a.classes} | {a.steps} x {a.quiet_tail} | {a.batch} | {a.cores} ({n}/core) | "
          f"{x.sum() / a.batch:.0f} | {res.spikes['hidden'].sum() / a.batch:.0f} | "
          f"{sum(worst['memory'].values())} | {worst['memory']['spike_records']} | "
          f"{worst['memory']['weights'] + worst['memory']['gradients'] + worst['memory']['optimizer']} | "
          f"{sum(out['memory'].values())} | {wall:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
