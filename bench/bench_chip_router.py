"""One router per chip against one per node (issue 25, item 4): ms per step on ``ray`` and ``local``,
and a network over 4 chips on a 3-node ``ray.cluster_utils.Cluster``.

Usage: flock /tmp/spinnray_big.lock nice -n 10 python bench/bench_chip_router.py [--cores 152]
       [--pes-per-chip 38] [--steps 100] [--repeats 5] [--blocks 2] [--skip-cluster] [--json PATH]

Part 1, one node (an embedded Ray, ``num_cpus=2``).  The ``forward`` scenario's network (100
Poisson inputs at 20 Hz -> 200 recurrent LIF, delays 1-4 -> 20 LIF; ``scenarios/forward.yaml``,
K = 1, batch 1) is cut into ``--cores`` cores (152 = the PEs of one SpiNNaker2 chip: input 40,
hidden 100, output 12 cores, as ``parallel.cores_per_population={input: 40, hidden: 100, output:
12}``) and placed on chips of ``--pes-per-chip`` PEs (38: 4 chips).  Three machines run the same
trials: ``local`` (the routers in this process; one per chip), ``ray`` with
``cluster.router_per=node`` (one router actor for the 4 chips) and ``ray`` with
``cluster.router_per=chip`` (4 router actors on one Ray node, routing between chips over the
authenticated router-to-router streams).  Two 152-actor machines do not fit this host's memory at
once (about 9 GB each), so the ray machines run in alternating blocks (node, chip, node, chip, ...:
``--blocks`` each), each block a fresh machine; within a block the ray and local runs are
interleaved repeat by repeat, and the ``local`` median of each block is the drift reference.
Reported: start-up (``Simulator`` construction: mapping and every actor up), ms per step (median
of ``--repeats`` runs of ``--steps`` steps after a warm-up run), spikes identical to ``local``,
and the router traffic per step (events delivered by link class, inter-chip and inter-node copies).

Part 2 (unless ``--skip-cluster``): a 3-node ``ray.cluster_utils.Cluster`` (a head and two
workers, 1 CPU each, on this host, so "nodes" are raylets talking over loopback): the same
network on 8 cores of 2 PEs per chip (4 chips: 2 on node 0, 1 each on nodes 1 and 2), one router
per chip: start-up time, spikes and per-core counters identical to ``local`` with the same
placement and to one router on one node, and the traffic per link class.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spinnray.config import ClusterConfig, RunConfig, from_dict  # noqa: E402
from spinnray.data.poisson import poisson_trials  # noqa: E402
from spinnray.experiments.setup import resolve  # noqa: E402
from spinnray.machine.counters import LINK_CLASSES  # noqa: E402
from spinnray.model.builders import source_rates  # noqa: E402
from spinnray.simulator import Simulator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[bench_chip_router {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def forward_config(*overrides: str) -> RunConfig:
    """The typed RunConfig of ``run.py scenario=forward`` with these overrides."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["scenario=forward", *overrides])
    return from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True))


def split_cores(cores: int) -> dict[str, int]:
    """``cores`` cores over input / hidden / output of the forward network (100 / 200 / 20 neurons),
    roughly in proportion; 152 -> 40 / 100 / 12."""
    if cores < 3:
        raise SystemExit(f"--cores {cores}: expected at least 3 (one per population)")
    out = max(1, min(20, round(cores * 12 / 152)))
    inp = max(1, min(100, round((cores - out) * 40 / 140)))
    return {"input": inp, "hidden": min(200, cores - out - inp), "output": out}


class Machine:
    """The forward network on one backend and router unit, and its inputs."""

    def __init__(self, cfg: RunConfig, backend: str, cluster: ClusterConfig):
        run = resolve(cfg)
        self.net = run.builder.build(run.network, None, cfg.seed)
        self.rates = source_rates(run.network, self.net)
        self.cfg = cfg
        t = time.perf_counter()
        self.sim = Simulator(self.net, cfg.machine, parallel=cfg.parallel, backend=backend, cluster=cluster,
                             timeout_s=cfg.cluster.round_timeout_s)
        self.setup_s = time.perf_counter() - t

    def inputs(self, steps: int, trial: int) -> dict:
        return poisson_trials(self.rates, {n: self.net[n].size for n in self.rates}, steps, self.net.dt_ms,
                              self.cfg.seed, 0, trial, 1)

    def run(self, steps: int, trial: int):
        x = self.inputs(steps, trial)
        t = time.perf_counter()
        res = self.sim.run(steps, x)
        return (time.perf_counter() - t) / steps * 1e3, res

    def traffic(self) -> dict:
        return self.sim.metrics()["traffic"]

    def close(self) -> None:
        self.sim.close()


def per_step(before: dict, after: dict, steps: int) -> dict:
    """Traffic of one run, per step: events by link class, inter-chip and inter-node copies."""
    return {"by_link_class": {k: (after["by_link_class"][k]["events"] - before["by_link_class"][k]["events"]) / steps
                              for k in LINK_CLASSES},
            **{w: {f: (after[w][f] - before[w][f]) / steps for f in ("packets", "events", "bytes")}
               for w in ("inter_chip", "inter_node")}}


def block(cfg: RunConfig, unit: str, local: Machine, steps: int, repeats: int) -> dict:
    """A fresh ray machine with one router per ``unit``, timed against ``local`` (interleaved)."""
    log(f"ray, router_per={unit}: starting {cfg.machine.pes_per_chip}-PE chips ...")
    ray_m = Machine(cfg, "ray", dataclasses.replace(cfg.cluster, router_per=unit))
    log(f"  up in {ray_m.setup_s:.1f} s: {ray_m.sim.mapping.n_cores} cores, {ray_m.sim.mapping.routers} router(s)")
    try:
        ray_m.run(steps, 0)                                         # warm-up
        local.run(steps, 0)
        times = {"ray": [], "local": []}
        same = True
        for r in range(repeats):
            for name in (("ray", "local") if r % 2 == 0 else ("local", "ray")):
                m = ray_m if name == "ray" else local
                before = m.traffic()
                dt, res = m.run(steps, 1 + r)
                times[name].append(dt)
                if name == "ray":
                    traffic = per_step(before, m.traffic(), steps)
                    got = res
                else:
                    want, l_traffic = res, per_step(before, m.traffic(), steps)
            same &= all(np.array_equal(got.spikes[p], want.spikes[p]) for p in want.spikes)
        return {"unit": unit, "setup_s": ray_m.setup_s, "routers": ray_m.sim.mapping.routers,
                "ray_ms_per_step": statistics.median(times["ray"]),
                "local_ms_per_step": statistics.median(times["local"]),
                "ray_ms_all": times["ray"], "local_ms_all": times["local"], "identical_to_local": bool(same),
                "traffic_per_step": traffic, "local_traffic_per_step": l_traffic,
                "hidden_rate_hz": float(got.spikes["hidden"].mean() * 1000.0 / local.net.dt_ms)}
    finally:
        ray_m.close()


def one_node(args) -> dict:
    from spinnray.backends import ensure_ray

    split = split_cores(args.cores)
    cfg = forward_config(f"machine.pes_per_chip={args.pes_per_chip}", "parallel.exchange_interval=1",
                         "parallel.batch_size=1", "progress=false", "report=false")
    cfg = dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, cores_per_population=split),
                              cluster=dataclasses.replace(cfg.cluster, placement_timeout_s=900.0))
    ensure_ray(num_cpus=2)
    local = Machine(cfg, "local", cfg.cluster)                # one router per chip (the default)
    mapping = local.sim.mapping
    log(f"{mapping.n_cores} cores ({split}) on {mapping.summary()['chips_used']} chips of "
        f"{args.pes_per_chip} PEs; local up in {local.setup_s:.1f} s")
    blocks = []
    try:
        for b in range(args.blocks):
            for unit in ("node", "chip"):
                row = block(cfg, unit, local, args.steps, args.repeats)
                row["block"] = b
                blocks.append(row)
                log(f"  block {b} {unit}: ray {row['ray_ms_per_step']:.2f} ms/step, local "
                    f"{row['local_ms_per_step']:.2f}, identical {row['identical_to_local']}")
    finally:
        local.close()
    return {"cores": mapping.n_cores, "split": split, "chips": mapping.summary()["chips_used"],
            "pes_per_chip": args.pes_per_chip, "steps": args.steps, "repeats": args.repeats, "blocks": blocks}


def cluster_part() -> dict:
    """The 3-node Cluster: 4 chips, one router each, against local."""
    import ray
    from ray.cluster_utils import Cluster

    tests = ROOT / "tests"
    sys.path.insert(0, str(tests))
    from helpers import (CLUSTER_BATCH, CLUSTER_CORES, CLUSTER_MACHINE, CLUSTER_STEPS,  # noqa: E402
                         cluster_forward, cluster_inputs, cluster_network, expected_link_classes)

    def on_ray(cfg):
        t = time.monotonic()
        with Simulator(cluster_network(), CLUSTER_MACHINE, cores_per_population=CLUSTER_CORES,
                       batch_size=CLUSTER_BATCH, backend="ray", cluster=cfg) as sim:
            setup_s = time.monotonic() - t
            t = time.monotonic()
            res = sim.run(CLUSTER_STEPS, cluster_inputs(), record=("spikes", "v"))
            return setup_s, time.monotonic() - t, res, sim.reports(), sim.metrics(), sim.mapping

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False))
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()
        up = time.monotonic() - t0
        out = {"cluster_up_s": up}
        one = cluster_forward("local", ClusterConfig(router_per="node"))
        for unit in ("chip", "node"):
            cfg = ClusterConfig(nodes=3, router_per=unit)
            local = cluster_forward("local", cfg)
            setup_s, run_s, res, (cores, routers), metrics, mapping = on_ray(cfg)
            want, wire = expected_link_classes(cluster_network(), mapping, res.spikes)
            tr = metrics["traffic"]
            out[unit] = {
                "setup_s": setup_s, "run_s": run_s, "steps": CLUSTER_STEPS, "cores": mapping.n_cores,
                "chips": mapping.summary()["chips_used"], "routers": len(routers),
                "router_nodes": mapping.router_node(), "cores_per_node": mapping.summary()["cores_per_node"],
                "identical_to_one_router": all(np.array_equal(res.spikes[p], one[0].spikes[p]) for p in res.spikes)
                and all(np.array_equal(res.v[p], one[0].v[p]) for p in res.v),
                "counters_equal_local": [c["counters"] for c in cores] == [c["counters"] for c in local[1][0]]
                and [r["counters"] for r in routers] == [r["counters"] for r in local[1][1]],
                "by_link_class": {k: v["events"] for k, v in tr["by_link_class"].items()},
                "by_link_class_matches_spike_count": {k: v["events"] for k, v in tr["by_link_class"].items()} == want,
                "inter_chip": tr["inter_chip"], "inter_node": tr["inter_node"], "expected_copies": wire}
            log(f"cluster {unit}: {out[unit]['routers']} routers, identical {out[unit]['identical_to_one_router']}, "
                f"up in {setup_s:.1f} s")
        return out
    finally:
        ray.shutdown()
        cluster.shutdown()


def markdown(res: dict, command: str) -> str:
    out = [f"Command: `{command}`", ""]
    if "one_node" in res:
        o = res["one_node"]
        out += [f"One node, {o['cores']} cores ({o['split']}) on {o['chips']} chips of {o['pes_per_chip']} PEs, "
                f"{o['steps']} steps per run, median of {o['repeats']} runs per block (ray and local interleaved):", "",
                "| block | routers | ray start-up s | ray ms/step | local ms/step (same block) | ray / local | "
                "identical to local | events/step same core / same chip / same node | inter-chip copies/step "
                "(packets / events / bytes) |", "|---|---|---|---|---|---|---|---|---|"]
        for b in o["blocks"]:
            lc = b["traffic_per_step"]["by_link_class"]
            ic = b["traffic_per_step"]["inter_chip"]
            out.append(f"| {b['block']} | {b['routers']} ({b['unit']}) | {b['setup_s']:.1f} | "
                       f"{b['ray_ms_per_step']:.2f} | {b['local_ms_per_step']:.2f} | {b['ray_ms_per_step'] / b['local_ms_per_step']:.2f} | "
                       f"{'yes' if b['identical_to_local'] else 'NO'} | "
                       + " / ".join(f"{lc[k]:.1f}" for k in LINK_CLASSES[:3])
                       + f" | {ic['packets']:.1f} / {ic['events']:.1f} / {ic['bytes']:.0f} |")
        for unit in ("node", "chip"):
            ms = [b["ray_ms_per_step"] for b in o["blocks"] if b["unit"] == unit]
            loc = [b["local_ms_per_step"] for b in o["blocks"] if b["unit"] == unit]
            out.append(f"\nray, one router per {unit}: median over blocks {statistics.median(ms):.2f} ms/step "
                       f"(local in the same blocks {statistics.median(loc):.2f})")
    if "cluster" in res:
        c = res["cluster"]
        out += ["", f"3-node Cluster (up in {c['cluster_up_s']:.1f} s), the cluster test network on 8 cores, 4 chips "
                "of 2 PEs:", "",
                "| routers | router nodes | cores per node | start-up s | 80-step run s | identical to one router | "
                "counters = local | events same core / same chip / same node / across nodes | inter-chip copies "
                "(packets / events / bytes) | inter-node copies (packets / events / bytes) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for unit in ("chip", "node"):
            r = c[unit]
            lc = r["by_link_class"]
            out.append(f"| {r['routers']} (per {unit}) | {r['router_nodes']} | {r['cores_per_node']} | "
                       f"{r['setup_s']:.1f} | {r['run_s']:.2f} | {'yes' if r['identical_to_one_router'] else 'NO'} | "
                       f"{'yes' if r['counters_equal_local'] else 'NO'} | "
                       + " / ".join(str(lc[k]) for k in LINK_CLASSES)
                       + f" | {r['inter_chip']['packets']} / {r['inter_chip']['events']} / {r['inter_chip']['bytes']}"
                       f" | {r['inter_node']['packets']} / {r['inter_node']['events']} / {r['inter_node']['bytes']} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=152)
    ap.add_argument("--pes-per-chip", type=int, default=38)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--blocks", type=int, default=2, help="alternating node/chip blocks of fresh ray machines")
    ap.add_argument("--skip-cluster", action="store_true")
    ap.add_argument("--skip-one-node", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    command = "python bench/bench_chip_router.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    res = {"command": command}
    if not args.skip_one_node:
        res["one_node"] = one_node(args)
        import ray
        ray.shutdown()
    if not args.skip_cluster:
        res["cluster"] = cluster_part()
    print(markdown(res, command))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
