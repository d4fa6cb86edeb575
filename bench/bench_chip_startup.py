"""Start-up and memory of a whole chip's core actors on `ray` (issue 25): 152 core actors.

The forward network (``conf/network/random.yaml``: 100 -> 200 -> 20) with
``cores_per_population = {input: 66, hidden: 66, output: 20}``: 152 cores, one chip, as
``python run.py backend=ray 'parallel.cores_per_population={input:66,hidden:66,output:20}'`` maps it.
In one process: Ray is started (timed apart), then

* cold: ``Simulator(...)`` to the end of its first round (a 1-step run), every actor new;
* warm: the Simulator closed and built again, as the next run, epoch or sweep job of the process does
  (with the actor pool: the same actors; before it: new ones);

and for the cold machine, after ``--steps`` steps, each core actor's USS (private pages: what it adds
to the machine) and RSS from ``/proc/PID/smaps_rollup``, and the CPU the idle actors use over 10 s.
The checkout measured is the one on ``PYTHONPATH`` (so an older commit can be measured with this
script); prints one JSON line.

    PYTHONPATH=. flock /tmp/spinnray_big.lock nice -n 10 python bench/bench_chip_startup.py [--label after]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import ray
import yaml

import spinnray
from spinnray import MachineConfig
from spinnray.backends import ensure_ray
from spinnray.config import ClusterConfig, from_dict
from spinnray.model.builders import BUILDERS
from spinnray.simulator import Simulator

ROOT = Path(__file__).resolve().parents[1]


def smaps(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[key] = int(parts[0]) * 1024
    return {"rss": fields["Rss"], "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


def cpu_s(pids) -> float:
    total = 0
    for p in pids:
        f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(f[11]) + int(f[12])
    return total / os.sysconf("SC_CLK_TCK")


def up_to_first_round(net, sources, cores) -> tuple[Simulator, float, float]:
    t0 = time.perf_counter()
    sim = Simulator(net, MachineConfig(), cores_per_population=cores, backend="ray",
                    cluster=ClusterConfig(placement_timeout_s=900.0, round_timeout_s=600.0))
    t_up = time.perf_counter() - t0
    sim.run(1, {k: v[:1] for k, v in sources.items()})
    return sim, t_up, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", default="")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cores", default="input=66,hidden=66,output=20", help="cores per population")
    args = ap.parse_args(argv)
    cores = {k: int(v) for k, v in (kv.split("=") for kv in args.cores.split(","))}
    spec = BUILDERS.get("random")
    cfg = from_dict(spec.config, yaml.safe_load((ROOT / "conf/network/random.yaml").read_text()))
    net = spec.build(cfg, None, 0)
    sources = {p.name: np.random.default_rng(0).random((args.steps, p.size)) < 0.05
               for p in net.populations.values() if p.model.kind == "source"}
    out_load = float(Path("/proc/loadavg").read_text().split()[0])
    t = time.perf_counter()
    ensure_ray(num_cpus=2)
    out = {"label": args.label, "code": str(Path(spinnray.__file__).parents[1]),
           "commit": subprocess.run(["git", "-C", str(Path(spinnray.__file__).parents[1]), "rev-parse", "--short",
                                     "HEAD"], capture_output=True, text=True).stdout.strip(),
           "ray_init_s": time.perf_counter() - t, "loadavg_1min_start": out_load}
    sim, out["cold_up_s"], out["cold_first_round_s"] = up_to_first_round(net, sources, cores)
    try:
        out["cores"] = len(sim.backend.actors)
        sim.run(args.steps, sources)
        pids = ray.get([a.pid.remote() for a in sim.backend.actors.values()])
        mem = [smaps(p) for p in pids]
        c0 = cpu_s(pids)
        time.sleep(10)
        out["idle_cpu_pct"] = 100 * (cpu_s(pids) - c0) / 10
    finally:
        sim.close()
    for key in ("uss", "rss"):
        v = [m[key] / 2**20 for m in mem]
        out[f"{key}_mb_median"], out[f"{key}_mb_max"] = statistics.median(v), max(v)
    sim, out["warm_up_s"], out["warm_first_round_s"] = up_to_first_round(net, sources, cores)
    try:
        again = ray.get([a.pid.remote() for a in sim.backend.actors.values()])
        out["warm_same_processes"] = len(set(again) & set(pids))
    finally:
        sim.close()
    out["loadavg_1min_end"] = float(Path("/proc/loadavg").read_text().split()[0])     # other jobs on the machine
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
