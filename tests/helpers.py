"""Small builders the tests of every tier share: trainers of the two on-chip rules and their
networks (from the public API: rule registry, builders, Trainer), the networks of the equivalence
contract and of the cluster tests, composed Hydra configs and a small training run config.

``tests/`` is on ``sys.path`` (tests/conftest.py), so every test module imports this as
``helpers`` and the references as ``oracle.<name>``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spinnray.config import ClusterConfig, MachineConfig, ParallelConfig, RunConfig, from_dict
from spinnray.data.base import ArraySplit, RasterSplit
from spinnray.experiments.trainer import Trainer
from spinnray.model.builders import (DataShape, FeedForwardConfig, RecurrentALIFConfig, build_feedforward,
                                     build_recurrent_alif)
from spinnray.rules import rule
from spinnray.rules.eprop import EPropConfig
from spinnray.rules.eventprop import EventPropConfig
from spinnray.model.network import Network
from spinnray.model.neurons import ALIF, LI, LIF, SpikeSource
from spinnray.simulator import Simulator, poisson_spikes

__all__ = ["yinyang_net", "eprop_net", "eventprop_trainer", "eprop_trainer", "spikes_split", "analog_split",
           "EventPropConfig", "EPropConfig", "FeedForwardConfig", "RecurrentALIFConfig", "TESTS", "ROOT",
           "raises_naming", "composed", "training_run_cfg", "EQ_STEPS", "EQ_BATCH", "equivalence_network",
           "equivalence_inputs", "CLUSTER_STEPS", "CLUSTER_BATCH", "CLUSTER_CORES", "CLUSTER_MACHINE",
           "cluster_network", "cluster_inputs", "cluster_forward", "expected_link_classes"]

#: this directory (tests/) and the checkout it belongs to (conf/, scenarios/, run.py, README.md)
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def yinyang_net(cfg: FeedForwardConfig, seed: int = 0, n_in: int = 5, n_out: int = 3):
    """The feed-forward LIF network of the Yin-Yang task (5 inputs, 3 classes by default)."""
    return build_feedforward(cfg, DataShape(n_in, n_out, "spikes"), seed)


def eprop_net(cfg: RecurrentALIFConfig, n_in: int, n_out: int, seed: int = 0):
    """The recurrent ALIF network of e-prop with ``n_in`` analog inputs and ``n_out`` readouts."""
    return build_recurrent_alif(cfg, DataShape(n_in, n_out, "analog"), seed)


def eventprop_trainer(net, learn: EventPropConfig, *, machine, cores_per_population=None, replicas: int = 1,
                      backend: str = "local", timeout_s: float = 120.0, cluster=None, schedule: str = "lockstep"):
    cluster = replace(cluster or ClusterConfig(), round_timeout_s=timeout_s)
    return Trainer(net, rule("eventprop"), learn, machine=machine,
                   parallel=ParallelConfig(cores_per_population=cores_per_population, replicas=replicas,
                                           schedule=schedule),
                   backend=backend, cluster=cluster)


def eprop_trainer(net, learn: EPropConfig, *, machine, hidden_cores, backend: str = "local", timeout_s: float = 120.0,
                  batch_size: int | None = None, cluster=None, replicas: int = 1, copies: bool = True):
    if batch_size is not None:
        learn = replace(learn, batch_size=batch_size)
    cluster = replace(cluster or ClusterConfig(), round_timeout_s=timeout_s)
    return Trainer(net, rule("eprop"), learn, machine=machine,
                   parallel=ParallelConfig(cores_per_population=hidden_cores, replicas=replicas, copies=copies),
                   backend=backend, cluster=cluster)


def spikes_split(raster: np.ndarray, labels) -> RasterSplit:
    """A split of spike rasters held time-major, (steps, N, inputs)."""
    return RasterSplit(raster, np.asarray(labels))


def analog_split(x: np.ndarray, labels) -> ArraySplit:
    """A split of analog samples held sample-major, (N, steps, inputs)."""
    return ArraySplit(np.asarray(x, np.float32), np.asarray(labels))


def eventprop_learning(net, machine, **cfg):
    """The EventProp :class:`~spinnray.mapping.Learning` of ``net`` (every LIF population with inputs
    learns; the one without outputs computes the loss) with ``EventPropConfig(**cfg)``."""
    return rule("eventprop").learning(net, EventPropConfig(**cfg), machine)


def eprop_learning(net, machine, **cfg):
    """The e-prop :class:`~spinnray.mapping.Learning` of a recurrent ALIF ``net`` with ``EPropConfig(**cfg)``."""
    return rule("eprop").learning(net, EPropConfig(**cfg), machine)


def held_bytes(core) -> dict[str, int]:
    """Bytes by category of the arrays ``core`` really holds, summed here from the arrays
    themselves: the independent check of the memory models (spinnray.machine.core.forward_memory
    and the rules' specs).  The categories a core computes from its run's data (input events,
    spike records, layered error events) and the host-streamed ``input_buffer`` are taken from
    ``core.memory()``."""
    own = core.memory()
    mem = {"weights": sum(w.nbytes for w in core.weights),
           "delays": sum(d.nbytes for d in core.delays if d is not None),
           "neuron_state": sum(a.nbytes for a in core.state),
           "spike_history": sum(h.nbytes for h in core.hist.values()),
           "key_table": sum(a.nbytes for a in (core._src_prefix, core._src_pre, core._src_lo, core._src_n))}
    if core.inputs is not None:
        mem["input_spikes"] = core.inputs.nbytes
    for k in ("input_buffer", "input_events", "spike_records", "error_events"):
        if k in own:
            mem[k] = own[k]
    if not core.learns:
        return mem
    if core.stores is not None:
        mem["weights"] = sum(st.stored_bytes for st in core.stores)
        acc = sum(st.accumulator_bytes for st in core.stores)
        if acc:
            mem["weight_accumulator"] = acc
    mem["gradients"] = sum(g.nbytes for g in core.grads)
    mem["optimizer"] = sum(o.m.nbytes + o.v.nbytes for o in core.opts)
    masks = sum(m.nbytes for m in core.masks if m is not None)
    keys = sum(inc.error_keys.nbytes for inc in core.spec.incoming if inc.error_keys is not None)
    name = type(core).__name__
    if name == "EventPropCore":
        mem.update(masks=masks, error_keys=keys, adjoint=core.lam_v.nbytes + core.lam_i.nbytes + core.err_in.nbytes)
        return mem
    if masks:
        mem["masks"] = masks
    if keys:
        mem["error_keys"] = keys
    if name == "EPropHiddenCore":
        mem["traces"] = sum(a.nbytes for a in (core.eps_v, core.d, core.acc, core.psi, core.ereg, core.zcount))
        mem["learning_signal"] = core.signal.nbytes
        mem["scratch"] = core._tmp.nbytes
    elif name == "EPropReadoutCore":
        mem["traces"] = core.zbar.nbytes + core.acc_z.nbytes + core.ysum.nbytes
        if core.feedback is not None:
            mem["feedback"] = sum(f.nbytes for f in core.feedback)
    return mem


def raises_naming(exc, *texts):
    """Context manager: ``exc`` is raised and its message contains every text."""

    class _Ctx:
        def __enter__(self):
            self._cm = pytest.raises(exc)
            self.info = self._cm.__enter__()
            return self.info

        def __exit__(self, *a):
            handled = self._cm.__exit__(*a)
            msg = str(self.info.value)
            for t in texts:
                assert t in msg, f"{t!r} not in {msg!r}"
            return handled

    return _Ctx()


def composed(*overrides) -> RunConfig:
    """The typed RunConfig that ``run.py`` would run with these command-line overrides (Hydra
    composes conf/ in process, as run.py does)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return from_dict(RunConfig, OmegaConf.to_container(cfg, resolve=True))


def training_run_cfg(backend="local", kind="eprop", **over):
    """A small training run (e-prop on cue accumulation, or EventProp on Yin-Yang with two replicas)
    with checkpoints every 2 mini-batches: the run of the checkpoint tests."""
    if kind == "eprop":
        d = {"kind": "eprop", "seed": 3, "backend": backend, "progress": False, "report": False,
             "parallel": {"cores_per_population": 2},
             "network": {"hidden": 10, "tau_mem_ms": 20.0, "tau_adapt_ms": 500.0, "beta": 5.0, "v_th": 0.6,
                         "tau_out_ms": 20.0, "w_in_scale": 20.0, "w_out_scale": 10.0},
             "data": {"name": "cue", "train_size": 24, "test_size": 8, "n_cues": 3, "total_ms": 700.0},
             "learning": {"epochs": 2, "batch_size": 4, "lr": 0.01, "surrogate": "triangle", "gamma": 0.3},
             "checkpoint": {"every": 2}}
    else:                       # EventProp, two replicas of a hidden layer split over 2 cores
        d = {"kind": "eventprop", "seed": 3, "backend": backend, "progress": False, "report": False,
             "parallel": {"cores_per_population": 2, "replicas": 2},
             "network": {"hidden": 20, "steps": 60, "dt_ms": 0.5},
             "data": {"train_size": 24, "test_size": 8},
             "learning": {"epochs": 2, "batch_size": 4, "lr": 0.01},
             "checkpoint": {"every": 2}}
    for k, v in over.items():
        d[k] = v if not isinstance(v, dict) else {**d.get(k, {}), **v}
    return from_dict(RunConfig, d)


# ------------------------------------------------- the network of the equivalence contract (DESIGN.md 3.1)
EQ_STEPS = 120
EQ_BATCH = 2


def equivalence_network(seed: int = 7) -> Network:
    """Sources, a recurrent LIF layer with per-synapse delays, ALIF and LI readouts.

    Minimum delay 3 steps, so K in {1, 3} are both legal.
    """
    rng = np.random.default_rng(seed)
    net = Network(dt_ms=1.0)
    net.population("inp", 23, SpikeSource())
    net.population("hid", 31, LIF(tau_mem_ms=10.0, tau_syn_ms=4.0, v_th=0.5))
    net.population("ada", 17, ALIF(tau_mem_ms=15.0, tau_adapt_ms=80.0, beta=0.3, v_th=0.4, refractory_steps=2))
    net.population("out", 6, LI(tau_mem_ms=12.0, tau_syn_ms=3.0))
    net.connect("inp", "hid", rng.normal(0.4, 0.4, (23, 31)), delays=rng.integers(3, 7, (23, 31)))
    net.connect("hid", "hid", rng.normal(-0.05, 0.3, (31, 31)), delays=3, mask=rng.random((31, 31)) < 0.4)
    net.connect("inp", "ada", rng.normal(0.5, 0.3, (23, 17)), delays=4)
    net.connect("ada", "hid", rng.normal(0.2, 0.2, (17, 31)), delays=rng.integers(3, 5, (17, 31)))
    net.connect("hid", "out", rng.normal(0.3, 0.2, (31, 6)), delays=3)
    net.connect("ada", "out", rng.normal(0.3, 0.2, (17, 6)), delays=5)
    return net


def equivalence_inputs(seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {"inp": poisson_spikes(60.0, EQ_STEPS, EQ_BATCH, 23, 1.0, rng)}


# ------------------------------------------------- the network of the cluster tests (one router per node)
CLUSTER_STEPS, CLUSTER_BATCH, CLUSTER_CORES = 80, 2, 2
CLUSTER_MACHINE = MachineConfig(pes_per_chip=2, sram_per_pe_bytes=1 << 20)   # 8 cores -> 4 chips


def cluster_network(seed: int = 5) -> Network:
    """Sources -> recurrent LIF (masked, delays 1-3) -> LIF and LI readouts."""
    rng = np.random.default_rng(seed)
    net = Network(dt_ms=1.0)
    net.population("inp", 16, SpikeSource())
    net.population("hid", 21, LIF(tau_mem_ms=10.0, tau_syn_ms=4.0, v_th=0.5))
    net.population("out", 7, LIF(tau_mem_ms=12.0, tau_syn_ms=3.0, v_th=0.4))
    net.population("ro", 3, LI(tau_mem_ms=12.0, tau_syn_ms=3.0))
    net.connect("inp", "hid", rng.normal(0.4, 0.4, (16, 21)), delays=rng.integers(1, 4, (16, 21)))
    net.connect("hid", "hid", rng.normal(-0.05, 0.3, (21, 21)), delays=2, mask=rng.random((21, 21)) < 0.3)
    net.connect("hid", "out", rng.normal(0.3, 0.2, (21, 7)), delays=1, mask=rng.random((21, 7)) < 0.5)
    net.connect("out", "ro", rng.normal(0.3, 0.2, (7, 3)), delays=1)
    return net


def cluster_inputs(steps: int = CLUSTER_STEPS, seed: int = 3) -> dict:
    return {"inp": poisson_spikes(80.0, steps, CLUSTER_BATCH, 16, 1.0, np.random.default_rng(seed))}


def cluster_forward(backend: str, cluster: ClusterConfig | None, steps: int = CLUSTER_STEPS):
    """(result, reports, metrics, mapping) of one run of the cluster network, K = 1."""
    with Simulator(cluster_network(), CLUSTER_MACHINE, cores_per_population=CLUSTER_CORES,
                   batch_size=CLUSTER_BATCH, backend=backend, cluster=cluster) as sim:
        res = sim.run(steps, cluster_inputs(steps), record=("spikes", "v"))
        return res, sim.reports(), sim.metrics(), sim.mapping


def expected_link_classes(net: Network, mapping, spikes: dict) -> tuple[dict, dict]:
    """Events per link class and router-to-router events, counted from the spikes.

    Independent of the routers: a spike of a neuron in source slice S is
    delivered once to every core holding a post-synaptic slice that some
    projection from S's population connects to (a masked block with no
    synapse is not routed); it is copied once to each other router (one per
    chip, or per node: ``mapping.router_per``) serving such a core: an
    ``inter_node`` copy if that router is on another node, else ``inter_chip``.
    """
    from spinnray.machine.counters import LINK_CLASSES

    counts = {k: 0 for k in LINK_CLASSES}
    wire = {"inter_node": 0, "inter_chip": 0}
    chips = sorted({p.chip for p in mapping.placements})
    router = {p.core_id: (p.node if mapping.router_per == "node" else chips.index(p.chip)) for p in mapping.placements}
    for src in mapping.placements:
        pop = src.slice.population
        if pop not in spikes:
            continue
        dests = []
        for dst in mapping.placements:
            for proj in net.projections:
                if proj.pre.name == pop and proj.post.name == dst.slice.population and (
                        proj.mask is None or proj.mask[src.slice.lo:src.slice.hi, dst.slice.lo:dst.slice.hi].any()):
                    dests.append(dst)
                    break
        if not dests:
            continue
        n_spikes = int(spikes[pop][:, :, src.slice.lo:src.slice.hi].sum())
        for dst in dests:
            cls = ("same_core" if dst.core_id == src.core_id else "across_nodes" if dst.node != src.node
                   else "same_chip" if dst.chip == src.chip else "same_node")
            counts[cls] += n_spikes
        for r, node in {router[d.core_id]: d.node for d in dests}.items():
            if r != router[src.core_id]:
                wire["inter_node" if node != src.node else "inter_chip"] += n_spikes
    return counts, wire


def keep_figures(monkeypatch) -> list:
    """The figures the report and the comparison hand to ``save_png``, in order (each still saved)."""
    from spinnray.report import compare, plots

    got, original = [], plots.save_png

    def keep(fig, path):
        got.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "save_png", keep)
    monkeypatch.setattr(compare, "save_png", keep)
    return got
