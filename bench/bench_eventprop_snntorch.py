"""EventProp on the emulated cores beside a surrogate-gradient BPTT of the same recurrent network in
snnTorch: training clips per second of ``eventprop_keywords`` on ``local`` and ``ray``, in one run.

    python bench/bench_eventprop_snntorch.py --torch-python /tmp/torchvenv/bin/python [--batches 10]
        [--data keyword_spikes|poisson] [--blocks snntorch,local,local1 snntorch,ray2] [--torch-threads 1] [--json OUT]

snnTorch (and torch) is an optional benchmark dependency, kept out of the project's environment.  Install it
into its own virtual environment and pass that interpreter (or run this bench with an interpreter that
imports both)::

    python -m venv --system-site-packages /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/torchvenv/bin/pip install snntorch

**The network** is scenario ``eventprop_keywords`` as ``run.py`` composes it (network=recurrent_lif,
data=keyword_spikes): 384 input channels -> 64 recurrent LIF (tau_mem 20 ms, tau_syn 5 ms, threshold 1,
reset to 0) -> 12 leaky integrators (tau 20 ms, synaptic 5 ms), 500 steps of 2 ms, every projection a delay
of 1 step; loss: cross-entropy of the readouts' voltage summed over the clip plus the hidden spike-count
regulariser (lambda 1e-4 above 15 spikes per neuron and clip); Adam lr 0.002, mini-batches of 16.  Both
sides start from the same initial weights (the scenario's builder, seed 0) and train on the same clips in
the same order.

**snnTorch** (in a child process of ``--torch-python``, or in this process if torch imports here): the
neurons are ``snn.Synaptic`` with ``alpha = exp(-dt/tau_syn)``, ``beta = exp(-dt/tau_mem)``,
``reset_mechanism="zero"``, ``reset_delay=False`` (the readout: ``reset_mechanism="none"``, its spikes
unused), fed ``(1 - beta) x`` the synaptic drive: that is spinnray's discretisation exactly
(``I[t] = a I[t-1] + in[t]``, ``V[t] = b V[t-1] + (1 - b) I[t]``, spike where ``V > 1``, then ``V = 0``;
snnTorch's ``syn`` is ``(1 - b) I``).  The drive at step t is the spikes of step t - 1 (delay 1):
``in[t] = x[t-1] W_in + s[t-1] W_rec`` for the hidden layer, ``s[t-1] W_out`` for the readout; the input
projection of the whole clip is one matrix product before the loop (the usual way to write it).  The
weights are the spinnray weights themselves (float32 parameters), so Adam's lr acts on the same numbers.
Surrogate gradient: ``snntorch.surrogate.fast_sigmoid(slope=25)`` (``--surrogate atan`` for ``atan``);
snnTorch lets the gradient through its reset (``mem - spk * mem``), as it does by default.  The regulariser's
spike count is the sum of the surrogate spikes, so BPTT differentiates it through the surrogate (EventProp
injects mlGeNN's slope at the spikes instead).  One training step is ``zero_grad``, the forward loop,
the loss, ``backward`` and ``Adam.step``.  Before training, both forward the first batch with the initial
weights and the bench prints how many hidden spikes and readout logits differ (float32 on both: a few
threshold crossings may round apart).  Sanity of the training: each system's loss on a held-out batch of 16
clips before and after the timed batches (untimed), beside the loss of every batch.

**spinnray**: :class:`~spinnray.experiments.trainer.Trainer` with the scenario's typed config: ``local`` with
the scenario's 8 copies of 8 + 8 + 1 cores (136 PEs, every core inside 128 KB), ``local1`` with one copy of
17 cores (``parallel.replicas=1``; its cores hold the records of 16 clips, so ``machine.sram_per_pe_bytes`` is
raised to 4 MiB for it), ``ray2`` with 2 copies of 16 input + 8 hidden + 1 readout cores (50 Ray actors,
every core inside 128 KB: with 8 clips per copy, 8 input cores would hold 192,000 B each), ``ray2_17`` (not
run by default) 2 copies of the scenario's 17 cores on 4 MiB PEs (34 actors).  Ray runs start under the
big-job lock ``--lock`` (default /tmp/spinnray_big.lock), held until they end.

**Timing.**  The systems run in blocks (``--blocks``; default: snnTorch, ``local`` and ``local1``, then snnTorch
again and ``ray2``: Ray's processes poll while idle, and with them alive the others ran up to 1.5x slower).
In a block every system starts from the initial weights, trains one untimed warm-up batch (batch 0), then
``--batches`` timed batches 1..N, interleaved batch by batch (the order rotates every batch) so that the shared
machine's load falls on all of them alike; each ratio is against the snnTorch of the same block.  Clips/s = 16 x N / the summed wall time of the N training steps (no set-up, no data
loading).  CPU s: snnTorch's process time (all its threads); ``local``'s this process's time; ``ray2``'s the
CPU of this process and every process under it (Ray's raylet, GCS and core actors, from /proc), so on Ray
it includes the idle polling of those processes while the other systems train.

**Data**: ``--data keyword_spikes`` (default) reads the scenario's spiking keyword set (generated into
``~/.cache/spinnray/keyword_spikes`` on first use: that takes long) and takes the training clips of a
seeded permutation; ``--data poisson`` draws Poisson inputs of the same shape at the set's mean rate (250
spikes per clip over 384 channels) with random labels.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
INSTALL = ("snnTorch (with torch) is an optional benchmark dependency; install it into its own environment:\n"
           "    python -m venv --system-site-packages /tmp/torchvenv\n"
           "    /tmp/torchvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu\n"
           "    /tmp/torchvenv/bin/pip install snntorch\n"
           "then run this bench with --torch-python /tmp/torchvenv/bin/python")
POISSON_SPIKES = 250.0       # the keyword set's mean input spikes per clip (bench/RESULTS.md, issue 23 part 5)


# ------------------------------------------------------------------------------------------ the snnTorch side

class SnnTorchBPTT:
    """The scenario's network in snnTorch, trained with surrogate-gradient BPTT (module docstring).

    ``spec``: dt_ms, tau_mem_ms, tau_syn_ms, v_th, tau_out_ms, tau_out_syn_ms, lr, betas, eps,
    reg_lambda_upper, reg_nu_upper; ``weights``: {"in", "rec", "out"} (pre, post) float arrays."""

    def __init__(self, spec: dict, weights: dict, threads: int, surrogate: str):
        import snntorch as snn
        import torch
        from snntorch import surrogate as sg

        torch.set_num_threads(threads)
        self.torch = torch
        dt = spec["dt_ms"]
        a, b = math.exp(-dt / spec["tau_syn_ms"]), math.exp(-dt / spec["tau_mem_ms"])
        ao, bo = math.exp(-dt / spec["tau_out_syn_ms"]), math.exp(-dt / spec["tau_out_ms"])
        grad = sg.fast_sigmoid(slope=25) if surrogate == "fast_sigmoid" else sg.atan()
        self.hidden = snn.Synaptic(alpha=a, beta=b, threshold=spec["v_th"], spike_grad=grad,
                                   reset_mechanism="zero", reset_delay=False)
        # the readout: a leaky integrator; its threshold is out of reach and its spikes are not used
        self.readout = snn.Synaptic(alpha=ao, beta=bo, threshold=1e30, reset_mechanism="none")
        self.gain, self.gain_out = 1.0 - b, 1.0 - bo
        self.w = {k: torch.nn.Parameter(torch.tensor(np.asarray(v), dtype=torch.float32)) for k, v in weights.items()}
        self.opt = torch.optim.Adam(self.w.values(), lr=spec["lr"], betas=tuple(spec["betas"]), eps=spec["eps"])
        self.reg_upper, self.reg_lower, self.reg_nu = (spec["reg_lambda_upper"], spec["reg_lambda_lower"],
                                                       spec["reg_nu_upper"])
        self.mean = spec["loss"] == "mean_voltage"

    def forward(self, x: np.ndarray):
        """Logits (B, n_out: the readouts' voltage summed, or averaged, over the clip), hidden spike counts
        (B, n) and hidden spikes (T, B, n) of ``x`` (T, B, n_in)."""
        torch, w = self.torch, self.w
        xs = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)
        T, B, n_in = xs.shape
        h, n_out = w["rec"].shape[0], w["out"].shape[1]
        # delay 1: the input of step t - 1 drives step t (one product for the whole clip)
        drive_in = torch.zeros(T, B, h)
        drive_in[1:] = (xs[:-1].reshape(-1, n_in) @ w["in"]).reshape(T - 1, B, h)
        syn, mem = torch.zeros(B, h), torch.zeros(B, h)
        syn_o, mem_o = torch.zeros(B, n_out), torch.zeros(B, n_out)
        spk = torch.zeros(B, h)
        v_sum, count, spikes = torch.zeros(B, n_out), torch.zeros(B, h), []
        for t in range(T):
            cur_o = self.gain_out * (spk @ w["out"])                      # hidden spikes of step t - 1
            cur = self.gain * (drive_in[t] + spk @ w["rec"])
            spk, syn, mem = self.hidden(cur, syn, mem)
            _, syn_o, mem_o = self.readout(cur_o, syn_o, mem_o)
            v_sum = v_sum + mem_o
            count = count + spk
            spikes.append(spk)
        return (v_sum / T if self.mean else v_sum), count, torch.stack(spikes)

    def loss(self, logits, count, labels):
        torch = self.torch
        ce = torch.nn.functional.cross_entropy(logits, labels)                 # mean over the batch
        excess = count - self.reg_nu                       # spinnray's CountRegulariser, per sample
        lam = torch.where(excess > 0, self.reg_upper, self.reg_lower)
        return ce + (0.5 * lam * excess ** 2).sum(dim=1).mean(), ce

    def train_batch(self, x: np.ndarray, labels: np.ndarray) -> dict:
        torch = self.torch
        t0, c0 = time.perf_counter(), time.process_time()
        self.opt.zero_grad(set_to_none=True)
        logits, count, _ = self.forward(x)
        loss, ce = self.loss(logits, count, torch.from_numpy(np.asarray(labels, np.int64)))
        loss.backward()
        self.opt.step()
        return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "loss": float(loss.detach()),
                "ce": float(ce.detach()), "hidden_spikes_per_clip": float(count.detach().sum()) / len(labels)}

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> dict:
        """The loss (with the regulariser) of ``x`` under the current weights, no update."""
        with self.torch.no_grad():
            logits, count, _ = self.forward(x)
            loss, _ = self.loss(logits, count, self.torch.from_numpy(np.asarray(labels, np.int64)))
        return {"loss": float(loss)}

    def probe(self, x: np.ndarray) -> dict:
        """The initial weights' forward of ``x``: logits and hidden spikes (no gradient)."""
        with self.torch.no_grad():
            logits, _, spikes = self.forward(x)
        return {"logits": logits.numpy().tolist(), "spikes": np.flatnonzero(spikes.numpy().ravel()).tolist()}


def torch_worker(npz: str, threads: int, surrogate: str) -> None:
    """Serve ``train I`` / ``probe I`` / ``quit`` lines on stdin with one JSON line each on stdout."""
    d = np.load(npz)
    spec = json.loads(str(d["spec"]))
    model = SnnTorchBPTT(spec, {k: d["w_" + k] for k in ("in", "rec", "out")}, threads, surrogate)
    import snntorch
    print(json.dumps({"ready": True, "torch": model.torch.__version__, "snntorch": snntorch.__version__,
                      "threads": model.torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        cmd, *arg = line.split()
        if cmd == "quit":
            return
        i = int(arg[0])
        out = (model.train_batch(d["x"][i], d["y"][i]) if cmd == "train" else
               model.evaluate(d["x"][i], d["y"][i]) if cmd == "eval" else model.probe(d["x"][i]))
        print(json.dumps(out), flush=True)


class TorchChild:
    """:class:`SnnTorchBPTT` in a child process of another interpreter (or in this one)."""

    def __init__(self, python: str | None, npz: Path, threads: int, surrogate: str):
        if python is None:                       # in-process
            d = np.load(npz)
            self.model = SnnTorchBPTT(json.loads(str(d["spec"])), {k: d["w_" + k] for k in ("in", "rec", "out")},
                                      threads, surrogate)
            import snntorch
            self.data, self.proc = d, None
            self.info = {"torch": self.model.torch.__version__, "snntorch": snntorch.__version__,
                         "threads": self.model.torch.get_num_threads(), "python": sys.executable}
            return
        self.proc = subprocess.Popen([python, str(Path(__file__).resolve()), "torch-worker", str(npz),
                                      str(threads), surrogate], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        self.info = {**self._read(), "python": python}

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the snnTorch worker ended (exit {self.proc.wait()})")
        return json.loads(line)

    def ask(self, cmd: str, i: int) -> dict:
        if self.proc is None:
            x, y = self.data["x"][i], self.data["y"][i]
            return (self.model.train_batch(x, y) if cmd == "train" else self.model.evaluate(x, y) if cmd == "eval"
                    else self.model.probe(x))
        self.proc.stdin.write(f"{cmd} {i}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def torch_here() -> bool:
    try:
        import snntorch  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_python_ok(python: str) -> str | None:
    """None if ``python`` imports torch and snntorch, else why not."""
    try:
        p = subprocess.run([python, "-c", "import torch, snntorch"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{python}: {e}"
    return None if p.returncode == 0 else f"{python}: {p.stderr.strip().splitlines()[-1:]}"


# ------------------------------------------------------------------------------------------- the spinnray side

def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of process ``root`` and every live process under it (/proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:                                  # ended meanwhile
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def scenario(extra: list[str]):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from spinnray.config import RunConfig, from_dict
    from spinnray.experiments.setup import resolve

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["scenario=eventprop_keywords", *extra])
    return resolve(from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True)))


def clips(run, source: str, batches: int, seed: int):
    """(x (batches + 2, T, B, n_in) bool, labels (batches + 2, B), n_classes, description): the warm-up
    batch, the timed batches and a held-out batch (the loss before and after training)."""
    from spinnray.data.base import Timing, load_dataset

    B = run.learning.batch_size
    rng = np.random.default_rng(seed)
    if source == "keyword_spikes":
        data = load_dataset(run.data, Timing(run.network.dt_ms, run.network.steps), False)
        need = (batches + 2) * B
        if need > len(data.train):
            raise SystemExit(f"--batches {batches}: needs {need} clips, the training set has {len(data.train)}")
        idx = rng.permutation(len(data.train))[:need].reshape(batches + 2, B)
        x = np.stack([data.train.batch(i) for i in idx])
        return x, data.train.labels[idx], data.n_classes, f"keyword_spikes training clips ({len(data.train)} in all)"
    T = int(round(run.data.duration_ms / run.network.dt_ms))
    n_in, n_classes = 2 * run.data.bands * len(run.data.levels_db), 12
    p = POISSON_SPIKES / (T * n_in)
    x = rng.random((batches + 2, T, B, n_in)) < p
    return x, rng.integers(0, n_classes, (batches + 2, B)), n_classes, f"Poisson, p = {p:.3g} per channel and step"


def spinnray_trainer(run, net, backend: str, replicas: int, sram: int | None, cores: dict | None = None):
    from spinnray.experiments.trainer import Trainer

    cfg = run.config
    machine = cfg.machine if sram is None else replace(cfg.machine, sram_per_pe_bytes=sram)
    parallel = replace(cfg.parallel, replicas=replicas)
    if cores is not None:
        parallel = replace(parallel, cores_per_population=cores)
    return Trainer(net, run.rule, run.learning, machine=machine, parallel=parallel, backend=backend,
                   cluster=cfg.cluster)


class SpinnrayRun:
    def __init__(self, name: str, run, net, backend: str, replicas: int, sram: int | None, cores: dict | None):
        self.name, self.backend, self.replicas = name, backend, replicas
        t0 = time.perf_counter()
        self.tr = spinnray_trainer(run, net, backend, replicas, sram, cores)
        self.setup_s = time.perf_counter() - t0
        self.cores = self.tr.sim.mapping.n_cores

    def train(self, x, y) -> dict:
        ray = self.backend == "ray"
        t0, c0 = time.perf_counter(), tree_cpu_s(os.getpid()) if ray else time.process_time()
        res = self.tr.train_batch(x, y)
        wall = time.perf_counter() - t0
        cpu = (tree_cpu_s(os.getpid()) if ray else time.process_time()) - c0
        return {"wall_s": wall, "cpu_s": cpu, "loss": float(np.mean(res.outputs["loss"]))}

    def evaluate(self, x, y) -> dict:
        return {"loss": float(np.mean(self.tr.forward(x, y).outputs["loss"]))}

    def close(self) -> None:
        self.tr.close()


@contextlib.contextmanager
def big_lock(path: str | None):
    """Hold ``flock(path)`` (the shared machine's lock for jobs of many actors); None: no lock."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        t0 = time.perf_counter()
        fcntl.flock(f, fcntl.LOCK_EX)
        print(f"# holding {path} (waited {time.perf_counter() - t0:.0f} s)", flush=True)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------- the driver

# name: (backend, replicas (None: the scenario's 8), PE bytes (None: 128 KB), cores per population (None: the
# scenario's 8)).  With 2 copies each input core holds the input spikes of 8 clips: 16 input cores keep each
# inside 128 KB (8 would hold 192,000 B); ray2_17 keeps the scenario's 17 cores per copy on 4 MiB PEs instead.
RUNS = {"local": ("local", None, None, None), "local1": ("local", 1, 1 << 22, None),
        "ray2": ("ray", 2, None, {"input": 16, "hidden": 8}), "ray2_17": ("ray", 2, 1 << 22, None)}


def summarise(name: str, rows: list[dict], batch: int) -> dict:
    wall, cpu = sum(r["wall_s"] for r in rows), sum(r["cpu_s"] for r in rows)
    return {"name": name, "batches": len(rows), "clips": batch * len(rows), "wall_s": wall, "cpu_s": cpu,
            "clips_per_s": batch * len(rows) / wall, "clips_per_cpu_s": batch * len(rows) / cpu if cpu else None,
            "median_batch_s": float(np.median([r["wall_s"] for r in rows])),
            "losses": [r["loss"] for r in rows]}


def table(res: dict[str, dict], labels: dict[str, str]) -> str:
    ref = res.get("snntorch")
    lines = ["| run | clips | train wall s | clips/s | median s/batch | CPU s | clips per CPU s | "
             "clips/s vs snnTorch | per CPU s vs snnTorch |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in res.items():
        vs = vc = "-"
        if ref and name != "snntorch":
            vs = f"{r['clips_per_s'] / ref['clips_per_s']:.3f}x"
            vc = f"{r['clips_per_cpu_s'] / ref['clips_per_cpu_s']:.3f}x" if r["clips_per_cpu_s"] else "-"
        elif name == "snntorch":
            vs = vc = "1"
        lines.append(f"| {labels[name]} | {r['clips']} | {r['wall_s']:.2f} | {r['clips_per_s']:.2f} | "
                     f"{r['median_batch_s']:.3f} | {r['cpu_s']:.2f} | "
                     f"{r['clips_per_cpu_s'] or 0:.2f} | {vs} | {vc} |")
    return "\n".join(lines)


def probe_spinnray(run, net, x, y) -> dict:
    """The initial weights' forward of one batch on ``local`` (one copy): logits and hidden spikes."""
    tr = spinnray_trainer(run, net, "local", 1, 1 << 22)
    try:
        res = tr.forward(x, y, record=("spikes",))
        return {"logits": np.asarray(res.outputs["logits"]), "spikes": np.flatnonzero(res.spikes["hidden"].ravel())}
    finally:
        tr.close()


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["torch-worker"]:
        torch_worker(argv[1], int(argv[2]), argv[3])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torch-python", default=os.environ.get("SPINNRAY_TORCH_PYTHON"),
                   help="interpreter with torch and snntorch (env SPINNRAY_TORCH_PYTHON); default: this one "
                        "if it imports them")
    p.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--surrogate", choices=("fast_sigmoid", "atan"), default="fast_sigmoid")
    p.add_argument("--batches", type=int, default=10, help="timed mini-batches of 16 per system (default 10)")
    p.add_argument("--data", choices=("keyword_spikes", "poisson"), default="keyword_spikes")
    p.add_argument("--blocks", nargs="+", default=["snntorch,local,local1", "snntorch,ray2"],
                   help="blocks run one after the other, each a comma-separated list of systems interleaved batch "
                        f"by batch from the initial weights: snntorch, {', '.join(RUNS)} (default: Ray apart, so its "
                        "idle processes do not load the others)")
    p.add_argument("--seed", type=int, default=0, help="network seed (the scenario's) and clip order")
    p.add_argument("--lock", default="/tmp/spinnray_big.lock", help="flock held while Ray runs ('' = none)")
    p.add_argument("--no-probe", action="store_true", help="skip the forward comparison before training")
    p.add_argument("--json", help="write every number here")
    p.add_argument("extra", nargs="*", help="further overrides of the scenario (key=value; before --blocks, or "
                                            "after --)")
    args = p.parse_args(argv)

    blocks = [b.split(",") for b in args.blocks]
    for name in sum(blocks, []):
        if name != "snntorch" and name not in RUNS:
            raise SystemExit(f"--blocks: unknown system {name!r}; expected snntorch or one of {sorted(RUNS)}")
    torch_python = None
    if any("snntorch" in b for b in blocks):
        if args.torch_python:
            why = torch_python_ok(args.torch_python)
            if why:
                raise SystemExit(f"snnTorch is not usable: {why}\n{INSTALL}")
            torch_python = args.torch_python
        elif not torch_here():
            raise SystemExit(f"no interpreter with snnTorch: this one ({sys.executable}) cannot import torch and "
                             f"snntorch, and no --torch-python (or SPINNRAY_TORCH_PYTHON) was given.\n{INSTALL}")
    # Ray workers import spinnray from this checkout, and not from the driver's directory
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path.insert(0, str(REPO))
    os.chdir(tempfile.gettempdir())
    from spinnray.model.builders import DataShape

    run = scenario([f"seed={args.seed}", *args.extra])
    net_cfg, learn = run.network, run.learning
    if learn.loss not in ("sum_voltage", "mean_voltage"):
        raise SystemExit(f"learning.loss = {learn.loss}: the snnTorch side has sum_voltage and mean_voltage only")
    if not net_cfg.recurrent or net_cfg.delay != 1 or net_cfg.rec_delay_max is not None:
        raise SystemExit(f"network.recurrent = {net_cfg.recurrent}, delay = {net_cfg.delay}, rec_delay_max = "
                         f"{net_cfg.rec_delay_max}: the snnTorch side has the scenario's recurrent network with "
                         "delays of 1 step only (true, 1, null)")
    x, y, n_classes, data_desc = clips(run, args.data, args.batches, args.seed)
    _, T, B, n_in = x.shape
    net = run.builder.build(net_cfg, DataShape(n_in, n_classes, "spikes"), run.config.seed)
    w = {proj.name: np.asarray(proj.weights) for proj in net.projections}
    w_in, w_rec, w_out = w["input->hidden"], w["hidden->hidden"], w["hidden->output"]
    load0 = os.getloadavg()
    print(f"# {REPO}: eventprop_keywords {n_in}-{net_cfg.hidden}-{n_classes}, {T} steps of {net_cfg.dt_ms} ms, "
          f"batch {B}, loss {learn.loss}, lr {learn.lr}; data: {args.data} ({data_desc}), "
          f"{x[1:].sum() / (args.batches * B):.1f} input spikes per timed clip; load {load0}", flush=True)

    spec = {"dt_ms": net_cfg.dt_ms, "tau_mem_ms": net_cfg.tau_mem_ms, "tau_syn_ms": net_cfg.tau_syn_ms,
            "v_th": net_cfg.v_th, "tau_out_ms": net_cfg.tau_out_ms, "tau_out_syn_ms": net_cfg.tau_out_syn_ms,
            "lr": learn.lr, "betas": [learn.beta1, learn.beta2], "eps": learn.eps,
            "reg_lambda_upper": learn.reg_lambda_upper, "reg_lambda_lower": learn.reg_lambda_lower,
            "reg_nu_upper": learn.reg_nu_upper, "loss": learn.loss}
    npz = Path(tempfile.mkdtemp(prefix="bench_eventprop_snntorch_")) / "clips.npz"
    np.savez(npz, x=x, y=y, w_in=w_in, w_rec=w_rec, w_out=w_out, spec=json.dumps(spec))
    ctx = {"run": run, "net": net, "x": x, "y": y, "npz": npz, "torch_python": torch_python, "args": args}
    probe = None
    if not args.no_probe and any("snntorch" in b for b in blocks):
        child = TorchChild(torch_python, npz, args.torch_threads, args.surrogate)
        try:
            theirs = child.ask("probe", 0)
        finally:
            child.close()
        ours = probe_spinnray(run, net, x[0], y[0])
        diff = np.setxor1d(np.asarray(theirs["spikes"], np.int64), ours["spikes"])
        probe = {"hidden_spikes_spinnray": int(len(ours["spikes"])), "hidden_spikes_snntorch": len(theirs["spikes"]),
                 "hidden_spikes_differing": int(len(diff)),
                 "logits_max_abs_diff": float(np.abs(np.asarray(theirs["logits"]) - ours["logits"]).max()),
                 "logits_max_abs": float(np.abs(ours["logits"]).max())}
        print(f"# forward check, initial weights, batch 0: {probe}", flush=True)
    done = []
    for k, names in enumerate(blocks):
        print(f"# block {k + 1}: {' '.join(names)}", flush=True)
        done.append(run_block(names, ctx))
    print()
    for k, (names, b) in enumerate(zip(blocks, done)):
        print(f"block {k + 1} ({' '.join(names)}; load average {b['load'][0][0]:.1f} at its start, "
              f"{b['load'][1][0]:.1f} at its end):\n")
        print(table(b["results"], b["labels"]))
        print()
        for name, r in b["results"].items():
            ls = r["losses"]
            print(f"{name} loss per timed batch: " + ", ".join(f"{v:.3f}" for v in ls)
                  + f"  (first 3 mean {np.mean(ls[:3]):.3f} -> last 3 mean {np.mean(ls[-3:]):.3f}); held-out "
                  f"batch loss {r['held_out_loss'][0]:.3f} before -> {r['held_out_loss'][1]:.3f} after")
        print()
    print(f"load average: {load0} at the start, {os.getloadavg()} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": argv, "data": args.data, "data_desc": data_desc,
                                               "probe": probe, "blocks": done, "load0": load0}, indent=1))


def run_block(names: list[str], ctx: dict) -> dict:
    """Fresh systems ``names`` from the initial weights, interleaved batch by batch: their results."""
    args, run, net, x, y = ctx["args"], ctx["run"], ctx["net"], ctx["x"], ctx["y"]
    B = x.shape[2]
    systems: dict[str, object] = {}
    labels: dict[str, str] = {}
    per: dict[str, list[dict]] = {}
    load0 = os.getloadavg()
    ray_runs = [n for n in names if n in RUNS and RUNS[n][0] == "ray"]
    try:
        with big_lock(args.lock if ray_runs else None):
            for name in names:
                if name == "snntorch":
                    child = systems[name] = TorchChild(ctx["torch_python"], ctx["npz"], args.torch_threads,
                                                       args.surrogate)
                    info = child.info
                    labels[name] = (f"snnTorch {info['snntorch']} BPTT (torch {info['torch']}, {info['threads']} "
                                    f"thread(s), {args.surrogate})")
                    continue
                backend, replicas, sram, cores = RUNS[name]
                if backend == "ray":
                    from spinnray.backends import ensure_ray
                    ensure_ray(None, num_cpus=2)
                s = systems[name] = SpinnrayRun(name, run, net, backend, replicas or run.config.parallel.replicas,
                                                sram, cores)
                labels[name] = (f"spinnray `{backend}`, {s.replicas} cop{'y' if s.replicas == 1 else 'ies'}, "
                                f"{s.cores} cores" + (" (4 MiB PEs)" if sram else ""))
                print(f"# {name}: {s.cores} cores, set-up {s.setup_s:.1f} s", flush=True)
            held = args.batches + 1                    # never trained on: the loss before and after, a sanity check

            def held_loss(name):
                return (systems[name].ask("eval", held) if name == "snntorch"
                        else systems[name].evaluate(x[held], y[held]))["loss"]

            before = {name: held_loss(name) for name in names}
            for i in range(args.batches + 1):
                order = names[i % len(names):] + names[:i % len(names)]        # rotate: noise falls on all
                for name in order:
                    sysm = systems[name]
                    r = sysm.ask("train", i) if name == "snntorch" else sysm.train(x[i], y[i])
                    if i:
                        per.setdefault(name, []).append(r)
                    print(f"batch {i}{' (warm-up)' if not i else ''} {name}: {r['wall_s']:.3f} s, "
                          f"cpu {r['cpu_s']:.3f} s, loss {r['loss']:.4f}", flush=True)
            after = {name: held_loss(name) for name in names}
            for name in names:
                if name != "snntorch":
                    systems[name].tr.check_replicas()
    finally:
        for sysm in systems.values():
            sysm.close()
    res = {name: summarise(name, per[name], B) for name in names}
    for name, r in res.items():
        r["held_out_loss"] = [before[name], after[name]]
    return {"names": names, "labels": labels, "results": res, "batches": per, "load": [load0, os.getloadavg()]}

if __name__ == "__main__":
    main()
