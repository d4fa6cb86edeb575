"""Data-parallel EventProp training of a feed-forward LIF network on Yin-Yang.

R replicas of the network each take a contiguous shard of every mini-batch
(B samples in lockstep on each of their cores).  Per mini-batch:

1. *forward*: input spikes flow up as spike events; each replica's output
   core computes the time-to-first-spike loss of its samples;
2. *backward*: error events flow down through the routers (EventProp);
3. *reduce*: the driver sums every slice's gradient over the replicas, in
   replica order (deterministic);
4. *update*: every replica's cores apply the same Adam step to the same sum,
   so the replicas never diverge -- a CRC32 of each core's weights is
   compared across replicas after every epoch (and the run stops if they
   differ).

With ``machine.weight_bits < 32`` (or ``machine.synapse = pcm``) the cores keep
their weights in low-precision (or PCM) stores and the update goes through them
(:mod:`spinnray.rules.eventprop.core`); the CRC32 then covers the stored codes and
accumulators.

The learning rate decays by ``lr_decay`` per epoch, as Wunderlich & Pehle did.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from spinnray.config import RunConfig, from_dict, opt
from spinnray.data.yinyang import encode_yin_yang, load_yin_yang_arrays, spike_steps_yin_yang, yin_yang
from spinnray.errors import ConfigError, SpinnrayError
from spinnray.rules.eprop.core import weight_store_options
from spinnray.rules.eventprop.core import learning_bytes
from spinnray.model.network import Network
from spinnray.model.neurons import LIF, SpikeSource
from spinnray.backends.backend import TrainStep
from spinnray.simulator import Simulator

__all__ = ["EventPropNetworkConfig", "YinYangDataConfig", "EventPropLearningConfig", "EventPropTrainer",
           "encode_inputs", "run_eventprop"]

log = logging.getLogger("spinnray")


@dataclass(frozen=True)
class EventPropNetworkConfig:
    steps: int = opt(50, "steps per sample (network.steps = T)", min=2)
    dt_ms: float = opt(1.0, "milliseconds per step", min=1e-6)
    hidden: int = opt(200, "hidden LIF neurons", min=1)
    tau_mem_ms: float = opt(20.0, "membrane time constant", min=1e-6)
    tau_syn_ms: float = opt(5.0, "synaptic time constant", min=1e-6)
    w_in_mean: float = opt(1.5, "initial input->hidden weights: mean (Wunderlich & Pehle)")
    w_in_std: float = opt(0.78, "initial input->hidden weights: standard deviation", min=0.0)
    w_out_mean: float = opt(0.93, "initial hidden->output weights: mean")
    w_out_std: float = opt(0.1, "initial hidden->output weights: standard deviation", min=0.0)


@dataclass(frozen=True)
class YinYangDataConfig:
    name: str = opt("yinyang", "data set", choices=("yinyang",))
    root: str | None = opt(None, "directory with the published .npy arrays; null = generate them")
    train_size: int = opt(5000, "training samples (generated)", min=1)
    train_seed: int = opt(42, "generator seed of the training set (canonical 42)", min=0)
    test_size: int = opt(1000, "test samples (generated)", min=1)
    test_seed: int = opt(40, "generator seed of the test set (canonical 40)", min=0)
    val_size: int = opt(1000, "validation samples tested after every epoch (model selection only; never "
                              "trained on); 0 = none", min=0)
    val_seed: int = opt(41, "generator seed of the validation set (canonical 41)", min=0)
    limit: int | None = opt(None, "use only the first N training, test and validation samples", min=1)
    encoding: str = opt("wunderlich", "spike-time encoding: wunderlich (t = x * t_max) or bena (latency)",
                        choices=("wunderlich", "bena"))
    t_max_ms: float = opt(30.0, "latest input spike time (wunderlich encoding)", min=1e-6)
    stagger: float = opt(0.0, "wunderlich encoding: the mirrored inputs (1-x, 1-y) spike this fraction of a step "
                              "later before rounding, so their rounding grid falls between that of x and y "
                              "(0.5 doubles the input resolution at finite dt); 0 = plain", min=0.0, max=1.0)


@dataclass(frozen=True)
class EventPropLearningConfig:
    rule: str = opt("eventprop", "learning rule", choices=("eventprop",))
    epochs: int = opt(40, "passes over the training set", min=1)
    batch_size: int = opt(32, "mini-batch (all replicas together)", min=1)
    lr: float = opt(5e-3, "Adam learning rate", min=0.0)
    lr_decay: float = opt(0.95, "learning-rate factor per epoch", min=0.0, max=1.0)
    beta1: float = opt(0.9, "Adam beta1", min=0.0, max=1.0)
    beta2: float = opt(0.999, "Adam beta2", min=0.0, max=1.0)
    eps: float = opt(1e-8, "Adam epsilon", min=0.0)
    loss: str = opt("wunderlich", "TTFS loss: wunderlich (tau0, tau1, alpha) or bena (xi, alpha, beta in steps)",
                    choices=("wunderlich", "bena"))
    tau0_ms: float = opt(0.5, "wunderlich loss: softmax temperature", min=1e-9)
    tau1_ms: float = opt(6.4, "wunderlich loss: regulariser time constant", min=1e-9)
    alpha: float = opt(3e-3, "wunderlich loss: regulariser weight", min=0.0)
    guard: float = opt(1e-3, "lower bound of I - V at a spike in the adjoint jump (counted when used)", min=1e-12)
    bump: float = opt(5e-3, "silent-neuron heuristic (Wunderlich & Pehle's code): added to a layer's weights "
                            "after a mini-batch with too many silent neurons; 0 = off", min=0.0)
    quiet_hidden: float = opt(1.0, "bump the hidden weights when more than this fraction of hidden neurons "
                                   "stayed silent (mean over the mini-batch); 1 = never (the reference's 0.3 "
                                   "held Yin-Yang near 91 % here)", min=0.0, max=1.0)
    quiet_output: float = opt(0.0, "else bump the incoming weights of the output neurons that stayed silent "
                                   "as the label, when more than this fraction of samples had a silent label",
                              min=0.0, max=1.0)
    interpolate: bool = opt(True, "interpolate output spike times inside the step")
    silent_ms: float = opt(0.0, "silent-output surrogate: an output neuron that never fired counts as firing at "
                                "T + silent_ms * (1 - its peak voltage), which gives it a gradient; 0 = off "
                                "(silent outputs sit at T with no gradient)", min=0.0)


def load_yinyang(cfg: YinYangDataConfig):
    """(train x, train y, test x, test y), canonical or from ``cfg.root``."""
    if cfg.root is not None:
        xtr, ytr = load_yin_yang_arrays(cfg.root, "train")
        xte, yte = load_yin_yang_arrays(cfg.root, "test")
    else:
        xtr, ytr = yin_yang(cfg.train_size, cfg.train_seed)
        xte, yte = yin_yang(cfg.test_size, cfg.test_seed)
    if cfg.limit is not None:
        xtr, ytr, xte, yte = xtr[:cfg.limit], ytr[:cfg.limit], xte[:cfg.limit], yte[:cfg.limit]
    return xtr, ytr, xte, yte


def load_yinyang_validation(cfg: YinYangDataConfig):
    """(x, y) of the validation split (``val_size`` samples of seed ``val_seed``, or the
    published ``validation`` arrays under ``cfg.root``, their first ``val_size``), or None."""
    if cfg.val_size == 0:
        return None
    if cfg.root is not None:
        x, y = load_yin_yang_arrays(cfg.root, "validation")
        x, y = x[:cfg.val_size], y[:cfg.val_size]
    else:
        x, y = yin_yang(cfg.val_size, cfg.val_seed)
    if cfg.limit is not None:
        x, y = x[:cfg.limit], y[:cfg.limit]
    return x, y


def encode_inputs(samples: np.ndarray, data: YinYangDataConfig, steps: int, dt_ms: float) -> np.ndarray:
    """Spike raster ``(steps, n, 5)`` of Yin-Yang samples ``(n, 4)`` (x, y, 1-x, 1-y).

    ``data.stagger = 0``: :func:`spinnray.data.yinyang.encode_yin_yang`.  Else
    (wunderlich encoding only) the same with the mirrored columns moved
    ``stagger`` of a step later before rounding::

        step = rint(x * t_max / dt)               for x and y
        step = rint(x * t_max / dt + stagger)     for 1 - x and 1 - y
        bias at step 0

    Rounding loses up to half a step of each input time; since 1 - x carries
    the same value as x, plain rounding puts both on the same grid and the
    input resolves x only to ``dt / t_max`` (1/60 at 0.5 ms and 30 ms, which
    caps the canonical Yin-Yang test set near 96.7 % for any classifier).
    With ``stagger = 0.5`` the two grids interleave and resolve ``dt / (2 t_max)``.
    Raises ConfigError for stagger with another encoding or a spike at or
    beyond ``steps``; DataError from the encoder for bad samples.
    """
    if data.stagger == 0:
        return encode_yin_yang(samples, scheme=data.encoding, steps=steps, dt_ms=dt_ms, t_max_ms=data.t_max_ms)
    if data.encoding != "wunderlich":
        raise ConfigError(f"data.stagger = {data.stagger!r} with data.encoding = {data.encoding!r}: "
                          "stagger applies to the wunderlich encoding only")
    plain = spike_steps_yin_yang(samples, scheme="wunderlich", steps=steps, dt_ms=dt_ms, t_max_ms=data.t_max_ms)
    x = np.asarray(samples, np.float64)
    spike = plain.copy()
    spike[:, 2:4] = np.rint((x[:, 2:4] * data.t_max_ms) / dt_ms + data.stagger).astype(np.int64)
    if spike.size and spike.max() >= steps:
        raise ConfigError(f"data.stagger = {data.stagger!r}: an input spikes at step {int(spike.max())}, beyond "
                          f"network.steps = {steps}; raise network.steps")
    raster = np.zeros((steps, len(spike), spike.shape[1]), bool)
    raster[spike, np.arange(len(spike))[:, None], np.arange(spike.shape[1])[None, :]] = True
    return raster


def build_network(cfg: EventPropNetworkConfig, seed: int) -> Network:
    rng = np.random.default_rng([seed, 7])
    net = Network(dt_ms=cfg.dt_ms)
    net.population("input", 5, SpikeSource())
    net.population("hidden", cfg.hidden, LIF(tau_mem_ms=cfg.tau_mem_ms, tau_syn_ms=cfg.tau_syn_ms))
    net.population("output", 3, LIF(tau_mem_ms=cfg.tau_mem_ms, tau_syn_ms=cfg.tau_syn_ms))
    net.connect("input", "hidden", rng.normal(cfg.w_in_mean, cfg.w_in_std, (5, cfg.hidden)), delays=1)
    net.connect("hidden", "output", rng.normal(cfg.w_out_mean, cfg.w_out_std, (cfg.hidden, 3)), delays=1)
    return net


class EventPropTrainer:
    """Owns the simulator; one :meth:`train_batch` per mini-batch."""

    def __init__(self, net: Network, learn: EventPropLearningConfig, *, machine, cores_per_population,
                 replicas: int, backend: str, timeout_s: float = 120.0, cluster=None, schedule: str = "lockstep"):
        if isinstance(cores_per_population, int):
            cores_per_population = {"input": cores_per_population, "hidden": cores_per_population, "output": 1}
        cores_per_population = dict(cores_per_population or {})
        cores_per_population["output"] = 1          # the loss needs every output neuron on one core
        self.learn = learn
        self.replicas = replicas
        self.per_replica = -(-learn.batch_size // replicas)
        common = {"rule": "eventprop", "tau_syn_ms": net["hidden"].model.tau_syn_ms, "guard": learn.guard,
                  "lr": learn.lr, "betas": (learn.beta1, learn.beta2), "eps": learn.eps,
                  "interpolate": learn.interpolate}
        loss = ({"kind": "wunderlich", "tau0_ms": learn.tau0_ms, "tau1_ms": learn.tau1_ms, "alpha": learn.alpha}
                if learn.loss == "wunderlich" else {"kind": "bena"})
        ws = weight_store_options(machine, net)     # machine.weight_bits, synapse, ... (None: float32)
        if ws is not None:
            common["weight_store"] = ws
        learning = {"hidden": dict(common), "output": dict(common, loss=loss, silent_ms=learn.silent_ms)}
        dtype, errors = machine.dtype, ("hidden",)
        self.sim = Simulator(
            net, machine, cores_per_population=cores_per_population, batch_size=self.per_replica,
            backend=backend, timeout_s=timeout_s, replicas=replicas, learning=learning, cluster=cluster,
            error_populations=errors, schedule=schedule,
            learning_bytes=lambda pop, n: (learning_bytes(net, pop, n, self.per_replica, dtype, weight_store=ws,
                                                          error_populations=errors)
                                           if pop.name in learning else {}))
        m = self.sim.mapping
        self.learners = [pl for pl in m.placements if pl.slice.population in learning]
        self.slices = sorted({(pl.slice.population, pl.slice.lo, pl.slice.hi) for pl in self.learners})
        self.lr = learn.lr
        self.bumps = {"hidden": 0, "output": 0}

    def close(self) -> None:
        self.sim.close()

    def forward(self, x_spikes: np.ndarray, labels: np.ndarray | None, record=(), train=None):
        return self.sim.run(x_spikes.shape[0], {"input": x_spikes},
                            targets=None if labels is None else {"output": labels}, record=record, train=train)

    def train_batch(self, x_spikes: np.ndarray, labels: np.ndarray):
        """Forward, backward, reduce and update; returns the forward result.

        Forward and backward go to the cores in one call; with one replica
        there is nothing to reduce, so each core applies its own gradient in
        that same call (no gradient through the driver)."""
        if self.replicas == 1:
            res = self.forward(x_spikes, labels, train=TrainStep(1.0 / len(labels), lr=self.lr))
            self._bump(res, labels)
            return res
        res = self.forward(x_spikes, labels, train=TrainStep(1.0 / len(labels)))
        ids = [pl.core_id for pl in self.learners]
        grads = self.sim.call("gradients", cores=ids)
        total: dict[tuple, list[np.ndarray]] = {}
        for pl in sorted(self.learners, key=lambda p: p.replica):        # replica order: deterministic sums
            key = (pl.slice.population, pl.slice.lo, pl.slice.hi)
            if key not in total:
                total[key] = [g.copy() for g in grads[pl.core_id]]
            else:
                for acc, g in zip(total[key], grads[pl.core_id]):
                    acc += g
        args = {pl.core_id: (total[(pl.slice.population, pl.slice.lo, pl.slice.hi)], self.lr)
                for pl in self.learners}
        self.sim.call("apply", args, cores=ids)
        self._bump(res, labels)
        return res

    def _bump(self, res, labels: np.ndarray) -> None:
        """Remedy for silent neurons (they get no gradient), after Wunderlich &
        Pehle's training code: raise the hidden weights by ``learning.bump`` when
        more than ``quiet_hidden`` of the hidden neurons were silent; else raise
        the incoming weights of the output neurons that stayed silent as a
        sample's label -- the case that leaves the loss without a gradient.  (Their
        code raises every output weight whenever any output is silent.  With
        their hidden threshold of 0.3 the hidden rule fired ~200 times in 40
        epochs, no output rule ever fired, and Yin-Yang stayed near 91 %; with
        the hidden rule off the label rule fired ~270 times and seeds reached
        93-96 %.  The hidden rule is therefore off by default.)"""
        learn, net = self.learn, self.sim.network
        if learn.bump == 0:
            return
        quiet_hidden = float(np.mean(res.silent["hidden"])) / net["hidden"].size
        if quiet_hidden > learn.quiet_hidden:
            self.bumps["hidden"] += 1
            self.sim.call("bump", {pl.core_id: (learn.bump,) for pl in self.learners},
                          cores=[pl.core_id for pl in self.learners if pl.slice.population == "hidden"])
        elif float(np.mean(res.outputs["label_silent"])) > learn.quiet_output:
            # the labels silent anywhere in the mini-batch: every replica bumps the same columns
            cols = np.unique(np.asarray(labels)[res.outputs["label_silent"]])
            self.bumps["output"] += 1
            self.sim.call("bump", {pl.core_id: (learn.bump, cols) for pl in self.learners},
                          cores=[pl.core_id for pl in self.learners if pl.slice.population == "output"])

    def checksums(self) -> dict[tuple, list[int]]:
        """CRC32 of every slice's weights on each replica."""
        sums = self.sim.call("checksum", cores=[pl.core_id for pl in self.learners])
        out: dict[tuple, list[int]] = {}
        for pl in sorted(self.learners, key=lambda p: p.replica):
            out.setdefault((pl.slice.population, pl.slice.lo, pl.slice.hi), []).append(sums[pl.core_id])
        return out

    def state(self) -> dict:
        """Every core's state (learning cores: weights, Adam; all: counters), by core id: for checkpoints."""
        return self.sim.call("learning_state")

    def load_state(self, states: dict) -> None:
        self.sim.call("load_learning_state", {cid: (st,) for cid, st in states.items()}, cores=list(states))

    def checksum(self) -> int:
        """CRC32 over the learning cores' weight checksums, in core order."""
        crc = 0
        got = self.sim.call("checksum", cores=[pl.core_id for pl in self.learners])
        for _cid, c in sorted(got.items()):
            crc = zlib.crc32(int(c).to_bytes(4, "little"), crc)
        return crc

    def check_replicas(self) -> None:
        for key, crcs in self.checksums().items():
            if len(set(crcs)) != 1:
                raise SpinnrayError(f"replicas diverged: slice {key} has weight checksums {crcs}")

    def weights(self, replica: int = 0) -> dict[str, np.ndarray]:
        """The full weight matrices, assembled from replica ``replica``'s cores."""
        net = self.sim.network
        cores = [pl for pl in self.learners if pl.replica == replica]
        got = self.sim.call("get_weights", cores=[pl.core_id for pl in cores])
        out = {p.name: np.zeros(p.weights.shape) for p in net.projections}
        for pl in cores:
            for proj, w in zip(net.incoming(net[pl.slice.population]), got[pl.core_id]):
                out[proj.name][:, pl.slice.lo:pl.slice.hi] = w
        return out


def val_selection(history: list[dict]) -> dict:
    """Model selection on the validation set: the epoch with the best validation
    accuracy (the earliest of ties) and its test accuracy and loss; {} without one."""
    rows = [h for h in history if "val_accuracy" in h]
    if not rows:
        return {}
    best = max(rows, key=lambda h: (h["val_accuracy"], -h["epoch"]))
    return {"val_selected_epoch": best["epoch"], "val_accuracy": best["val_accuracy"],
            "val_selected_test_accuracy": best["test_accuracy"], "val_selected_test_loss": best["test_loss"]}


def _batches(n: int, size: int, order: np.ndarray):
    for first in range(0, n, size):
        yield order[first:first + size]


def evaluate(trainer: EventPropTrainer, x: np.ndarray, y: np.ndarray, batch: int,
             keep_first: bool = False) -> tuple[float, float]:
    """(accuracy, mean loss) over a data set (x already encoded as spikes).
    ``keep_first``: record the first batch's spikes into ``trainer.first_spikes``."""
    correct, loss = 0, 0.0
    for idx in _batches(len(y), batch, np.arange(len(y))):
        rec = ("spikes",) if keep_first and idx[0] == 0 else ()
        res = trainer.forward(x[:, idx], y[idx], record=rec)
        if rec:
            trainer.first_spikes = res.spikes
        correct += int((res.outputs["pred"] == y[idx]).sum())
        loss += float(res.outputs["loss"].sum())
    return correct / len(y), loss / len(y)


def run_eventprop(cfg: RunConfig, out_dir, scenario: str) -> dict:
    from spinnray.experiments.checkpoint import Checkpointer, config_fingerprint, training_data, trajectory, warm_start
    from spinnray.experiments.loop import new_position, run_epochs
    from spinnray.machine.counters import SCHEMA_VERSION
    from spinnray.report.build import save_raster
    from spinnray.experiments.runner import write_json

    net_cfg = from_dict(EventPropNetworkConfig, cfg.network, "network")
    data = from_dict(YinYangDataConfig, cfg.data, "data")
    learn = from_dict(EventPropLearningConfig, cfg.learning, "learning")
    if cfg.parallel.exchange_interval != 1:
        raise ConfigError(f"parallel.exchange_interval = {cfg.parallel.exchange_interval}: EventProp uses "
                          "delays of 1 step, so K must be 1")
    xtr, ytr, xte, yte = load_yinyang(data)
    str_ = encode_inputs(xtr, data, net_cfg.steps, net_cfg.dt_ms)
    ste = encode_inputs(xte, data, net_cfg.steps, net_cfg.dt_ms)
    val = load_yinyang_validation(data)
    if val is not None:
        sva, yva = encode_inputs(val[0], data, net_cfg.steps, net_cfg.dt_ms), val[1]
    net = build_network(net_cfg, cfg.seed)
    t_start = time.perf_counter()

    def make_trainer(cluster=cfg.cluster):
        return EventPropTrainer(net, learn, machine=cfg.machine,
                                cores_per_population=cfg.parallel.cores_per_population,
                                replicas=cfg.parallel.replicas, backend=cfg.backend,
                                timeout_s=cluster.round_timeout_s, cluster=cluster, schedule=cfg.parallel.schedule)

    trainer = make_trainer()
    init = ()
    if cfg.init_from:
        init = (warm_start(cfg.init_from, "eventprop", net, trainer.sim.mapping),)
        trainer.close()
        trainer = make_trainer()            # built from the loaded weights (a weight store's range follows them)
    setup_s = time.perf_counter() - t_start
    log.info("EventProp on %d cores (%d replica(s) x %d), backend %s; %d train / %d test samples",
             trainer.sim.mapping.n_cores, cfg.parallel.replicas, trainer.sim.mapping.n_cores // cfg.parallel.replicas,
             cfg.backend, len(ytr), len(yte))
    ck = Checkpointer(cfg, out_dir, "eventprop",
                      config_fingerprint(asdict(net_cfg), training_data(data), trajectory(learn), cfg.seed,
                                         cfg.parallel.cores_per_population, cfg.parallel.replicas,
                                         cfg.machine.identity(), *init))
    pos = new_position(learn.lr, bumps=dict(trainer.bumps))
    rng = np.random.default_rng([cfg.seed, 11])
    if cfg.resume:
        pos = ck.restore(cfg.resume, trainer, rng)
        log.info("resumed from %s at epoch %d, sample %d", pos["path"], pos["epoch"] + 1, pos["first"])
    elif ck.enabled:
        ck.save(pos, trainer, rng)          # the initial state: a failure before the first interval restarts here
    B = learn.batch_size

    def step(tr, idx, pos):
        tr.bumps = dict(pos["bumps"])
        res = tr.train_batch(str_[:, idx], ytr[idx])
        pos["bumps"] = dict(tr.bumps)
        return res

    def end_epoch(tr, epoch, pos):
        tr.check_replicas()
        last = epoch + 1 == learn.epochs
        test_acc, test_loss = evaluate(tr, ste, yte, B, keep_first=last)
        if last:
            save_raster(out_dir, tr.first_spikes, net_cfg.dt_ms)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(pos["losses"])),
               "train_accuracy": pos["correct"] / len(ytr), "test_accuracy": test_acc,
               "test_loss": test_loss, "lr": tr.lr, "train_s": round(pos["epoch_s"], 3),
               "train_events": pos["epoch_events"]}
        if val is not None:
            row["val_accuracy"], row["val_loss"] = evaluate(tr, sva, yva, B)
        pos["history"].append(row)
        log.info("epoch %d: train loss %.4f acc %.4f | test loss %.4f acc %.4f%s | %.1f s, %.3g events/s",
                 epoch + 1, row["train_loss"], row["train_accuracy"], test_loss, test_acc,
                 f" | val acc {row['val_accuracy']:.4f}" if val is not None else "", pos["epoch_s"],
                 pos["epoch_events"] / pos["epoch_s"] if pos["epoch_s"] else 0.0)
        pos["lr"] = tr.lr * learn.lr_decay

    box = {"trainer": trainer, "pos": pos}
    try:
        pos = run_epochs(box, epochs=learn.epochs, labels=ytr, batch_size=B, ck=ck, rng=rng,
                         make_trainer=make_trainer, step=step, end_epoch=end_epoch, progress=cfg.progress)
        trainer = box["trainer"]
        m = trainer.sim.metrics()
        cores, routers = trainer.sim.reports()
        crc = trainer.checksum()
    finally:
        box["trainer"].close()
    history, train_s, samples = pos["history"], pos["train_s"], pos["samples"]
    per_layer = layer_traffic(cores, samples + len(yte) * learn.epochs, samples, net_cfg.steps, net)
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "scenario": scenario, "kind": cfg.kind, "backend": cfg.backend, "seed": cfg.seed,
        "cores": m["cores"], "replicas": cfg.parallel.replicas, "steps": net_cfg.steps,
        "schedule": cfg.parallel.schedule, "epochs": learn.epochs, "batch_size": learn.batch_size,
        "wall_s": round(time.perf_counter() - t_start, 3), "setup_s": round(setup_s, 3),
        "train_s": round(train_s, 3),
        "train_samples_per_s": samples / train_s if train_s else 0.0,
        "test_accuracy": history[-1]["test_accuracy"], "test_loss": history[-1]["test_loss"],
        "best_test_accuracy": max(h["test_accuracy"] for h in history),
        **val_selection(history),
        "history": history,
        "guarded_spikes": sum(c.get("guarded_spikes", 0) for c in cores),
        "peak_rss_bytes": peak_rss_bytes(),
        "weight_bumps": dict(trainer.bumps),
        "weights_crc32": crc, "restarts": ck.restarts,
        "traffic": m["traffic"], "layers": per_layer, "memory": m["memory"], "mapping": m["mapping"],
        "machine": asdict(cfg.machine),
    }
    write_json(out_dir / "cores.json", cores)
    write_json(out_dir / "routers.json", routers)
    return metrics


def peak_rss_bytes() -> int:
    """Peak resident memory of this (driver) process; with backend=ray the cores'
    own processes are not included (their SRAM-model bytes are in ``memory``)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def layer_traffic(cores: list[dict], samples: int, train_samples: int, steps: int, net: Network) -> dict:
    """Per population: spike events per forward sample (training and test) against
    dense (T x neurons), and error events per training sample.

    ``error_events_about_per_sample`` counts the error events sent about a
    population's spikes by the cores above it: at most one per spike per core.
    """
    out = {}
    for name, pop in net.populations.items():
        rows = [c["counters"] for c in cores if c["population"] == name]
        spikes = sum(r["spike_events_sent"] for r in rows)
        out[name] = {"spike_events_per_sample": spikes / samples,
                     "dense_per_sample": steps * pop.size,
                     "spike_sparsity": spikes / (samples * steps * pop.size),
                     "error_events_sent_per_sample": sum(r["error_events_sent"] for r in rows) / train_samples}
    for proj in net.projections:
        if proj.pre.name in out:
            out[proj.pre.name]["error_events_about_per_sample"] = out[proj.post.name]["error_events_sent_per_sample"]
    return out
