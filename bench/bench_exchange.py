"""Time the per-step exchange on the ``ray`` backend beside the ``local`` floor.

Usage: python bench/bench_exchange.py [--quick] [--json PATH] [--markdown]

Workload (one sample, batch 1): one LIF population of N*100 neurons split over
N cores (``cores_per_population=N``), every neuron spiking at every step
(``LIF(v_th=-1.0)``: V = 0 > -1 at every step, reset to 0), so every core emits
100 spike events per step, carried by a recurrent projection pop -> pop with
weight 0.0 and delay 10 (so K up to 10 is allowed):

* ``ring``: a mask lets core i's slice project only onto core (i+1) mod N's
  slice, so the router prunes the rest and each core receives 100 events/step;
* ``all``: no mask, so each core receives N*100 events/step.

Points: both topologies at N = 2, 4, 8 with K = 1, and ring at N = 4, 8 with
K = 5, 10.  For each point both backends are built side by side, warmed up,
and the step count of a run is calibrated so a run takes about 1 s (0.3 s with
``--quick``).  The repeats are interleaved (local, ray, then ray, local, ...)
because the machine is shared and noisy; ms/step = wall time of
``sim.run(steps)`` / steps; the tables give the medians and the ratio
ray/local of the medians.  Every run is checked: all neurons spiked at every
step, and the cores' counters show the expected events received per step.

The cores' SRAM budget is raised to 1 MiB (``MachineConfig(sram_per_pe_bytes=
1 << 20)``): the dense (N*100, 100) float32 incoming weights of a slice exceed
the 128 KB of a SpiNNaker2 PE from N = 4 up.  That changes no timing, only the
budget check.
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

from spinnray.backends import ensure_ray  # noqa: E402
from spinnray.config import MachineConfig  # noqa: E402
from spinnray.model.network import Network  # noqa: E402
from spinnray.model.neurons import LIF  # noqa: E402
from spinnray.simulator import Simulator  # noqa: E402

EVENTS_PER_CORE = 100
DELAY = 10
SRAM_BYTES = 1 << 20

# The targets (2-vCPU machines): ray ms/step at K = 1.
TARGET_MS = {4: 0.6, 8: 1.5}
PROTOTYPE_MS = {2: "0.19-0.23", 4: "0.37-0.59", 8: "0.83-1.37"}   # DESIGN.md section 4
DESIGN_FLOOR_MS = {2: 0.033, 4: 0.093, 8: 0.33}


def log(msg: str) -> None:
    print(f"[bench_exchange {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_network(n_cores: int, topology: str) -> Network:
    """One always-spiking LIF population of n_cores*100 neurons, projecting onto itself."""
    size = n_cores * EVENTS_PER_CORE
    net = Network(dt_ms=1.0)
    pop = net.population("pop", size, LIF(v_th=-1.0))
    mask = None
    if topology == "ring":
        mask = np.zeros((size, size), bool)
        for i in range(n_cores):
            j = (i + 1) % n_cores
            mask[i * EVENTS_PER_CORE:(i + 1) * EVENTS_PER_CORE, j * EVENTS_PER_CORE:(j + 1) * EVENTS_PER_CORE] = True
    elif topology != "all":
        raise ValueError(f"topology {topology!r}: expected 'ring' or 'all'")
    net.connect(pop, pop, weights=np.zeros((size, size)), delays=DELAY, mask=mask)
    return net


def timed_run(sim: Simulator, steps: int) -> float:
    """Wall time of one ``sim.run(steps)`` in seconds; checks that every neuron spiked every step."""
    t0 = time.perf_counter()
    res = sim.run(steps)
    dt = time.perf_counter() - t0
    spikes = res.spikes["pop"]
    if spikes.shape[0] != steps or not spikes.all():
        raise RuntimeError(f"{sim.backend_name}: expected every neuron to spike at every step "
                           f"(got a spike fraction of {spikes.mean():.4f})")
    return dt


def received_per_core_step(sim: Simulator) -> float:
    """Mean spike events received per core per step, from the cores' own counters."""
    cores, _ = sim.reports()
    return statistics.mean(c["counters"]["spike_events_received"] / c["counters"]["steps"] for c in cores)


def calibrate(sim: Simulator, k: int, target_s: float) -> int:
    """A step count (a multiple of 10 >= k) for which one run takes about ``target_s``."""
    steps = 100
    while True:
        dt = timed_run(sim, steps)
        if dt >= 0.1 or steps >= 20_000:
            break
        steps *= 4
    want = target_s * steps / dt
    return int(min(50_000, max(10 * k, round(want / 10) * 10)))


def measure_point(topology: str, n: int, k: int, repeats: int, target_s: float) -> dict:
    net = build_network(n, topology)
    machine = MachineConfig(sram_per_pe_bytes=SRAM_BYTES)
    sims = {}
    try:
        for name in ("local", "ray"):
            sims[name] = Simulator(net, machine, cores_per_population=n, exchange_interval=k, backend=name)
        steps = {}
        for name, sim in sims.items():
            timed_run(sim, 10 * k)                       # warm-up (imports, sockets, caches)
            steps[name] = calibrate(sim, k, target_s)
            timed_run(sim, steps[name])                  # warm-up at the measured length
        times = {"local": [], "ray": []}
        for r in range(repeats):
            order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
            for name in order:
                times[name].append(timed_run(sims[name], steps[name]) / steps[name] * 1e3)
        # fixed cost of one run (Ray calls, strict report check): median of a few 1-round runs
        fixed = {name: statistics.median(timed_run(sim, k) * 1e3 for _ in range(5)) for name, sim in sims.items()}
        expect = EVENTS_PER_CORE if topology == "ring" else n * EVENTS_PER_CORE
        received = {name: received_per_core_step(sim) for name, sim in sims.items()}
        for name, got in received.items():
            # every round delivers what was sent in it, so every step counts `expect` events per core
            if abs(got - expect) > 1e-9:
                raise RuntimeError(f"{name} {topology} N={n} K={k}: cores received {got} events/step, "
                                   f"expected {expect}")
    finally:
        for sim in sims.values():
            sim.close()
    med = {name: statistics.median(v) for name, v in times.items()}
    return {
        "topology": topology, "n_cores": n, "k": k, "events_sent_per_core_step": EVENTS_PER_CORE,
        "events_received_per_core_step": expect, "steps": steps, "repeats": repeats,
        "ms_per_step": times, "median_ms_per_step": med,
        "ratio_ray_over_local": med["ray"] / med["local"],
        "exchange_overhead_ms_per_step": med["ray"] - med["local"],
        "fixed_ms_per_run_of_one_round": fixed,
    }


def points() -> list[tuple[str, int, int]]:
    pts = [("ring", n, 1) for n in (2, 4, 8)] + [("all", n, 1) for n in (2, 4, 8)]
    pts += [("ring", n, k) for n in (4, 8) for k in (5, 10)]
    return pts


def find(results, topology, n, k):
    return next(r for r in results if (r["topology"], r["n_cores"], r["k"]) == (topology, n, k))


def evaluate(results: list[dict]) -> list[dict]:
    """Each target of the issue: met or not, with the numbers behind it."""
    verdicts = []
    for topology in ("ring", "all"):
        for n, limit in TARGET_MS.items():
            got = find(results, topology, n, 1)["median_ms_per_step"]["ray"]
            verdicts.append({"target": f"ray <= {limit} ms/step at N={n}, K=1 ({topology})",
                             "value": round(got, 3), "met": got <= limit})
    for n in (4, 8):
        base = find(results, "ring", n, 1)
        for k in (5, 10):
            r = find(results, "ring", n, k)
            speedup = base["median_ms_per_step"]["ray"] / r["median_ms_per_step"]["ray"]
            ex1, exk = base["exchange_overhead_ms_per_step"], r["exchange_overhead_ms_per_step"]
            ex_speedup = ex1 / exk if exk > 0 else None   # None: ray no slower than local at K
            # "about 1/K": at least half of the ideal speedup K
            verdicts.append({"target": f"ray ms/step falls ~1/K at N={n} (ring), K=1 -> {k}",
                             "value": round(speedup, 2), "ideal": k,
                             "exchange_overhead_speedup": None if ex_speedup is None else round(ex_speedup, 2),
                             "met": speedup >= k / 2})
    return verdicts


def markdown(results: list[dict], verdicts: list[dict], command: str, meta: dict) -> str:
    out = [f"### `{command}`", "",
           f"{meta['when']}, {meta['cpus']} CPUs, Python {meta['python']}, ray {meta['ray']}, "
           f"numpy {meta['numpy']}; {meta['repeats']} interleaved repeats per point, medians; "
           f"~{meta['target_s']} s per run; batch 1, {EVENTS_PER_CORE} events sent per core per step, "
           f"delay {DELAY}, SRAM budget raised to {SRAM_BYTES >> 10} KiB per core; 1-min load average "
           f"{meta['load_average_1min']['start']} at start, {meta['load_average_1min']['end']} at end.", ""]
    out += ["#### K = 1: ms per step", "",
            "| topology | N | events recv/core/step | local ms/step | ray ms/step | ray/local "
            "| ray - local | target | prototype (DESIGN 4) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for topology in ("ring", "all"):
        for n in (2, 4, 8):
            r = find(results, topology, n, 1)
            m = r["median_ms_per_step"]
            tgt = f"<= {TARGET_MS[n]}" if n in TARGET_MS else "-"
            out.append(f"| {topology} | {n} | {r['events_received_per_core_step']} | {m['local']:.3f} | "
                       f"{m['ray']:.3f} | {r['ratio_ray_over_local']:.2f} | "
                       f"{r['exchange_overhead_ms_per_step']:.3f} | {tgt} | {PROTOTYPE_MS[n]} |")
    out += ["", "In-process floor measured for the prototype (DESIGN.md 4): "
            + ", ".join(f"N={n}: {v} ms" for n, v in DESIGN_FLOOR_MS.items()) + ".", ""]
    out += ["#### Exchange interval K (ring): ms per step", "",
            "| N | K | local ms/step | ray ms/step | ray/local | ray - local | local speedup vs K=1 "
            "| ray speedup vs K=1 (ideal K) |",
            "|---|---|---|---|---|---|---|---|"]
    for n in (4, 8):
        base = find(results, "ring", n, 1)["median_ms_per_step"]["ray"]
        base_local = find(results, "ring", n, 1)["median_ms_per_step"]["local"]
        for k in (1, 5, 10):
            r = find(results, "ring", n, k)
            m = r["median_ms_per_step"]
            out.append(f"| {n} | {k} | {m['local']:.3f} | {m['ray']:.3f} | {r['ratio_ray_over_local']:.2f} | "
                       f"{r['exchange_overhead_ms_per_step']:.3f} | {base_local / m['local']:.2f} | "
                       f"{base / m['ray']:.2f} ({k}) |")
    out += ["", "#### Targets", "", "| target | measured | met |", "|---|---|---|"]
    for v in verdicts:
        ex = v.get("exchange_overhead_speedup")
        ex = "ray no slower than local at this K" if ex is None else f"ray - local part: {ex}x"
        value = f"{v['value']} ms/step" if "ideal" not in v else \
            f"speedup {v['value']}x (ideal {v['ideal']}x; {ex})"
        out.append(f"| {v['target']} | {value} | {'yes' if v['met'] else '**no**'} |")
    out += ["", "1/K is counted as met when the ray speedup is at least K/2.  The local column is the "
            "in-process floor (compute + codec + routing, no transport) in the same run.", ""]
    return "\n".join(out)


def plain(results: list[dict], verdicts: list[dict]) -> str:
    lines = [f"{'topology':8} {'N':>2} {'K':>3} {'local ms':>9} {'ray ms':>8} {'ray/local':>9} {'fixed ray ms/run':>16}"]
    for r in results:
        m = r["median_ms_per_step"]
        lines.append(f"{r['topology']:8} {r['n_cores']:>2} {r['k']:>3} {m['local']:>9.3f} {m['ray']:>8.3f} "
                     f"{r['ratio_ray_over_local']:>9.2f} {r['fixed_ms_per_run_of_one_round']['ray']:>16.1f}")
    lines.append("")
    for v in verdicts:
        lines.append(f"{'MET    ' if v['met'] else 'MISSED '} {v['target']}: {v['value']}"
                     + (f" (ideal {v['ideal']})" if "ideal" in v else " ms/step"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats of ~0.3 s runs (a smoke run)")
    ap.add_argument("--json", metavar="PATH", help="write every number to PATH")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables for bench/RESULTS.md")
    args = ap.parse_args(argv)
    repeats, target_s = (3, 0.3) if args.quick else (7, 1.0)
    command = shlex.join(["python", "bench/bench_exchange.py", *(sys.argv[1:] if argv is None else argv)])

    import ray

    load_start = os.getloadavg()
    log(f"starting Ray (embedded, num_cpus=2); load average {load_start[0]:.2f}")
    ensure_ray(None, num_cpus=2)
    results = []
    try:
        pts = points()
        for i, (topology, n, k) in enumerate(pts, 1):
            log(f"[{i}/{len(pts)}] {topology} N={n} K={k}: building, warming up, {repeats} repeats")
            r = measure_point(topology, n, k, repeats, target_s)
            m = r["median_ms_per_step"]
            log(f"[{i}/{len(pts)}] {topology} N={n} K={k}: local {m['local']:.3f} ms/step, "
                f"ray {m['ray']:.3f} ms/step, ratio {r['ratio_ray_over_local']:.2f} "
                f"(steps local {r['steps']['local']}, ray {r['steps']['ray']})")
            results.append(r)
    finally:
        ray.shutdown()
    verdicts = evaluate(results)
    meta = {"when": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "python": platform.python_version(),
            "ray": ray.__version__, "numpy": np.__version__, "repeats": repeats, "target_s": target_s,
            "command": command, "sram_per_pe_bytes": SRAM_BYTES,
            "load_average_1min": {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)}}
    if args.markdown:
        print(markdown(results, verdicts, command, meta))
    else:
        print(plain(results, verdicts))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results, "targets": verdicts}, indent=2))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
