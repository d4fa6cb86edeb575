"""Strong and weak scaling of the two learning schemes over cores and 1-3
cluster nodes, and the time from a killed core to resumed training.

Usage (the machine is shared: run it niced)::

    nice -n 10 python bench/bench_scaling.py [--quick] [--parts strong_eventprop,strong_eprop,weak,recovery]
        [--repeats N] [--json PATH] [--markdown] [--plot bench/scaling.png]
    python bench/bench_scaling.py --from-json PATH [--plot PATH]     # tables and plot of a saved run

Like ``bench/bench_cluster.py`` it starts a 3-node ``ray.cluster_utils.Cluster``
on this machine (every node a raylet of its own, 1 CPU each; the actors take
``num_cpus=0``), so "nodes" are processes of one host over loopback TCP, all
sharing the host's CPUs: what scales here is the emulator's own overhead
(more actors, more routers, rounds kept in lockstep), never the compute
available.  On a 2-vCPU machine no configuration can run more than 2x faster
than one core, whatever the number of emulated cores or nodes.

Machine: ``pes_per_chip = 1`` (every core its own chip), so the chips, hence
the cores, spread over the nodes in near-equal contiguous blocks
(:func:`spinnray.mapping.place.assign_nodes`); the ``same_chip`` link class is
therefore empty by construction and ``same_node`` means "another core of this
node".  SRAM per core is raised to 16 MiB (lockstep batches of 32 do not fit
128 KB); it changes no timing.

1. Strong scaling (fixed problem, more cores / nodes):

   * EventProp: 5-200-3 LIF network on Yin-Yang, T = 100 steps of 0.5 ms,
     mini-batch 32, R replicas in {1, 2, 3} (each takes 32 / R samples), the
     hidden layer on c cores in {1, 2, 4} per replica (input and output on
     one core each); time per training sample = ``train_batch`` wall / 32.
   * e-prop: 80-120-12 ALIF network (Rostami et al.), T = 100 steps of 1 ms,
     random analog input, hidden on c cores in {1, 3, 6, 12} (+ 1 readout
     core), batch 1 and 32; ms per emulated step = ``train_batch`` wall / T.

2. Weak scaling (work per core fixed): e-prop with 10 hidden neurons per
   hidden core (1, 3, 6, 12 cores = 10, 30, 60, 120 hidden), batch 1 and 32,
   on one node and on three; EventProp with a
   fixed shard of 16 samples per replica (R = 1, 2, 3 at batch 16 R, 2 hidden
   cores per replica), on one node and on R nodes (one replica per node).

The learning rate is 0 in parts 1 and 2 (e-prop: 1e-12, it refuses 0; Adam
steps are about lr, far below float32 resolution of the weights; EventProp
also with its weight bump off):
every mini-batch does the full work (forward, backward, gradient reduction,
Adam), but the weights stay the initial ones, so the activity, hence the
work and the traffic, is the same in every repeat and every configuration
(with a real learning rate, repeated online steps on one sample changed the
e-prop hidden activity 30-fold during a run).

Every point builds one ``local`` trainer and one ``ray`` trainer per node
count, warms each up with one mini-batch, then runs ``--repeats`` interleaved
rounds (the order of the trainers rotates each round); each measurement is
``n`` mini-batches, ``n`` chosen from the warm-up so that it lasts about 1 s
(0.4 s with ``--quick``) on the slowest trainer; the median is reported.
Events and bytes per link class come from ``sim.metrics()["traffic"]``
(``by_link_class`` and ``inter_node``) around one more mini-batch on each
trainer, per training sample; the ray and local counters are checked equal
(same mapping on one node), and the sum over classes is checked equal over
node counts.  The gradient reduction of EventProp goes through the driver
(``gradients`` gathered, sums sent back with ``apply``): those bytes are not
router traffic and are given separately (``driver bytes/batch``); e-prop's
host-written analog input (every hidden core gets the whole input) likewise.

3. Recovery: e-prop (tiny cue network, as in ``tests/integration/test_checkpoint.py``)
   and EventProp (two replicas, hidden on two cores) run through
   ``spinnray.experiments.runner.run`` with ``backend=ray`` and ``checkpoint.every=2``;
   a patched ``train_batch`` kills the first hidden core actor at the 5th
   mini-batch.  Timestamps (``time.perf_counter``) taken by wrappers of the
   library's own methods, without changing them: the kill; the error leaving
   ``train_batch`` (*detect*); the old trainer's ``close`` (*teardown*); the
   new trainer's ``__init__`` (*rebuild*: mapping, new actors and routers);
   ``Checkpointer.restore`` (*restore*); the end of the first ``train_batch``
   after it (*first batch*).  ``--repeats`` runs each (3 by default), median
   and range.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spinnray.config import ClusterConfig, MachineConfig  # noqa: E402
from spinnray.machine.counters import LINK_CLASSES  # noqa: E402

SRAM = 1 << 24
EP_STEPS, EP_DT, EP_HIDDEN, EP_BATCH = 100, 0.5, 200, 32
EPROP_STEPS, N_IN, N_OUT = 100, 80, 12


def log(msg: str) -> None:
    print(f"[bench_scaling {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def machine() -> MachineConfig:
    return MachineConfig(pes_per_chip=1, sram_per_pe_bytes=SRAM, dtype="float32")


# --------------------------------------------------------------------------- workloads

class EventPropWork:
    """EventProp trainer factory and one fixed mini-batch of Yin-Yang."""

    kind = "eventprop"

    def __init__(self, replicas: int, hidden_cores: int, batch: int, hidden: int = EP_HIDDEN):
        from spinnray.data.yinyang import YinYangConfig, encode_inputs, yin_yang
        from trainers import EventPropConfig, FeedForwardConfig, yinyang_net

        self.replicas, self.hidden_cores, self.batch, self.hidden = replicas, hidden_cores, batch, hidden
        self.net = yinyang_net(FeedForwardConfig(steps=EP_STEPS, dt_ms=EP_DT, hidden=hidden), seed=0)
        # lr = 0 and no weight bump: the same arithmetic every mini-batch (Adam still runs), but the
        # weights, hence the activity and the work, stay those of the initial network in every repeat
        # and every configuration
        self.learn = EventPropConfig(batch_size=batch, lr=0.0, bump=0.0)
        x, self.y = yin_yang(batch, 42)
        self.x = encode_inputs(x, YinYangConfig(), EP_STEPS, EP_DT)
        self.label = f"EventProp R={replicas} hidden cores={hidden_cores} B={batch}"

    def make(self, backend: str, nodes: int):
        from trainers import eventprop_trainer

        return eventprop_trainer(self.net, self.learn, machine=machine(),
                                 cores_per_population={"input": 1, "hidden": self.hidden_cores},
                                 replicas=self.replicas, backend=backend, cluster=ClusterConfig(nodes=nodes))

    def step(self, tr) -> None:
        tr.train_batch(self.x, self.y)

    def driver_bytes(self, tr) -> int:
        """Bytes the driver gathers (gradients) and sends back (their sums) per mini-batch."""
        from spinnray.rules.learning import LearningCore

        ids = [pl.core_id for pl in tr.learners]
        grads = tr.sim.call(LearningCore.gradients, cores=ids)
        return 2 * sum(g.nbytes for gs in grads.values() for g in gs)


class EPropWork:
    """e-prop trainer factory and one fixed batch of random analog input."""

    kind = "eprop"

    def __init__(self, hidden_cores: int, batch: int, hidden: int = 120):
        from trainers import EPropConfig, RecurrentALIFConfig, eprop_net

        self.hidden_cores, self.batch, self.hidden = hidden_cores, batch, hidden
        self.net = eprop_net(RecurrentALIFConfig(hidden=hidden, w_in_scale=4.0, w_out_scale=10.0),
                             N_IN, N_OUT, seed=0)
        # e-prop refuses lr = 0; 1e-12 moves no float32 weight (Adam steps are ~lr): see EventPropWork
        self.learn = EPropConfig(batch_size=batch, lr=1e-12)
        rng = np.random.default_rng(1)
        self.x = rng.normal(0, 0.5, (EPROP_STEPS, batch, N_IN)).astype(np.float32)
        self.y = rng.integers(0, N_OUT, batch)
        self.label = f"e-prop 80-{hidden}-12 hidden cores={hidden_cores} B={batch}"

    def make(self, backend: str, nodes: int):
        from trainers import eprop_trainer

        return eprop_trainer(self.net, self.learn, machine=machine(), hidden_cores=self.hidden_cores,
                             backend=backend, cluster=ClusterConfig(nodes=nodes))

    def step(self, tr) -> None:
        tr.train_batch(self.x, self.y)

    def driver_bytes(self, tr) -> int:
        """Host-written analog input per batch: every hidden core gets all of it."""
        return len(tr.sim.mapping.cores_of("hidden")) * self.x.nbytes


def n_cores_of(work) -> int:
    if work.kind == "eventprop":
        return work.replicas * (work.hidden_cores + 2)
    return work.hidden_cores + 1


def traffic_delta(before: dict, after: dict, per: float) -> tuple[dict, dict]:
    lc = {k: {f: (after["by_link_class"][k][f] - before["by_link_class"][k][f]) / per for f in ("events", "bytes")}
          for k in LINK_CLASSES}
    wire = {f: (after["inter_node"][f] - before["inter_node"][f]) / per for f in ("packets", "events", "bytes")}
    return lc, wire


def measure(work, node_counts: list[int], repeats: int, seconds: float) -> list[dict]:
    """One configuration: local (1 node) and ray on each node count, interleaved; a row per trainer."""
    labels = ["local"] + [f"ray{n}" for n in node_counts]
    trainers: dict = {}
    load_start = load1()
    try:
        for lab in labels:
            t = time.perf_counter()
            trainers[lab] = work.make("local", 1) if lab == "local" else work.make("ray", int(lab[3:]))
            build_s = time.perf_counter() - t
            t = time.perf_counter()
            work.step(trainers[lab])                                   # warm-up
            trainers[lab].warm_s = time.perf_counter() - t
            trainers[lab].build_s = build_s
        n = max(1, math.ceil(seconds / max(tr.warm_s for tr in trainers.values())))
        times = {lab: [] for lab in labels}
        for r in range(repeats):
            order = labels[r % len(labels):] + labels[:r % len(labels)]
            for lab in order:
                t = time.perf_counter()
                for _ in range(n):
                    work.step(trainers[lab])
                times[lab].append((time.perf_counter() - t) / n)
        per_sample = work.batch
        traffic = {}
        for lab in labels:
            before = trainers[lab].sim.metrics()["traffic"]
            work.step(trainers[lab])
            m = trainers[lab].sim.metrics()
            traffic[lab] = traffic_delta(before, m["traffic"], per_sample) + (m["mapping"]["cores_per_node"],)
        driver = work.driver_bytes(trainers["local"])
        n_cores = trainers["local"].sim.mapping.n_cores
    finally:
        for tr in trainers.values():
            tr.close()
    ok_local = traffic["local"][:2] == traffic[f"ray{node_counts[0]}"][:2] if node_counts[0] == 1 else None
    totals = {lab: round(sum(v["events"] for v in traffic[lab][0].values()), 6) for lab in labels}
    ok_nodes = len(set(totals.values())) == 1
    if ok_local is False or not ok_nodes:
        log(f"WARNING {work.label}: traffic differs (ray vs local equal: {ok_local}; totals {totals})")
    rows = []
    for lab in labels:
        nodes = 1 if lab == "local" else int(lab[3:])
        med = statistics.median(times[lab])
        row = {"scheme": work.kind, "label": work.label, "backend": "local" if lab == "local" else "ray",
               "nodes": nodes, "cores": n_cores, "cores_per_node": traffic[lab][2], "batch": work.batch,
               "hidden": work.hidden, "hidden_cores": work.hidden_cores,
               "replicas": getattr(work, "replicas", 1), "batches_per_measurement": n, "repeats": repeats,
               "s_per_batch": med, "s_per_batch_all": times[lab], "build_s": trainers[lab].build_s,
               "ms_per_sample": med / work.batch * 1e3,
               "per_sample_by_link_class": traffic[lab][0], "per_sample_inter_node": traffic[lab][1],
               "driver_bytes_per_batch": driver, "traffic_ray_equals_local": ok_local,
               "traffic_total_equal_over_nodes": ok_nodes, "load1_start": load_start, "load1_end": load1()}
        if work.kind == "eprop":
            row["ms_per_step"] = med / EPROP_STEPS * 1e3
            row["ms_per_sample_step"] = row["ms_per_step"] / work.batch
        rows.append(row)
    return rows


def describe(rows: list[dict]) -> str:
    r0 = rows[0]
    key = "ms_per_step" if r0["scheme"] == "eprop" else "ms_per_sample"
    return f"{r0['label']} ({r0['cores']} cores): " + ", ".join(
        f"{r['backend']}{'' if r['backend'] == 'local' else r['nodes']} {r[key]:.2f}" for r in rows) + \
        f" {'ms/step' if key == 'ms_per_step' else 'ms/sample'} (load {r0['load1_start']})"


# --------------------------------------------------------------------------- recovery

def recovery_cfg(kind: str, out: Path):
    from spinnray.config import RunConfig, from_dict

    common = {"seed": 3, "backend": "ray", "progress": False, "report": False,
              "checkpoint": {"every": 2, "dir": str(out / "checkpoints")}}
    if kind == "eprop":
        d = {"kind": "eprop", "parallel": {"cores_per_population": 2},
             "network": {"hidden": 10, "tau_mem_ms": 20.0, "tau_adapt_ms": 500.0, "beta": 5.0, "v_th": 0.6,
                         "tau_out_ms": 20.0, "w_in_scale": 20.0, "w_out_scale": 10.0},
             "data": {"name": "cue", "train_size": 24, "test_size": 8, "n_cues": 3, "total_ms": 700.0},
             "learning": {"epochs": 1, "batch_size": 4, "lr": 0.01, "surrogate": "triangle", "gamma": 0.3}}
    else:
        d = {"kind": "eventprop", "parallel": {"cores_per_population": 2, "replicas": 2},
             "network": {"hidden": 20, "steps": 60, "dt_ms": 0.5},
             "data": {"train_size": 24, "test_size": 8},
             "learning": {"epochs": 1, "batch_size": 4, "lr": 0.01}}
    return from_dict(RunConfig, {**d, **common})


def recovery(kind: str, kill_at: int = 5, mid_batch: bool = False) -> dict:
    """One run that loses a hidden core actor at mini-batch ``kill_at``; the timeline.

    ``mid_batch``: kill it from a timer thread half a normal mini-batch after
    that mini-batch started (so the other cores are waiting in a round),
    instead of just before it starts."""
    import threading

    import ray

    from spinnray.experiments import checkpoint
    from spinnray.experiments.runner import run
    from spinnray.experiments.trainer import Trainer

    cls = Trainer          # one trainer class for every on-chip rule (was EPropTrainer / EventPropTrainer)
    ev: list[tuple] = []
    calls = {"n": 0}
    orig = {"train_batch": cls.train_batch, "close": cls.close, "__init__": cls.__init__}
    orig_restore, orig_save = checkpoint.Checkpointer.restore, checkpoint.Checkpointer.save

    def train_batch(self, x, y):
        calls["n"] += 1
        if calls["n"] == kill_at:
            cid = self.sim.mapping.cores_of("hidden")[0].core_id
            actor = self.sim.backend.actors[cid]

            def kill():
                ev.append(("kill", time.perf_counter(), cid))
                ray.kill(actor)
            if mid_batch:
                normal = [e[3] for e in ev if e[0] == "batch"]
                threading.Timer(0.5 * statistics.median(normal), kill).start()
            else:
                kill()
        t = time.perf_counter()
        try:
            res = orig["train_batch"](self, x, y)
        except BaseException as e:
            ev.append(("error", time.perf_counter(), type(e).__name__, str(e)[:300]))
            raise
        ev.append(("batch", time.perf_counter(), calls["n"], time.perf_counter() - t))
        return res

    def wrap(name, fn):
        def inner(*a, **k):
            ev.append((name + "_start", time.perf_counter()))
            out = fn(*a, **k)
            ev.append((name + "_end", time.perf_counter()))
            return out
        return inner

    cls.train_batch = train_batch
    cls.close = wrap("close", orig["close"])
    cls.__init__ = wrap("init", orig["__init__"])
    checkpoint.Checkpointer.restore = wrap("restore", orig_restore)
    checkpoint.Checkpointer.save = wrap("save", orig_save)
    load_start = load1()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
            t0 = time.perf_counter()
            metrics = run(recovery_cfg(kind, Path(tmp)), Path(tmp) / "run", "bench")
            wall = time.perf_counter() - t0
    finally:
        for name, fn in orig.items():
            setattr(cls, name, fn)
        checkpoint.Checkpointer.restore, checkpoint.Checkpointer.save = orig_restore, orig_save

    def first(name, after):
        return next(e for e in ev if e[0] == name and e[1] >= after)

    t_kill = first("kill", 0)[1]
    err = first("error", t_kill)
    close_s, close_e = first("close_start", t_kill)[1], first("close_end", t_kill)[1]
    init_s, init_e = first("init_start", close_e)[1], first("init_end", close_e)[1]
    rest_s, rest_e = first("restore_start", init_e)[1], first("restore_end", init_e)[1]
    fb = first("batch", rest_e)
    normal = [e[3] for e in ev if e[0] == "batch" and e[1] < t_kill]
    saves, starts = [], {}
    for e in ev:
        if e[0] == "save_start":
            starts["s"] = e[1]
        elif e[0] == "save_end":
            saves.append(e[1] - starts["s"])
    init0 = [e[1] for e in ev if e[0] in ("init_start", "init_end") and e[1] < t_kill]
    return {"kind": kind, "mode": "mid-batch" if mid_batch else "before batch", "restarts": metrics["restarts"], "cores": metrics["cores"], "kill_at_batch": kill_at,
            "error": err[2] + ": " + err[3],
            "total_s": fb[1] - t_kill,
            "detect_s": err[1] - t_kill, "handle_s": close_s - err[1], "teardown_s": close_e - close_s,
            "rebuild_s": init_e - init_s, "restore_s": rest_e - rest_s, "first_batch_s": fb[3],
            "gaps_s": (init_s - close_e) + (rest_s - init_e) + (fb[1] - fb[3] - rest_e),
            "normal_batch_s": statistics.median(normal) if normal else None,
            "initial_build_s": init0[1] - init0[0] if len(init0) == 2 else None,
            "checkpoint_save_s": statistics.median(saves) if saves else None,
            "run_wall_s": wall, "load1_start": load_start, "load1_end": load1()}


# --------------------------------------------------------------------------- output

def fmt_lc(r: dict) -> str:
    lc = r["per_sample_by_link_class"]
    return " / ".join(f"{lc[k]['events']:.0f}" for k in LINK_CLASSES)


def strong_table(rows: list[dict], scheme: str) -> list[str]:
    rows = [r for r in rows if r["scheme"] == scheme and r["part"] == "strong"]
    if not rows:
        return []
    ep = scheme == "eventprop"
    unit = "ms/sample" if ep else "ms/step"
    key = "ms_per_sample" if ep else "ms_per_step"
    out = [f"| {'R' if ep else 'B'} | hidden cores | cores | nodes (cores per node) | ray {unit} | local {unit} | "
           f"ray / local | ray speed-up vs 1 hidden core |{' ray speed-up vs R = 1 |' if ep else ''} events/sample same core / chip / node / across | "
           f"bytes/sample across nodes | router-to-router packets / events / bytes per sample | "
           f"{'driver reduce' if ep else 'host input'} bytes/batch | ray trainer build s | load |",
           "|---" * (15 if ep else 14) + "|"]
    group = "replicas" if ep else "batch"
    local = {(r[group], r["hidden_cores"]): r for r in rows if r["backend"] == "local"}
    ray_rows = [r for r in rows if r["backend"] == "ray"]
    base = {(r[group], r["nodes"]): r for r in ray_rows if r["hidden_cores"] == 1}
    base_r = {(r["hidden_cores"], r["nodes"]): r for r in ray_rows if r[group] == 1}
    for r in sorted(ray_rows, key=lambda r: (r[group], r["hidden_cores"], r["nodes"])):
        lo = local[(r[group], r["hidden_cores"])]
        b = base.get((r[group], r["nodes"]))
        w = r["per_sample_inter_node"]
        speedup = f"{b[key] / r[key]:.2f}" if b else "-"
        if ep:
            br = base_r.get((r["hidden_cores"], r["nodes"]))
            speedup += f" | {br[key] / r[key]:.2f}" if br else " | -"
        out.append(f"| {r[group]} | {r['hidden_cores']} | {r['cores']} | {r['nodes']} ({r['cores_per_node']}) | "
                   f"{r[key]:.2f} | {lo[key]:.2f} | {r[key] / lo[key]:.2f} | {speedup} | {fmt_lc(r)} | "
                   f"{r['per_sample_by_link_class']['across_nodes']['bytes']:.0f} | "
                   f"{w['packets']:.1f} / {w['events']:.0f} / {w['bytes']:.0f} | {r['driver_bytes_per_batch']:,} | "
                   f"{r['build_s']:.1f} | {r['load1_start']} |")
    return out


def weak_table(rows: list[dict]) -> list[str]:
    """Ideal weak scaling (a CPU per core): the time per step (e-prop) or per
    mini-batch (EventProp, batch 16 R) stays that of the smallest configuration."""
    rows = [r for r in rows if r["part"] == "weak"]
    if not rows:
        return []
    out = ["| scheme | work per core | cores | nodes | ray | local | ray / local | ray vs smallest on 1 node | "
           "events/sample same core / chip / node / across | router-to-router bytes/sample | load |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scheme in ("eprop", "eventprop"):
        sr = [r for r in rows if r["scheme"] == scheme]
        ep = scheme == "eventprop"

        def t(r, ep=ep):       # ms per e-prop step / per EventProp mini-batch
            return r["s_per_batch"] * 1e3 if ep else r["ms_per_step"]
        unit = "ms/batch" if ep else "ms/step"
        local = {(r["batch"], r["hidden_cores"], r["replicas"]): r for r in sr if r["backend"] == "local"}
        ray_rows = sorted([r for r in sr if r["backend"] == "ray"],
                          key=lambda r: (r["nodes"] != 1, r["batch"] if not ep else 0, r["cores"], r["nodes"]))
        smallest = {}
        for r in sorted(ray_rows, key=lambda r: r["cores"]):
            if r["nodes"] == 1:
                smallest.setdefault(r["batch"] if not ep else 0, r)
        for r in ray_rows:
            lo = local[(r["batch"], r["hidden_cores"], r["replicas"])]
            s = smallest[r["batch"] if not ep else 0]
            work = (f"10 hidden/core, B={r['batch']}, hidden {r['hidden']}" if not ep else
                    f"16 samples/replica, R={r['replicas']}, B={r['batch']}")
            extra = f" ({r['ms_per_sample']:.2f} ms/sample)" if ep else ""
            out.append(f"| {scheme} | {work} | {r['cores']} | {r['nodes']} | {t(r):.2f} {unit}{extra} | "
                       f"{t(lo):.2f} | {t(r) / t(lo):.2f} | {t(r) / t(s):.2f} | {fmt_lc(r)} | "
                       f"{r['per_sample_inter_node']['bytes']:.0f} | {r['load1_start']} |")
    return out


def recovery_table(rec: list[dict]) -> list[str]:
    if not rec:
        return []
    out = ["| scheme | runs | kill -> first batch done (s) | detect | handling | teardown | rebuild | restore | "
           "first batch | other | a normal batch | initial build | checkpoint write |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, mode in [(k, m) for m in ("before batch", "mid-batch") for k in ("eprop", "eventprop")]:
        rs = [r for r in rec if r["kind"] == kind and r["mode"] == mode]
        if not rs:
            continue

        def cell(k, rs=rs):
            v = [r[k] for r in rs if r[k] is not None]
            if not v:
                return "-"
            if len(v) == 1:
                return f"{v[0]:.3f}"
            return f"{statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})"
        out.append(f"| {kind} ({rs[0]['cores']} cores), kill {mode} | {len(rs)} | " + " | ".join(
            cell(k) for k in ("total_s", "detect_s", "handle_s", "teardown_s", "rebuild_s", "restore_s",
                              "first_batch_s", "gaps_s", "normal_batch_s", "initial_build_s",
                              "checkpoint_save_s")) + " |")
    return out


def markdown(res: dict) -> str:
    out = [f"Command: `{res['command']}`", "",
           f"{res['started']} to {res['finished']}; {res['machine']}, {res['cpus']} CPUs; 1-minute load average "
           f"{res['load1_start']} at start, {res['load1_end']} at end (per point in the tables); "
           f"{res['repeats']} interleaved repeats, medians.", ""]
    t = strong_table(res["rows"], "eventprop")
    if t:
        out += ["EventProp, strong scaling (5-200-3, T = 100 x 0.5 ms, mini-batch 32 shared by R replicas; "
                "time per training sample = train_batch wall / 32):", ""] + t + [""]
    t = strong_table(res["rows"], "eprop")
    if t:
        out += ["e-prop, strong scaling (80-120-12 ALIF, T = 100 x 1 ms; ms per emulated step = train_batch "
                "wall / 100, for the whole batch B; per sample-step divide by B):", ""] + t + [""]
    t = weak_table(res["rows"])
    if t:
        out += ["Weak scaling (work per core fixed; time per e-prop step / per EventProp mini-batch of 16 R; "
                "'ray vs smallest on 1 node' = that time over the smallest configuration's on one node, "
                "ideal 1.00 with one CPU per core):", ""] + t + [""]
    t = recovery_table(res["recovery"])
    if t:
        out += ["Recovery from a killed hidden core actor (backend ray, one node, checkpoint.every = 2; the actor "
                "is killed just before mini-batch 5 starts, or half a normal mini-batch after it started; "
                "seconds, median (range)):", ""] + t + [""]
    return "\n".join(out)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    fig, axes = plt.subplots(2, 4, figsize=(17, 8))
    colors = {1: "C0", 2: "C1", 3: "C2"}

    def lines(ax, sel, x, key, title, ylabel):
        for n in (1, 2, 3):
            rr = sorted([r for r in sel if r["backend"] == "ray" and r["nodes"] == n], key=lambda r: r[x])
            if rr:
                ax.plot([r[x] for r in rr], [r[key] for r in rr], "o-", color=colors[n], label=f"ray, {n} node(s)")
        rr = sorted([r for r in sel if r["backend"] == "local"], key=lambda r: r[x])
        if rr:
            ax.plot([r[x] for r in rr], [r[key] for r in rr], "s--", color="k", label="local")
        ax.set_xticks(sorted({r[x] for r in sel}))
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)

    strong = [r for r in rows if r["part"] == "strong"]
    for i, R in enumerate((1, 2, 3)):
        ax = axes[0, i]
        sel = [r for r in strong if r["scheme"] == "eventprop" and r["replicas"] == R]
        if sel:
            lines(ax, sel, "hidden_cores", "ms_per_sample", f"EventProp strong, R = {R}, batch 32",
                  "ms per training sample")
        ax.set_xlabel("hidden cores per replica")
    for i, B in enumerate((1, 32)):
        ax = axes[1, i]
        sel = [r for r in strong if r["scheme"] == "eprop" and r["batch"] == B]
        if sel:
            lines(ax, sel, "hidden_cores", "ms_per_step", f"e-prop strong, 80-120-12, batch {B}",
                  "ms per emulated step (whole batch)")
        ax.set_xlabel("hidden cores")
    weak = [r for r in rows if r["part"] == "weak"]
    ax = axes[1, 2]
    for B, m in ((1, "o"), (32, "s")):
        for n in (1, 3):
            rr = sorted([r for r in weak if r["scheme"] == "eprop" and r["batch"] == B and r["backend"] == "ray"
                         and r["nodes"] == n], key=lambda r: r["hidden_cores"])
            if rr:
                ax.plot([r["hidden_cores"] for r in rr], [r["ms_per_step"] for r in rr], m + "-",
                        color=colors[n], label=f"ray {n} node(s), B={B}")
        rr = sorted([r for r in weak if r["scheme"] == "eprop" and r["batch"] == B and r["backend"] == "local"],
                    key=lambda r: r["hidden_cores"])
        if rr:
            ax.plot([r["hidden_cores"] for r in rr], [r["ms_per_step"] for r in rr], m + "--", color="k",
                    label=f"local, B={B}")
    ax.set_xticks(sorted({r["hidden_cores"] for r in weak if r["scheme"] == "eprop"}) or [1])
    ax.set_title("e-prop weak: 10 hidden neurons per core", fontsize=9)
    ax.set_xlabel("hidden cores")
    ax.set_ylabel("ms per emulated step (ideal: flat)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax = axes[0, 3]
    sel = [r for r in weak if r["scheme"] == "eventprop"]
    for lab, f, style, col in (("ray, 1 node", lambda r: r["backend"] == "ray" and r["nodes"] == 1, "o-", "C0"),
                               ("ray, R nodes (a replica per node)",
                                lambda r: r["backend"] == "ray" and r["nodes"] == r["replicas"], "o-", "C2"),
                               ("local", lambda r: r["backend"] == "local", "s--", "k")):
        rr = sorted([r for r in sel if f(r)], key=lambda r: r["replicas"])
        if rr:
            ax.plot([r["replicas"] for r in rr], [r["s_per_batch"] * 1e3 for r in rr], style, color=col, label=lab)
    ax.set_xticks([1, 2, 3])
    ax.set_title("EventProp weak: 16 samples per replica", fontsize=9)
    ax.set_xlabel("replicas R (batch 16 R)")
    ax.set_ylabel("ms per mini-batch (ideal: flat)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax = axes[1, 3]
    rec = res["recovery"]
    parts = ("detect_s", "handle_s", "teardown_s", "rebuild_s", "restore_s", "first_batch_s", "gaps_s")
    kinds = [(k, m) for m in ("before batch", "mid-batch") for k in ("eprop", "eventprop")
             if any(r["kind"] == k and r["mode"] == m for r in rec)]
    bottom = np.zeros(len(kinds))
    names = [f"{k}\n{m}" for k, m in kinds]
    for j, p in enumerate(parts):
        v = np.array([statistics.median([r[p] for r in rec if (r["kind"], r["mode"]) == km]) for km in kinds])
        ax.bar(names, v, bottom=bottom, label=p[:-2].replace("_", " "), color=f"C{j}")
        bottom += v
    ax.set_title("kill of a hidden core -> first batch done (median)", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7)
    loads = [res["load1_start"], res["load1_end"]] + [r["load1_start"] for r in rows] + \
        [r["load1_start"] for r in rec]
    fig.suptitle(f"spinnray scaling on one {res['cpus']}-CPU host, 3 Ray nodes as local raylets "
                 f"(1-min load average {min(loads):.0f}-{max(loads):.0f}, this benchmark's actors included)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main

def plan(quick: bool) -> dict:
    if quick:
        return {"ep_R": (1, 3), "ep_c": (1, 4), "eprop_c": (1, 12), "eprop_B": (1, 32), "weak_c": (1, 6),
                "weak_B": (1,), "weak_R": (1, 3), "seconds": 0.4, "repeats": 2, "rec_repeats": 1}
    return {"ep_R": (1, 2, 3), "ep_c": (1, 2, 4), "eprop_c": (1, 3, 6, 12), "eprop_B": (1, 32),
            "weak_c": (1, 3, 6, 12), "weak_B": (1, 32), "weak_R": (1, 2, 3), "seconds": 1.0, "repeats": 3,
            "rec_repeats": 3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer points, 0.4 s measurements, 2 repeats")
    ap.add_argument("--parts", default="strong_eventprop,strong_eprop,weak,recovery")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--plot", type=Path, default=Path(__file__).resolve().parent / "scaling.png")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="measure nothing: print the tables and draw the plot of a saved --json file")
    args = ap.parse_args()
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        if args.plot:
            plot(res, args.plot)
        print(markdown(res))
        return
    p = plan(args.quick)
    repeats = args.repeats or p["repeats"]
    rec_repeats = args.repeats or p["rec_repeats"]
    parts = set(args.parts.split(","))
    unknown = parts - {"strong_eventprop", "strong_eprop", "weak", "recovery"}
    if unknown:
        ap.error(f"--parts: unknown {sorted(unknown)}")

    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    res = {"command": "nice -n 10 python " + " ".join(shlex.quote(a) for a in sys.argv),
           "machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
           "ray": ray.__version__, "numpy": np.__version__, "repeats": repeats,
           "started": time.strftime("%Y-%m-%d %H:%M"), "load1_start": load1(), "rows": [], "recovery": []}
    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False))
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()
        log(f"3-node cluster up in {time.monotonic() - t0:.1f} s; load {load1()}")

        def add(rows, part):
            for r in rows:
                r["part"] = part
            res["rows"].extend(rows)
            log(describe(rows))

        if "strong_eventprop" in parts:
            for R in p["ep_R"]:
                for c in p["ep_c"]:
                    work = EventPropWork(R, c, EP_BATCH)
                    nodes = [n for n in (1, 2, 3) if n <= n_cores_of(work)]
                    add(measure(work, nodes, repeats, p["seconds"]), "strong")
        if "strong_eprop" in parts:
            for B in p["eprop_B"]:
                for c in p["eprop_c"]:
                    work = EPropWork(c, B)
                    nodes = [n for n in (1, 2, 3) if n <= n_cores_of(work)]
                    add(measure(work, nodes, repeats, p["seconds"]), "strong")
        if "weak" in parts:
            for B in p["weak_B"]:
                for c in p["weak_c"]:
                    work = EPropWork(c, B, hidden=10 * c)
                    nodes = [n for n in (1, 3) if n <= n_cores_of(work)]
                    add(measure(work, nodes, repeats, p["seconds"]), "weak")
            for R in p["weak_R"]:
                work = EventPropWork(R, 2, 16 * R)
                add(measure(work, sorted({1, R}), repeats, p["seconds"]), "weak")
        if "recovery" in parts:
            for i in range(rec_repeats):
                for kind, mid in (("eprop", False), ("eventprop", False), ("eprop", True), ("eventprop", True)):
                    r = recovery(kind, mid_batch=mid)
                    res["recovery"].append(r)
                    log(f"recovery {kind} {r['mode']} #{i + 1}: {r['total_s']:.2f} s from kill to first batch done "
                        f"(detect {r['detect_s']:.2f}, teardown {r['teardown_s']:.2f}, rebuild {r['rebuild_s']:.2f}, "
                        f"restore {r['restore_s']:.3f}, first batch {r['first_batch_s']:.2f}; normal batch "
                        f"{r['normal_batch_s']:.2f}); restarts {r['restarts']}")
    finally:
        ray.shutdown()
        cluster.shutdown()
    res["finished"] = time.strftime("%Y-%m-%d %H:%M")
    res["load1_end"] = load1()
    res["elapsed_s"] = round(time.monotonic() - t0, 1)
    log(f"done in {res['elapsed_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=float))
    if args.plot:
        try:
            plot(res, args.plot)
            log(f"wrote {args.plot}")
        except Exception as e:  # a plot failure must not lose the measurements
            log(f"plot failed: {type(e).__name__}: {e}")
    print(markdown(res) if args.markdown else json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
