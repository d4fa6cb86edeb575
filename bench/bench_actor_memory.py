"""Memory of one core actor process on `ray`: what `spinnray.backends.ray.ACTOR_BYTES` (the
admission check's figure per actor) rests on.

Builds the forward network (``conf/network/random.yaml``: 100 -> 200 -> 20) with ``--cores`` cores
per population on a local Ray, runs a few steps, and reads every core actor's
``/proc/PID/smaps_rollup`` (Linux): USS (its private pages), PSS (private plus its share of pages
shared with other actors) and RSS.  Prints the medians and maxima per actor.

    python bench/bench_actor_memory.py [--cores 4] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spinnray import MachineConfig, Simulator  # noqa: E402
from spinnray.backends.ray import ACTOR_BYTES  # noqa: E402
from spinnray.config import from_dict  # noqa: E402
from spinnray.model.builders import BUILDERS  # noqa: E402


def smaps(pid: int) -> dict[str, int]:
    """``{"rss", "pss", "uss"}`` in bytes from ``/proc/PID/smaps_rollup``."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[key] = int(parts[0]) * 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"], "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", type=int, default=4, help="cores per population (default 4)")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    spec = BUILDERS.get("random")
    cfg = from_dict(spec.config, yaml.safe_load((ROOT / "conf/network/random.yaml").read_text()))
    net = spec.build(cfg, None, 0)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        with Simulator(net, MachineConfig(), cores_per_population=args.cores, backend="ray") as sim:
            sources = {p.name: np.random.default_rng(0).random((args.steps, p.size)) < 0.1
                       for p in net.populations.values() if p.model.kind == "source"}
            sim.run(args.steps, sources)
            pids = ray.get([a.pid.remote() for a in sim.backend.actors.values()])
            mem = [smaps(p) for p in pids]
    finally:
        ray.shutdown()
    print(f"{len(mem)} core actors ({args.cores} cores per population), {args.steps} steps run")
    for key in ("uss", "pss", "rss"):
        v = [m[key] / 2**20 for m in mem]
        print(f"  {key.upper()} per actor: median {statistics.median(v):.1f} MB, max {max(v):.1f} MB")
    print(f"ACTOR_BYTES = {ACTOR_BYTES / 2**20:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
