"""e-prop on the cue-accumulation task beside NEST 3.10, in one run: NEST's shipped evidence-accumulation
example, then spinnray's ``eprop_cue`` on the same trial budget on ``local`` and on ``ray``.

    python bench/bench_nest_eprop.py --nest-python /tmp/nestvenv/bin/python [--trials 1600]
        [--spinnray-test 2000] [--backends local ray] [--json out.json] [--workdir DIR]
    python bench/bench_nest_eprop.py --collect DIR      # the table again, from a --workdir's runs

NEST is an optional benchmark dependency, kept out of the project's environment.  Install it into its own
virtual environment and pass that interpreter::

    python -m venv /tmp/nestvenv && /tmp/nestvenv/bin/pip install nest-simulator==3.10.0 numpy

**NEST.** ``eprop_supervised_classification_evidence-accumulation_bsshslm_2020.py`` as the wheel ships it
(``nest/doc/examples/pynest/eprop_plasticity/``), run unchanged in a child process of that interpreter with
three edits, each checked to match exactly once: ``n_iter_train`` (50 = 1,600 trials of 32 by default, from
``--trials``), ``n_iter_test`` (``--nest-test-iters``, 4 = the example's 128 test trials) and plotting off.
Its network: 40 spiking inputs -> 50 LIF + 50 ALIF (refractory 5 ms, firing-rate regulariser, random feedback)
-> 2 readouts, cross-entropy at every recall step, Adam (lr 5e-3) once per batch of 32 trials of 2,250 ms;
a validation batch without learning every 10 iterations and the test at the end, as the example does.  The
child times every ``run_phase`` (NEST's simulation, the example's Python input generation and its evaluation,
which reads the whole multimeter history every iteration) and, inside it, the time spent in ``nest.Simulate``;
it reports the loss and accuracy of every batch by phase.  ``--nest-threads`` overrides the example's one
virtual process.

**spinnray.** ``python run.py scenario=eprop_cue`` (the default scenario: 100 ALIF, 16 copies of 2 trials,
every core inside 128 KB) with ``data.train_size=--chunk`` and ``learning.epochs=trials/chunk`` on fresh trials
every epoch (``data.resample``, on in the scenario): as many trials as NEST's (other draws of the same
generator), one accuracy point per ``--chunk`` trials (the learning curve), tested on ``--spinnray-test`` trials after the last epoch.  Batch 32, Adam lr
5e-3 and the cue timing are the scenario's and equal the example's; everything else the scenario's own
(bench/RESULTS.md, "Issue 26: e-prop beside NEST 3.10", lists what differs).  Samples/s are training trials
over ``train_s`` (training only, without testing or setup), as NEST's are over its training phases.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = "eprop_supervised_classification_evidence-accumulation_bsshslm_2020.py"
INSTALL = ("NEST 3.10 is an optional benchmark dependency; install it into its own environment:\n"
           "    python -m venv /tmp/nestvenv && /tmp/nestvenv/bin/pip install nest-simulator==3.10.0 numpy\n"
           "then run this bench with --nest-python /tmp/nestvenv/bin/python")


# ---------------------------------------------------------------------------------------------------- NEST child

def edit_once(source: str, pattern: str, replacement: str) -> str:
    """``source`` with the one line matching ``pattern`` (a regex anchored at a line) replaced.

    Raises ValueError naming the pattern unless it matches exactly once (the example changed: read it again)."""
    found = re.findall(pattern, source, flags=re.M)
    if len(found) != 1:
        raise ValueError(f"NEST example: expected exactly one line matching {pattern!r}, found {len(found)}")
    return re.sub(pattern, replacement, source, flags=re.M)


def example_source(path: Path, iterations: int, test_iterations: int, threads: int | None,
                   seed: int | None = None) -> tuple[str, str]:
    """The example's code split where training starts: (setup, training and read-out), plotting removed;
    ``seed`` replaces its numpy seed (1), which draws its initial weights and every trial."""
    src = path.read_text()
    if seed is not None:
        src = edit_once(src, r"^rng_seed = \d+", f"rng_seed = {seed}")
    src = edit_once(src, r"^n_iter_train = \d+", f"n_iter_train = {iterations}")
    src = edit_once(src, r"^n_iter_test = \d+", f"n_iter_test = {test_iterations}")
    if threads:
        src = edit_once(src, r'^    "total_num_virtual_procs": 1,', f'    "total_num_virtual_procs": {threads},')
    cut = src.index("\ndo_plotting = True")                  # everything below only plots
    setup, run = src[:cut].split("\ntraining_pipeline = TrainingPipeline()", 1)
    return setup, "training_pipeline = TrainingPipeline()" + run


def nest_child(args) -> None:
    """Run the shipped example in this (NEST) interpreter; write its learning curve and times as JSON."""
    import types

    import matplotlib
    matplotlib.use("Agg")
    try:
        import IPython.display  # noqa: F401  (the example shows its schematic with it)
    except ImportError:                                      # not needed to train: a stand-in that shows nothing
        ipy, disp = types.ModuleType("IPython"), types.ModuleType("IPython.display")
        disp.Image = lambda *a, **k: None
        ipy.display = disp
        sys.modules.update({"IPython": ipy, "IPython.display": disp})
    import nest

    path = Path(nest.__file__).parent / "doc" / "examples" / "pynest" / "eprop_plasticity" / EXAMPLE
    if not path.is_file():
        raise SystemExit(f"NEST {nest.__version__}: the example {EXAMPLE} is not at {path}")
    setup, run = example_source(path, args.iterations, args.test_iterations, args.threads, args.seed)
    clock = {"phase": "setup", "sim": {}, "phase_s": {}, "phase_cpu_s": {}, "phases": {}}

    ns = {"__name__": "nest_example"}
    t0 = time.perf_counter()
    exec(compile(setup, str(path), "exec"), ns)
    build_s = time.perf_counter() - t0
    pipeline = ns["TrainingPipeline"]                     # the nest module refuses new attributes: time its class
    run_phase, simulate = pipeline.run_phase, pipeline.simulate

    def timed_simulate(self, k):                           # the example's only nest.Simulate call
        t = time.perf_counter()
        simulate(self, k)
        clock["sim"][clock["phase"]] = clock["sim"].get(clock["phase"], 0.0) + time.perf_counter() - t

    def timed_phase(self, label, eta):
        clock["phase"] = label
        t, c = time.perf_counter(), time.process_time()
        run_phase(self, label, eta)
        clock["phase_s"][label] = clock["phase_s"].get(label, 0.0) + time.perf_counter() - t
        clock["phase_cpu_s"][label] = clock["phase_cpu_s"].get(label, 0.0) + time.process_time() - c
        clock["phases"][label] = clock["phases"].get(label, 0) + 1

    pipeline.run_phase, pipeline.simulate = timed_phase, timed_simulate
    t0 = time.perf_counter()
    exec(compile(run, str(path), "exec"), ns)
    run_s = time.perf_counter() - t0
    res = ns["results_dict"]
    curve = [{"iteration": int(i), "phase": str(lab), "loss": float(loss), "accuracy": 1.0 - float(err)}
             for i, lab, loss, err in zip(res["iteration"], res["label"], res["loss"], res["error"])]
    batch = int(ns["batch_size"])
    test = [c["accuracy"] for c in curve if c["phase"] == "test"]
    out = {
        "nest_version": nest.__version__, "example": str(path), "batch_size": batch,
        "threads": int(nest.total_num_virtual_procs), "trial_ms": float(ns["duration"]["sequence"]),
        "hidden": {"lif": int(ns["n_reg"]), "alif": int(ns["n_ad"])}, "inputs": int(ns["n_in"]),
        "train_iterations": clock["phases"].get("training", 0), "phases": clock["phases"],
        "build_s": build_s, "run_s": run_s, "phase_s": clock["phase_s"], "phase_cpu_s": clock["phase_cpu_s"],
        "simulate_s": clock["sim"],
        "test_trials": len(test) * batch, "test_accuracy": sum(test) / len(test) if test else None,
        # the example's own test: its first 4 batches (more test batches come after them in the same stream)
        "example_test_accuracy": sum(test[:4]) / len(test[:4]) if test else None,
        "curve": curve,
    }
    Path(args.out).write_text(json.dumps(out, indent=1))


# ---------------------------------------------------------------------------------------------------- the driver

def timed_run(cmd: list[str], **kwargs) -> dict:
    """Run ``cmd`` to the end; its wall s, the CPU s of the processes it waited for (on ``ray`` not the
    actors), and the load average before and after (the host is shared: read the times with it)."""
    before, load0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()[0], time.perf_counter()
    subprocess.run(cmd, check=True, **kwargs)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"process_s": time.perf_counter() - t0,
            "process_cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "load_avg": [load0, os.getloadavg()[0]]}


def run_nest(python: str, iterations: int, test_iterations: int, threads: int | None, workdir: Path,
             seed: int | None = None) -> dict:
    cmd = ["nice", "-n", "10", python, str(Path(__file__).resolve()), "nest-child", "--out",
           str(workdir / "nest.json"), "--iterations", str(iterations), "--test-iterations", str(test_iterations)]
    if threads:
        cmd += ["--threads", str(threads)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    print("+", " ".join(cmd), flush=True)
    ran = timed_run(cmd, cwd=workdir)
    (workdir / "nest_process.json").write_text(json.dumps({"command": " ".join(cmd), **ran}))
    return nest_result(workdir)


def nest_result(workdir: Path) -> dict:
    """The NEST child's numbers (``nest.json``) with its training throughput."""
    res = json.loads((workdir / "nest.json").read_text())
    process = workdir / "nest_process.json"
    if process.is_file():
        res.update(json.loads(process.read_text()))
    train_s, sim_s = res["phase_s"].get("training", 0.0), res["simulate_s"].get("training", 0.0)
    trials = res["train_iterations"] * res["batch_size"]
    res["train_trials"] = trials
    res["train_s"], res["train_simulate_s"] = train_s, sim_s
    res["train_cpu_s"] = res.get("phase_cpu_s", {}).get("training")
    res["train_samples_per_s"] = trials / train_s if train_s else None
    res["train_samples_per_s_simulate"] = trials / sim_s if sim_s else None
    return res


def run_spinnray(backend: str, trials: int, chunk: int, test: int, seed: int, workdir: Path, extra: list[str]) -> dict:
    if trials % chunk:
        raise SystemExit(f"--trials {trials} is not a multiple of --chunk {chunk}")
    run_dir = workdir / f"spinnray-{backend}"
    cmd = ["nice", "-n", "10", sys.executable, str(REPO / "run.py"), "scenario=eprop_cue", f"backend={backend}",
           f"seed={seed}", f"data.train_size={chunk}", f"learning.epochs={trials // chunk}",
           f"learning.eval_every={trials // chunk}", f"data.test_size={test}", "report=false", "progress=false",
           f"hydra.run.dir={run_dir}", *extra]
    if backend == "ray":
        cmd = ["flock", "/tmp/spinnray_big.lock", *cmd, "cluster.num_cpus=2"]
    print("+", " ".join(cmd), flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ran = timed_run(cmd, cwd=REPO, env=env)
    (run_dir / "bench_process.json").write_text(json.dumps({"command": " ".join(cmd), **ran}))
    return spinnray_result(run_dir)


def spinnray_result(run_dir: Path) -> dict:
    """A spinnray run's numbers from its ``metrics.json`` and ``config.json``."""
    m = json.loads((run_dir / "metrics.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    chunk = int(cfg["data"]["train_size"])
    process = run_dir / "bench_process.json"
    return {
        "backend": m["backend"], "command": cfg["command"],
        **(json.loads(process.read_text()) if process.is_file() else {}),
        "train_trials": chunk * len(m["history"]), "train_s": m["train_s"],
        "train_samples_per_s": m["train_samples_per_s"], "wall_s": m["wall_s"], "setup_s": m.get("setup_s"),
        "test_trials": int(cfg["data"]["test_size"]), "test_accuracy": m["test_accuracy"],
        "test_loss": m["test_loss"], "cores": m["cores"], "replicas": m.get("replicas"),
        "largest_core_bytes": m["max_core_bytes"],
        "curve": [{"epoch": h["epoch"], "trials": h["epoch"] * chunk, "train_loss": h["train_loss"],
                   "train_accuracy": h["train_accuracy"], "train_s": h.get("train_s")} for h in m["history"]],
    }


def nest_python_ok(python: str) -> str | None:
    """None if ``python`` imports nest, else why not."""
    try:
        p = subprocess.run([python, "-c", "import nest, sys; sys.stdout.write(nest.__version__)"],
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{python}: {e}"
    return None if p.returncode == 0 else f"{python}: import nest failed: {p.stderr.strip().splitlines()[-1:]}"


def table(nest: dict | None, rows: list[dict]) -> str:
    """Markdown: training trials/s (wall clock of training only) and test accuracy, spinnray against NEST."""
    lines = ["| run | training trials | train s | trials/s | vs NEST (its phases / its Simulate only) "
             "| test accuracy (trials) | load avg (start, end) |", "|---|---:|---:|---:|---:|---:|---:|"]

    def load(r):
        return ", ".join(f"{x:.0f}" for x in r["load_avg"]) if "load_avg" in r else "-"

    if nest:
        lines.append(f"| NEST {nest['nest_version']}, {nest['threads']} thread(s) | {nest['train_trials']} | "
                     f"{nest['train_s']:.1f} (Simulate {nest['train_simulate_s']:.1f}) | "
                     f"{nest['train_samples_per_s']:.2f} ({nest['train_samples_per_s_simulate']:.2f}) | 1 | "
                     f"{100 * nest['test_accuracy']:.1f} % ({nest['test_trials']}); the example's first 128: "
                     f"{100 * nest['example_test_accuracy']:.1f} % | {load(nest)} |")
    for r in rows:
        vs = "-"
        if nest:
            vs = (f"{r['train_samples_per_s'] / nest['train_samples_per_s']:.2f}x / "
                  f"{r['train_samples_per_s'] / nest['train_samples_per_s_simulate']:.2f}x")
        lines.append(f"| spinnray `{r['backend']}` ({r['cores']} cores, {r['replicas']} copies) | {r['train_trials']} | "
                     f"{r['train_s']:.1f} | {r['train_samples_per_s']:.2f} | {vs} | "
                     f"{100 * r['test_accuracy']:.1f} % ({r['test_trials']}) | {load(r)} |")
    return "\n".join(lines)


def curves(nest: dict | None, rows: list[dict], every: int = 10) -> str:
    """Training loss and accuracy per ``every`` NEST iterations beside spinnray's per epoch (its chunk)."""
    out = []
    if nest:
        tr = [c for c in nest["curve"] if c["phase"] == "training"]
        for i in range(0, len(tr), every):
            blk = tr[i:i + every]
            out.append(f"NEST trials {32 * i + 1}-{32 * (i + len(blk))}: loss "
                       f"{sum(c['loss'] for c in blk) / len(blk):.3f}, accuracy "
                       f"{100 * sum(c['accuracy'] for c in blk) / len(blk):.1f} %")
    for r in rows:
        for c in r["curve"]:
            out.append(f"spinnray {r['backend']} up to trial {c['trials']}: loss {c['train_loss']:.3f}, "
                       f"accuracy {100 * c['train_accuracy']:.1f} %")
    return "\n".join(out)


def main(argv=None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["nest-child"]:
        p = argparse.ArgumentParser(prog="bench_nest_eprop.py nest-child")
        p.add_argument("--out", required=True)
        p.add_argument("--iterations", type=int, required=True)
        p.add_argument("--test-iterations", type=int, required=True)
        p.add_argument("--threads", type=int)
        p.add_argument("--seed", type=int)
        nest_child(p.parse_args(argv[1:]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nest-python", default=os.environ.get("SPINNRAY_NEST_PYTHON"),
                   help="interpreter with nest-simulator 3.10 installed (env SPINNRAY_NEST_PYTHON)")
    p.add_argument("--trials", type=int, default=1600, help="training trials (NEST: iterations of 32)")
    p.add_argument("--nest-test-iters", type=int, default=4, help="NEST test batches of 32 (the example: 4)")
    p.add_argument("--nest-threads", type=int, default=None, help="NEST virtual processes (the example: 1)")
    p.add_argument("--nest-seed", type=int, default=None, help="NEST example's numpy seed (the example: 1)")
    p.add_argument("--chunk", type=int, default=320, help="spinnray trials per epoch (one curve point each)")
    p.add_argument("--spinnray-test", type=int, default=2000, help="spinnray test trials")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backends", nargs="*", default=["local", "ray"], choices=["local", "ray"])
    p.add_argument("--skip-nest", action="store_true", help="spinnray only (no comparison)")
    p.add_argument("--json", help="write every number here")
    p.add_argument("--workdir", help="keep the runs' outputs here (default: a temporary directory)")
    p.add_argument("--collect", metavar="WORKDIR",
                   help="run nothing: print the table of the runs a --workdir holds (nest.json, spinnray-*/)")
    p.add_argument("extra", nargs="*", help="further overrides for spinnray's run.py (key=value)")
    args = p.parse_args(argv)

    if args.collect:
        done = Path(args.collect)
        nest = nest_result(done) if (done / "nest.json").is_file() else None
        rows = [spinnray_result(d) for d in sorted(done.glob("spinnray-*")) if (d / "metrics.json").is_file()]
        print(table(nest, rows))
        print(curves(nest, rows))
        if args.json:
            Path(args.json).write_text(json.dumps({"nest": nest, "spinnray": rows, "argv": argv}, indent=1))
        return
    nest = None
    if not args.skip_nest:
        if not args.nest_python:
            raise SystemExit("no NEST interpreter given (--nest-python or SPINNRAY_NEST_PYTHON).\n" + INSTALL)
        why = nest_python_ok(args.nest_python)
        if why:
            raise SystemExit(f"NEST is not usable: {why}\n" + INSTALL)
    if args.trials % 32:
        raise SystemExit(f"--trials {args.trials}: expected a multiple of the batch, 32")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_nest_eprop_"))
    workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_nest:
        nest = run_nest(args.nest_python, args.trials // 32, args.nest_test_iters, args.nest_threads, workdir,
                        args.nest_seed)
        print(json.dumps({k: v for k, v in nest.items() if k != "curve"}, indent=1), flush=True)
    rows = []
    for backend in args.backends:
        rows.append(run_spinnray(backend, args.trials, args.chunk, args.spinnray_test, args.seed, workdir, args.extra))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "curve"}, indent=1), flush=True)
    print(table(nest, rows))
    print(curves(nest, rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"nest": nest, "spinnray": rows, "argv": argv}, indent=1))


if __name__ == "__main__":
    main()
