"""CPU per core and per router per round on ``ray``, for the cluster projection (issue 25).

Usage: flock /tmp/spinnray_big.lock python bench/bench_chip_cpu.py [--cores 152] [--pes-per-chip 38]
       [--steps 200] [--repeats 3] [--json PATH]

The ``forward`` network of bench_chip_router.py on ``--cores`` cores (one router per chip), K = 1.
Wall time on a shared 2-CPU host says little about a cluster node, so this measures what a step
*costs*: the CPU seconds (user + system, from ``/proc/PID/stat``) that the core actors, the router
actors and the driver spend during ``--repeats`` runs of ``--steps`` steps, per core-round and per
router-round, beside the in-process ``local`` backend's CPU per step.  CPU time does not grow with the
load of other jobs (wall time does), so these are the inputs of the projection in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_chip_router import Machine, forward_config, log, split_cores  # noqa: E402


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cores", type=int, default=152)
    ap.add_argument("--pes-per-chip", type=int, default=38)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    split = split_cores(args.cores)
    cfg = forward_config(f"parallel.cores_per_population={{input:{split['input']},hidden:{split['hidden']},"
                         f"output:{split['output']}}}", f"machine.pes_per_chip={args.pes_per_chip}")
    from spinnray.backends import ensure_ray
    ensure_ray(num_cpus=2)
    out = {"cores": args.cores, "pes_per_chip": args.pes_per_chip, "steps": args.steps, "runs": []}
    local = Machine(cfg, "local", cfg.cluster)
    ray_m = Machine(cfg, "ray", dataclasses.replace(cfg.cluster, router_per="chip"))
    try:
        cores, routers = ray_m.sim.backend.reports()
        core_pids = [c["process"]["pid"] for c in cores]
        router_pids = [r["process"]["pid"] for r in routers]
        log(f"{len(core_pids)} cores, {len(router_pids)} routers up in {ray_m.setup_s:.1f} s")
        ray_m.run(args.steps, 0)
        local.run(args.steps, 0)
        for r in range(args.repeats):
            me = os.getpid()
            c0, r0, d0, w0 = (sum(map(cpu_s, core_pids)), sum(map(cpu_s, router_pids)), cpu_s(me),
                              time.perf_counter())
            ms_ray, _ = ray_m.run(args.steps, 1 + r)
            c1, r1, d1, w1 = (sum(map(cpu_s, core_pids)), sum(map(cpu_s, router_pids)), cpu_s(me),
                              time.perf_counter())
            t0 = cpu_s(me)
            ms_local, _ = local.run(args.steps, 1 + r)
            local_cpu = cpu_s(me) - t0
            row = {"ray_ms_per_step": ms_ray, "local_ms_per_step": ms_local,
                   "core_cpu_ms_per_core_round": (c1 - c0) / args.steps / len(core_pids) * 1e3,
                   "router_cpu_ms_per_router_round": (r1 - r0) / args.steps / len(router_pids) * 1e3,
                   "driver_cpu_ms_per_step": (d1 - d0) / args.steps * 1e3,
                   "ray_cpu_ms_per_step": ((c1 - c0) + (r1 - r0) + (d1 - d0)) / args.steps * 1e3,
                   "local_cpu_ms_per_step": local_cpu / args.steps * 1e3,
                   "load": float(open("/proc/loadavg").read().split()[0])}
            out["runs"].append(row)
            log(json.dumps({k: round(v, 4) for k, v in row.items()}))
        out["median"] = {k: statistics.median(r[k] for r in out["runs"]) for k in out["runs"][0]}
        out["routers"], out["setup_s"] = len(router_pids), ray_m.setup_s
    finally:
        ray_m.close()
    print(json.dumps(out["median"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
