"""Per-step time on 1, 2 and 3 cluster nodes, traffic per link class, and the
cost of crossing a node against staying on it.

Usage: python bench/bench_cluster.py [--quick] [--json PATH] [--markdown]

Starts a 3-node ``ray.cluster_utils.Cluster`` on this machine (every node a
raylet of its own, 1 CPU each; the actors take ``num_cpus=0``) and connects to
it; "nodes" are therefore processes of one host talking over loopback TCP:
what is measured is the cost of the extra router hop and of keeping the
routers in lockstep, not of a physical network.

Workloads (batch 1, K = 1):

* ``net``: a small spiking network, 100 Poisson inputs (20 Hz) -> 200
  recurrent LIF (10 % connectivity, delays 1-4) -> 20 LIF, 4 cores per
  population, 2 PEs per chip (6 chips), spread over 1, 2 and 3 nodes
  (``cluster.nodes``).  Spikes and counters are checked equal to the
  ``local`` backend with the same placement.
* ``pair``: two cores, each with 100 always-spiking neurons projecting onto
  the other's (so 100 events per core per step, every step), on one node
  (``same node``) or on two (``across``): the difference is the cost of
  crossing a node.

For each point the simulator is built once and warmed up; the step count is
calibrated on one node so a run takes about 1 s there (0.3 s with
``--quick``) and kept for the other node counts; repeats are
interleaved between the ray and local backends; ms/step is the median of
``sim.run`` wall time / steps.  Events and bytes per link class come from
``Simulator.metrics()["traffic"]`` of the last repeat, per step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spinnray.config import ClusterConfig, MachineConfig  # noqa: E402
from spinnray.machine.counters import LINK_CLASSES  # noqa: E402
from spinnray.model.network import Network  # noqa: E402
from spinnray.model.neurons import LIF, SpikeSource  # noqa: E402
from spinnray.simulator import Simulator, poisson_spikes  # noqa: E402

SRAM_BYTES = 1 << 20     # inputs of long calibrated runs exceed 128 KB; changes no timing


def log(msg: str) -> None:
    print(f"[bench_cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def small_network(seed: int = 0) -> Network:
    rng = np.random.default_rng(seed)
    net = Network(dt_ms=1.0)
    net.population("input", 100, SpikeSource())
    net.population("hidden", 200, LIF(tau_mem_ms=20.0, tau_syn_ms=5.0, v_th=1.0))
    net.population("output", 20, LIF(tau_mem_ms=20.0, tau_syn_ms=5.0, v_th=1.0))
    net.connect("input", "hidden", rng.normal(0.5, 0.2, (100, 200)), delays=1,
                mask=rng.random((100, 200)) < 0.2)
    net.connect("hidden", "hidden", rng.normal(0.0, 0.3, (200, 200)), delays=rng.integers(1, 5, (200, 200)),
                mask=rng.random((200, 200)) < 0.1)
    net.connect("hidden", "output", rng.normal(0.3, 0.1, (200, 20)), delays=1)
    return net


def pair_network() -> Network:
    """Two slices of 100 always-spiking neurons, each projecting onto the other."""
    net = Network(dt_ms=1.0)
    net.population("pop", 200, LIF(v_th=-1.0))
    mask = np.zeros((200, 200), bool)
    mask[:100, 100:] = True
    mask[100:, :100] = True
    net.connect("pop", "pop", np.zeros((200, 200)), delays=1, mask=mask)
    return net


def inputs_for(name: str, steps: int, seed: int = 1) -> dict:
    if name == "net":
        return {"input": poisson_spikes(20.0, steps, 1, 100, 1.0, np.random.default_rng(seed))}
    return {}


def build(name: str, backend: str, nodes: int) -> Simulator:
    if name == "net":
        return Simulator(small_network(), MachineConfig(pes_per_chip=2, sram_per_pe_bytes=SRAM_BYTES),
                         cores_per_population=4, backend=backend, cluster=ClusterConfig(nodes=nodes))
    return Simulator(pair_network(), MachineConfig(pes_per_chip=1, sram_per_pe_bytes=SRAM_BYTES),
                     cores_per_population=2, backend=backend, cluster=ClusterConfig(nodes=nodes))


def timed(sim: Simulator, name: str, steps: int) -> tuple[float, object]:
    x = inputs_for(name, steps)
    t = time.perf_counter()
    res = sim.run(steps, x)
    return time.perf_counter() - t, res


def calibrate(sim: Simulator, name: str, seconds: float) -> int:
    steps = 50
    while True:
        dt, _ = timed(sim, name, steps)
        if dt >= seconds / 4 or steps >= 200_000:
            return max(50, int(steps * seconds / max(dt, 1e-6)))
        steps *= 4


def measure(name: str, nodes: int, repeats: int, seconds: float, steps: int | None = None) -> dict:
    """One point; ``steps`` per run (None: calibrated on the ray backend)."""
    sims = {b: build(name, b, nodes) for b in ("local", "ray")}
    try:
        mapping = sims["ray"].mapping
        if steps is None:
            steps = calibrate(sims["ray"], name, seconds)
        else:
            timed(sims["ray"], name, steps)                     # warm-up
        timed(sims["local"], name, steps)                       # warm-up
        times = {"local": [], "ray": []}
        for r in range(repeats):
            for b in (("local", "ray") if r % 2 == 0 else ("ray", "local")):
                dt, _ = timed(sims[b], name, steps)
                times[b].append(dt / steps * 1e3)
        # One more run on each backend, for the traffic of one run and the equality check.
        deltas, results = {}, {}
        for b in ("local", "ray"):
            before = sims[b].metrics()["traffic"]
            _, results[b] = timed(sims[b], name, steps)
            after = sims[b].metrics()["traffic"]
            deltas[b] = ({k: {f: (after["by_link_class"][k][f] - before["by_link_class"][k][f]) / steps
                              for f in ("events", "bytes")} for k in LINK_CLASSES},
                         {f: (after["inter_node"][f] - before["inter_node"][f]) / steps
                          for f in ("packets", "events", "bytes")})
        for pop in results["local"].spikes:
            assert np.array_equal(results["local"].spikes[pop], results["ray"].spikes[pop]), pop
        assert deltas["local"] == deltas["ray"], "ray and local traffic counters differ"
        per_step, wire = deltas["ray"]
        rates = results["ray"].rates_hz(1.0)
        return {"workload": name, "nodes": nodes, "cores": mapping.n_cores,
                "cores_per_node": mapping.summary()["cores_per_node"], "steps": steps, "repeats": repeats,
                "ray_ms_per_step": statistics.median(times["ray"]), "local_ms_per_step": statistics.median(times["local"]),
                "ray_ms_all": times["ray"], "local_ms_all": times["local"],
                "per_step_by_link_class": per_step, "per_step_inter_node": wire, "rates_hz": rates}
    finally:
        for s in sims.values():
            s.close()


def markdown(rows: list[dict], command: str) -> str:
    out = [f"Command: `{command}`", "",
           "| workload | nodes | cores per node | ray ms/step | local ms/step | ray - local | "
           "events/step same core / same chip / same node / across nodes | bytes/step across nodes | "
           "router-to-router packets / events / bytes per step |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lc = r["per_step_by_link_class"]
        w = r["per_step_inter_node"]
        out.append(f"| {r['workload']} | {r['nodes']} | {r['cores_per_node']} | {r['ray_ms_per_step']:.3f} | "
                   f"{r['local_ms_per_step']:.3f} | {r['ray_ms_per_step'] - r['local_ms_per_step']:.3f} | "
                   + " / ".join(f"{lc[k]['events']:.1f}" for k in LINK_CLASSES)
                   + f" | {lc['across_nodes']['bytes']:.0f} | {w['packets']:.1f} / {w['events']:.1f} / "
                   f"{w['bytes']:.0f} |")
    pair = {r["nodes"]: r for r in rows if r["workload"] == "pair"}
    if 1 in pair and 2 in pair:
        d = pair[2]["ray_ms_per_step"] - pair[1]["ray_ms_per_step"]
        out += ["", f"Crossing a node (pair, 100 events per core per step): {pair[1]['ray_ms_per_step']:.3f} ms/step "
                f"with both cores on one node, {pair[2]['ray_ms_per_step']:.3f} across two: "
                f"{d:+.3f} ms per step ({d * 1e3 / 2:+.1f} us per 100-event packet that crosses)."]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="0.3 s runs, 3 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    seconds, repeats = (0.3, 3) if args.quick else (1.0, 5)
    repeats = args.repeats or repeats

    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False))
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    rows = []
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()
        log(f"3-node cluster up in {time.monotonic() - t0:.1f} s")
        steps = {}
        for name, nodes in [("net", 1), ("net", 2), ("net", 3), ("pair", 1), ("pair", 2)]:
            # the same runs on every node count: calibrated once, on one node
            rows.append(measure(name, nodes, repeats, seconds, steps.get(name)))
            r = rows[-1]
            steps[name] = r["steps"]
            log(f"{name} on {nodes} node(s): ray {r['ray_ms_per_step']:.3f} ms/step, "
                f"local {r['local_ms_per_step']:.3f} ms/step ({r['steps']} steps)")
    finally:
        ray.shutdown()
        cluster.shutdown()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    text = markdown(rows, command)
    if args.json:
        args.json.write_text(json.dumps({"command": command, "machine": platform.platform(),
                                         "cpus": os.cpu_count(), "rows": rows}, indent=1))
    print(text if args.markdown else json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
