"""Model-parallel e-prop scenarios: keyword spotting and cue accumulation.

The network (Rostami et al. 2022 on SpiNNaker2): ``input`` (an
:class:`~spinnray.model.neurons.AnalogSource`, written by the host into the hidden
cores) -> ``hidden`` (recurrent ALIF, no self-connections, split over
``parallel.cores_per_population`` cores) -> ``output`` (LI readout on one
core).  Every core keeps its slice's weights, gradients, Adam moments and
traces; per step the hidden cores exchange spikes through the router; at the
end of a sample the readout core sends the learning signals as error events.
``learning.batch_size = 1`` is online learning as on the chip (one Adam step
per sample); ``B > 1`` runs B samples in lockstep (one packet per step carries
all B) and takes one step per mini-batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from spinnray.config import RunConfig, from_dict, opt
from spinnray.experiments.checkpoint import Checkpointer, config_fingerprint, training_data, trajectory, warm_start
from spinnray.errors import ConfigError, DataError
from spinnray.rules.eprop.numerics import SURROGATES
from spinnray.rules.eprop.core import learning_bytes
from spinnray.model.network import Network
from spinnray.model.neurons import ALIF, LI, AnalogSource
from spinnray.backends.backend import TrainStep
from spinnray.simulator import Simulator

log = logging.getLogger(__name__)

__all__ = ["EPropNetworkConfig", "EPropDataConfig", "EPropLearningConfig", "build_eprop_network",
           "EPropTrainer", "load_eprop_data", "run_eprop", "TRAINING_STATE"]

#: memory categories that make up the training state (the paper's 680 KB)
TRAINING_STATE = ("weights", "weight_accumulator", "gradients", "optimizer", "traces", "learning_signal", "feedback")


@dataclass(frozen=True)
class EPropNetworkConfig:
    hidden: int = opt(120, "recurrent ALIF neurons (Rostami et al.: 120)", min=1)
    dt_ms: float = opt(1.0, "ms per step", min=1e-6)
    tau_mem_ms: float = opt(5.0, "hidden membrane time constant (ms)", min=1e-6)
    tau_adapt_ms: float = opt(150.0, "threshold-adaptation time constant (ms)", min=1e-6)
    beta: float = opt(0.184, "threshold-adaptation strength (0 = LIF)", min=0.0)
    v_th: float = opt(1.6, "baseline threshold", min=1e-9)
    tau_out_ms: float = opt(10.0, "readout time constant (ms)", min=1e-6)
    w_in_scale: float = opt(1.0, "input weights ~ N(0, scale / sqrt(inputs))", min=0.0)
    w_rec_scale: float = opt(1.0, "recurrent weights ~ N(0, scale / sqrt(hidden)), no self-connections", min=0.0)
    w_out_scale: float = opt(1.0, "readout weights ~ N(0, scale / sqrt(hidden))", min=0.0)
    recurrent: bool = opt(True, "recurrent hidden weights (false: feed-forward hidden layer)")
    refractory_steps: int = opt(0, "hidden neurons cannot spike for this many steps after a spike (Bellec et "
                                   "al.'s n_ref = 5 blocks 4 steps: 4 here)", min=0)
    n_lif: int = opt(0, "of the hidden neurons, how many are plain LIF (beta = 0; Bellec et al.'s cue "
                        "task: 50 of 100), in their own population 'lif' on their own cores", min=0)


@dataclass(frozen=True)
class EPropDataConfig:
    name: str = opt("keywords", "keywords (offline espeak-ng set) | speech_commands (real GSC v1 at root) | cue",
                    choices=("keywords", "speech_commands", "cue"))
    root: str | None = opt(None, "data directory: the GSC v1 root, or where the offline keyword set is "
                                 "written (null = ~/.cache/spinnray/keywords)")
    cache_dir: str | None = opt(None, "feature cache directory (null = inside root)")
    per_word: int = opt(500, "offline keyword set: clips per word", min=1)
    data_seed: int = opt(0, "offline keyword set / cue task generator seed", min=0)
    limit: int | None = opt(None, "use only the first N training and N test samples", min=1)
    train_size: int = opt(2000, "cue task: training trials", min=1)
    test_size: int = opt(500, "cue task: test trials", min=1)
    test_seed: int = opt(1, "cue task: test-set seed", min=0)
    n_cues: int = opt(7, "cue task: cues per trial (odd)", min=1)
    total_ms: float = opt(2250.0, "cue task: trial length (ms)", min=1.0)
    p_group: float | None = opt(None, "cue task: null = every cue left or right with p 1/2; p = each trial "
                                      "favours a random side and puts every cue there with p 1 - p (Bellec "
                                      "et al.'s generator: 0.3, an easier task)", min=0.0, max=1.0)
    resample: bool = opt(False, "cue task: train every epoch on fresh trials (epoch e >= 1 uses the seed "
                                "data_seed + RESAMPLE_STRIDE x e), as Bellec et al. did; false = the same "
                                "train_size trials every epoch")


@dataclass(frozen=True)
class EPropLearningConfig:
    rule: str = opt("eprop", "learning rule", choices=("eprop",))
    epochs: int = opt(10, "passes over the training set", min=1)
    batch_size: int = opt(1, "samples per update: 1 = online, as on the chip; B = lockstep mini-batch", min=1)
    lr: float = opt(0.01, "Adam learning rate (Rostami et al.: 0.01)", min=0.0)
    lr_decay: float = opt(0.3, "learning-rate factor every lr_decay_every epochs", min=0.0, max=1.0)
    lr_decay_every: int = opt(6, "epochs between learning-rate decays", min=1)
    beta1: float = opt(0.9, "Adam beta1", min=0.0, max=1.0)
    beta2: float = opt(0.999, "Adam beta2", min=0.0, max=1.0)
    eps: float = opt(1e-5, "Adam epsilon (Rostami et al.: 1e-5)", min=0.0)
    weight_decay: float = opt(0.0, "L2 coefficient added to every gradient", min=0.0)
    surrogate: str = opt("multi_gaussian", "pseudo-derivative", choices=SURROGATES)
    gamma: float = opt(0.5, "pseudo-derivative scale (triangle: 0.3, multi_gaussian: 0.5)", min=1e-9)
    feedback: str = opt("symmetric", "learning-signal weights: symmetric (W_out) or random (fixed)",
                        choices=("symmetric", "random"))
    window_steps: int | None = opt(None, "loss on the mean readout of the last N steps (null = all; "
                                         "cue: the recall period)", min=1)
    eval_every: int = opt(1, "evaluate on the test set every N epochs (and after the last)", min=1)
    rate_reg: float = opt(0.0, "firing-rate regulariser c (Bellec et al.'s reg_f, their value 1): the loss "
                               "gains c sum_j (r_j - r*)^2, rates in spikes per ms; 0 = off", min=0.0)
    rate_target_hz: float = opt(10.0, "the regulariser's target rate r* (Hz; Bellec et al.: 10)", min=0.0)


def build_eprop_network(cfg: EPropNetworkConfig, n_in: int, n_out: int, seed: int) -> Network:
    """The input -> recurrent hidden -> readout network with seeded initial weights.

    With ``cfg.n_lif = m > 0`` the first m hidden neurons are plain LIF (ALIF with
    beta = 0) in a population ``lif`` and the other ``hidden - m`` stay in ``hidden``;
    one population per neuron model, as a SpiNNaker core runs one model.  The weights
    are the same draws as for one population, split by rows and columns.
    """
    rng = np.random.default_rng([seed, 5])
    h, m = cfg.hidden, cfg.n_lif
    if not isinstance(m, int) or isinstance(m, bool) or not 0 <= m < h:
        raise ConfigError(f"network.n_lif = {m!r}: expected an int in [0, network.hidden = {h}) (an all-LIF "
                          "network is network.beta = 0)")
    net = Network(dt_ms=cfg.dt_ms)
    net.population("input", n_in, AnalogSource())
    pops = [("lif", slice(0, m)), ("hidden", slice(m, h))] if m else [("hidden", slice(0, h))]
    for name, sl in pops:
        beta = 0.0 if name == "lif" else cfg.beta
        net.population(name, sl.stop - sl.start, ALIF(tau_mem_ms=cfg.tau_mem_ms, tau_adapt_ms=cfg.tau_adapt_ms,
                                                      beta=beta, v_th=cfg.v_th,
                                                      refractory_steps=cfg.refractory_steps))
    net.population("output", n_out, LI(tau_mem_ms=cfg.tau_out_ms, tau_syn_ms=0.0))
    w_in = rng.normal(0, cfg.w_in_scale / np.sqrt(n_in), (n_in, h))
    for name, sl in pops:
        net.connect("input", name, w_in[:, sl])
    if cfg.recurrent:
        w_rec = rng.normal(0, cfg.w_rec_scale / np.sqrt(h), (h, h))
        for pre, psl in pops:
            for post, qsl in pops:
                mask = ~np.eye(h, dtype=bool)[psl, qsl]
                net.connect(pre, post, w_rec[psl, qsl], delays=1, mask=mask)
    w_out = rng.normal(0, cfg.w_out_scale / np.sqrt(h), (h, n_out))
    for name, sl in pops:
        net.connect(name, "output", w_out[sl], delays=1)
    return net


def network_identity(cfg: EPropNetworkConfig) -> dict:
    """The network options for a checkpoint's fingerprint (``n_lif`` and ``refractory_steps``
    left out at 0: checkpoints from before these options match runs without them)."""
    out = asdict(cfg)
    for key in ("n_lif", "refractory_steps"):
        if out.get(key) == 0:
            del out[key]
    return out


def hidden_populations(net: Network) -> list[str]:
    """The recurrent populations of an e-prop network: ``hidden`` and, if any, ``lif``."""
    return [name for name in ("lif", "hidden") if name in net.populations]


def hidden_core_split(net: Network, cores) -> dict[str, int]:
    """Cores per hidden population: ``cores`` (int) shared in proportion to the neurons
    (at least one each), or a dict naming them."""
    pops = hidden_populations(net)
    if isinstance(cores, dict):
        missing = [p for p in pops if p not in cores]
        if missing:
            raise ConfigError(f"parallel.cores_per_population = {dict(cores)}: expected cores for {pops}")
        return {p: cores[p] for p in pops}
    if len(pops) == 1:
        return {pops[0]: cores}
    if not isinstance(cores, int) or isinstance(cores, bool) or cores < len(pops):
        raise ConfigError(f"parallel.cores_per_population = {cores!r}: the hidden layer has {len(pops)} "
                          f"populations ({', '.join(pops)}, one neuron model each); expected at least {len(pops)}")
    total = sum(net[p].size for p in pops)
    lif = min(max(1, round(cores * net["lif"].size / total)), cores - 1)
    return {"lif": lif, "hidden": cores - lif}


class EPropTrainer:
    """Owns the simulator; :meth:`train_batch` is forward, learning signals, Adam on every core."""

    def __init__(self, net: Network, learn: EPropLearningConfig, *, machine, hidden_cores,
                 backend: str, timeout_s: float = 120.0, batch_size: int | None = None, cluster=None):
        if learn.window_steps is not None and not isinstance(learn.window_steps, int):
            raise ConfigError(f"learning.window_steps = {learn.window_steps!r}: expected null or an int")
        common = {"rule": "eprop", "lr": learn.lr, "betas": (learn.beta1, learn.beta2), "eps": learn.eps,
                  "weight_decay": learn.weight_decay, "window_steps": learn.window_steps,
                  "tau_out_ms": net["output"].model.tau_mem_ms}
        from spinnray.rules.eprop.core import weight_store_options

        ws = weight_store_options(machine, net)     # machine.weight_bits, synapse, ... (None: float32)
        if ws is not None:
            common["weight_store"] = ws
        hidden = dict(common, surrogate=learn.surrogate, gamma=learn.gamma, rate_reg=learn.rate_reg,
                      rate_target_hz=learn.rate_target_hz)
        output = dict(common, feedback=learn.feedback, feedback_seed=0)
        split = hidden_core_split(net, hidden_cores)
        self.learning = {**{p: hidden for p in split}, "output": output}
        self.learn = learn
        self.batch = batch_size or learn.batch_size
        dtype = machine.dtype
        self.sim = Simulator(
            net, machine, cores_per_population={**split, "output": 1},
            batch_size=self.batch, backend=backend, timeout_s=timeout_s, learning=self.learning, cluster=cluster,
            error_populations=tuple(split),
            learning_bytes=lambda pop, n: learning_bytes(net, pop, n, self.batch, dtype, learn.feedback, ws,
                                                        rate_reg=learn.rate_reg > 0))
        self.learners = [pl.core_id for pl in self.sim.mapping.placements]
        self.lr = learn.lr

    def close(self) -> None:
        self.sim.close()

    def forward(self, x: np.ndarray, labels: np.ndarray | None, record=()):
        """``x`` (steps, batch, inputs) floats."""
        return self.sim.run(x.shape[0], {"input": x}, targets=None if labels is None else {"output": labels},
                            record=record)

    def train_batch(self, x: np.ndarray, labels: np.ndarray):
        """Forward, the learning signals (one reverse round) and every core's Adam step,
        in one call to each core."""
        return self.sim.run(x.shape[0], {"input": x}, targets={"output": labels},
                            train=TrainStep(1.0 / len(labels), rounds=1, lr=self.lr))

    def evaluate(self, x: np.ndarray, y: np.ndarray, keep_first: bool = False) -> tuple[float, float]:
        """(accuracy, mean loss); ``x`` (samples, steps, inputs).  ``keep_first``:
        record the spikes of the first batch into ``self.first_spikes``."""
        correct, loss = 0, 0.0
        for first in range(0, len(y), self.batch):
            xb = np.ascontiguousarray(x[first:first + self.batch].transpose(1, 0, 2))
            rec = ("spikes",) if keep_first and first == 0 else ()
            res = self.forward(xb, y[first:first + self.batch], record=rec)
            if rec:
                self.first_spikes = res.spikes
            correct += int((res.outputs["pred"] == y[first:first + self.batch]).sum())
            loss += float(res.outputs["loss"].sum())
        return correct / len(y), loss / len(y)

    def checksum(self) -> int:
        """CRC32 over every core's weights, in core order."""
        import zlib

        crc = 0
        for _cid, c in sorted(self.sim.call("checksum").items()):
            crc = zlib.crc32(int(c).to_bytes(4, "little"), crc)
        return crc

    def state(self) -> dict:
        return self.sim.call("learning_state")

    def load_state(self, states: dict) -> None:
        self.sim.call("load_learning_state", {cid: (st,) for cid, st in states.items()})

    def weights(self) -> dict[str, np.ndarray]:
        net = self.sim.network
        got = self.sim.call("get_weights")
        out = {p.name: np.zeros(p.weights.shape) for p in net.projections}
        for pl in self.sim.mapping.placements:
            for proj, w in zip(net.incoming(net[pl.slice.population]), got[pl.core_id]):
                out[proj.name][:, pl.slice.lo:pl.slice.hi] = w
        return out


#: seed stride between the fresh training sets of ``data.resample`` (the test sets use 10,000 + test_seed)
RESAMPLE_STRIDE = 1_000_003


def epoch_seed(cfg: EPropDataConfig, epoch: int) -> int:
    """Seed of the cue training trials of ``epoch`` (0-based): ``data_seed`` for the first epoch
    and whenever ``data.resample`` is false, else ``data_seed + RESAMPLE_STRIDE * epoch``."""
    return cfg.data_seed + (RESAMPLE_STRIDE * epoch if cfg.resample else 0)


def epoch_training_set(cfg: EPropDataConfig, epoch: int, steps_hint: float = 1.0):
    """``(x (N, T, C) float32, y int64)``: the cue training trials of ``epoch`` (see :func:`epoch_seed`)."""
    from spinnray.data.cue import cue_accumulation

    x, y = cue_accumulation(cfg.train_size, epoch_seed(cfg, epoch), n_cues=cfg.n_cues, total_ms=cfg.total_ms,
                            dt_ms=steps_hint, p_group=cfg.p_group)
    if cfg.limit is not None:
        x, y = x[:cfg.limit], y[:cfg.limit]
    return np.asarray(x, np.float32), np.asarray(y, np.int64)


def check_resample(cfg: EPropDataConfig) -> None:
    """ConfigError unless ``data.resample`` is false or the data are the cue task (a generator)."""
    if cfg.resample and cfg.name != "cue":
        raise ConfigError(f"data.resample = true with data.name = {cfg.name!r}: only the cue task generates "
                          "fresh trials; expected data.resample = false")


class EpochData:
    """The training arrays, refilled in place with each epoch's fresh trials under ``data.resample``
    (``x``, ``y`` keep their identity, so the loop's views of them stay valid)."""

    def __init__(self, cfg: EPropDataConfig, x: np.ndarray, y: np.ndarray, steps_hint: float = 1.0):
        self.cfg, self.x, self.y, self.dt, self.epoch = cfg, x, y, steps_hint, 0

    def begin(self, epoch: int) -> None:
        if not self.cfg.resample or epoch == self.epoch:
            return
        x, y = epoch_training_set(self.cfg, epoch, self.dt)
        self.x[...], self.y[...] = x, y
        self.epoch = epoch
        log.info("epoch %d: %d fresh training trials (seed %d)", epoch + 1, len(y), epoch_seed(self.cfg, epoch))


def load_eprop_data(cfg: EPropDataConfig, steps_hint: float = 1.0):
    """``(x_train (N, T, C) float32, y_train, x_test, y_test, class names, window_steps or None)``."""
    check_resample(cfg)
    if cfg.name == "cue":
        from spinnray.data.cue import cue_accumulation, cue_decision_window

        kw = dict(n_cues=cfg.n_cues, total_ms=cfg.total_ms, dt_ms=steps_hint, p_group=cfg.p_group)
        xtr, ytr = cue_accumulation(cfg.train_size, epoch_seed(cfg, 0), **kw)
        xte, yte = cue_accumulation(cfg.test_size, cfg.test_seed + 10_000, **kw)
        win = cue_decision_window(n_cues=cfg.n_cues, total_ms=cfg.total_ms, dt_ms=steps_hint)
        names = ["left", "right"]
        window = win.stop - win.start
    else:
        from pathlib import Path

        from spinnray.data import speech

        if cfg.name == "speech_commands":
            if cfg.root is None:
                raise ConfigError("data.root = null: data.name=speech_commands needs the path of the "
                                  "speech_commands_v0.01 directory")
            root = Path(cfg.root).expanduser()
        else:
            from spinnray.data.keywords import ensure_keyword_dataset

            root = Path(cfg.root or "~/.cache/spinnray/keywords").expanduser()
            root = ensure_keyword_dataset(root, per_word=cfg.per_word, seed=cfg.data_seed)
        xtr, ytr, names = speech.load_speech_commands(root, "training", cache_dir=cfg.cache_dir, progress=True)
        xte, yte, _ = speech.load_speech_commands(root, "testing", cache_dir=cfg.cache_dir, progress=True)
        window = None
    if cfg.limit is not None:
        xtr, ytr, xte, yte = xtr[:cfg.limit], ytr[:cfg.limit], xte[:cfg.limit], yte[:cfg.limit]
    if len(ytr) == 0 or len(yte) == 0:
        raise DataError(f"data.name = {cfg.name!r}: empty training or test split")
    return (np.asarray(xtr, np.float32), np.asarray(ytr, np.int64), np.asarray(xte, np.float32),
            np.asarray(yte, np.int64), list(names), window)


def eprop_layers(cores: list[dict], net: Network, steps: int, train_samples: int, test_samples: int) -> dict:
    """Per population with cores: forward spike events per sample (training and
    test) against dense (T x neurons); the readout's learning-signal error
    events per training sample, and the hidden cores' received ones."""
    out = {}
    forward = train_samples + test_samples
    for name, pop in net.populations.items():
        rows = [c["counters"] for c in cores if c["population"] == name]
        if not rows:
            continue                 # the AnalogSource input: written by the host, no events
        spikes = sum(r["spike_events_sent"] for r in rows)
        out[name] = {"spike_events_per_sample": spikes / forward if forward else 0.0,
                     "dense_per_sample": steps * pop.size,
                     "spike_sparsity": spikes / (forward * steps * pop.size) if forward else 0.0,
                     "error_events_sent_per_sample":
                         sum(r["error_events_sent"] for r in rows) / train_samples if train_samples else 0.0}
        if isinstance(pop.model, ALIF):
            out[name]["learning_signals_per_sample"] = \
                sum(r["error_events_received"] for r in rows) / train_samples if train_samples else 0.0
    return out


def training_state_bytes(memory_per_core: list[dict]) -> int:
    """Sum of the training-state categories over the cores (weights, gradients, Adam, traces)."""
    return sum(v for mem in memory_per_core for k, v in mem.items() if k in TRAINING_STATE)


def run_eprop(cfg: RunConfig, out_dir, scenario: str) -> dict:
    from spinnray.machine.counters import SCHEMA_VERSION
    from spinnray.experiments.loop import new_position, run_epochs
    from spinnray.experiments.runner import write_json
    from spinnray.experiments.eventprop import peak_rss_bytes

    net_cfg = from_dict(EPropNetworkConfig, cfg.network, "network")
    data = from_dict(EPropDataConfig, cfg.data, "data")
    learn = from_dict(EPropLearningConfig, cfg.learning, "learning")
    if cfg.parallel.exchange_interval != 1:
        raise ConfigError(f"parallel.exchange_interval = {cfg.parallel.exchange_interval}: the recurrent "
                          "spikes have a delay of 1 step, so K must be 1")
    if cfg.parallel.replicas != 1:
        raise ConfigError(f"parallel.replicas = {cfg.parallel.replicas}: e-prop here is model-parallel; "
                          "expected 1")
    if cfg.parallel.schedule != "lockstep":
        raise ConfigError(f"parallel.schedule = {cfg.parallel.schedule!r}: the recurrent ALIF layer exchanges "
                          "spikes every step; expected 'lockstep'")
    xtr, ytr, xte, yte, names, window = load_eprop_data(data, net_cfg.dt_ms)
    if learn.window_steps is None and window is not None:
        from dataclasses import replace

        learn = replace(learn, window_steps=window)
    steps, n_in = xtr.shape[1], xtr.shape[2]
    net = build_eprop_network(net_cfg, n_in, len(names), cfg.seed)
    hidden_cores = cfg.parallel.cores_per_population
    if isinstance(hidden_cores, dict):
        hidden_cores = {k: v for k, v in hidden_cores.items() if k in hidden_populations(net)}
        if list(hidden_cores) == ["hidden"]:
            hidden_cores = hidden_cores["hidden"]
    hidden_core_split(net, hidden_cores)        # a bad split fails here, before any core is built
    t_start = time.perf_counter()

    def make_trainer(cluster=cfg.cluster):
        return EPropTrainer(net, learn, machine=cfg.machine, hidden_cores=hidden_cores, backend=cfg.backend,
                            timeout_s=cluster.round_timeout_s, cluster=cluster)

    trainer = make_trainer()
    init = ()
    if cfg.init_from:
        init = (warm_start(cfg.init_from, "eprop", net, trainer.sim.mapping),)
        trainer.close()
        trainer = make_trainer()            # built from the loaded weights (a weight store's range follows them)
    setup_s = time.perf_counter() - t_start
    m0 = trainer.sim.mapping
    log.info("e-prop on %d cores (%d hidden), backend %s; %d train / %d test samples of %d steps x %d inputs",
             m0.n_cores, sum(len(m0.cores_of(p)) for p in hidden_populations(net)), cfg.backend, len(ytr), len(yte), steps, n_in)
    B = learn.batch_size
    ck = Checkpointer(cfg, out_dir, "eprop", config_fingerprint(network_identity(net_cfg), training_data(data), trajectory(learn),
                                                                 cfg.seed, hidden_cores, cfg.machine.identity(), *init))
    pos = new_position(learn.lr, tested_samples=0)
    rng = np.random.default_rng([cfg.seed, 13])
    if cfg.resume:
        pos = ck.restore(cfg.resume, trainer, rng)
        log.info("resumed from %s at epoch %d, sample %d", pos["path"], pos["epoch"] + 1, pos["first"])
    elif ck.enabled:
        ck.save(pos, trainer, rng)          # the initial state: a failure before the first interval restarts here

    fresh = EpochData(data, xtr, ytr, net_cfg.dt_ms)

    def step(tr, idx, pos):
        return tr.train_batch(np.ascontiguousarray(xtr[idx].transpose(1, 0, 2)), ytr[idx])

    def end_epoch(tr, epoch, pos):
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(pos["losses"])),
               "train_accuracy": pos["correct"] / len(ytr), "lr": tr.lr}
        if (epoch + 1) % learn.eval_every == 0 or epoch + 1 == learn.epochs:
            log.info("epoch %d: testing on %d samples", epoch + 1, len(yte))
            last = epoch + 1 == learn.epochs
            row["test_accuracy"], row["test_loss"] = tr.evaluate(xte, yte, keep_first=last)
            pos["tested_samples"] += len(yte)
            if last:
                from spinnray.report.build import save_raster

                save_raster(out_dir, tr.first_spikes, net_cfg.dt_ms)
        pos["history"].append(row)
        log.info("epoch %d: train loss %.4f acc %.4f | test acc %s | %.1f s, %.3g events/s", epoch + 1,
                 row["train_loss"], row["train_accuracy"],
                 f"{row['test_accuracy']:.4f}" if "test_accuracy" in row else "-", pos["epoch_s"],
                 pos["epoch_events"] / pos["epoch_s"] if pos["epoch_s"] else 0.0)
        if (epoch + 1) % learn.lr_decay_every == 0:
            pos["lr"] = tr.lr * learn.lr_decay

    box = {"trainer": trainer, "pos": pos}
    try:
        pos = run_epochs(box, epochs=learn.epochs, labels=ytr, batch_size=B, ck=ck, rng=rng,
                         make_trainer=make_trainer, step=step, end_epoch=end_epoch, progress=cfg.progress,
                         loss_window=50, begin_epoch=fresh.begin)
        trainer = box["trainer"]
        m = trainer.sim.metrics()
        cores, routers = trainer.sim.reports()
        crc = trainer.checksum()
    finally:
        box["trainer"].close()
    history, train_s, samples, tested_samples = pos["history"], pos["train_s"], pos["samples"], pos["tested_samples"]
    tested = [h for h in history if "test_accuracy" in h]
    emulated_ms = samples * steps * net_cfg.dt_ms
    hidden_reports = [c for c in cores if c["population"] in hidden_populations(net)]
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "scenario": scenario, "kind": cfg.kind, "backend": cfg.backend, "seed": cfg.seed,
        "data": data.name, "classes": names, "cores": m["cores"], "hidden_cores": len(hidden_reports),
        "steps": steps, "inputs": n_in, "epochs": learn.epochs, "batch_size": B,
        "wall_s": round(time.perf_counter() - t_start, 3), "setup_s": round(setup_s, 3),
        "train_s": round(train_s, 3),
        "train_samples_per_s": samples / train_s if train_s else 0.0,
        "realtime_factor": emulated_ms / (train_s * 1000) if train_s else 0.0,
        "test_accuracy": tested[-1]["test_accuracy"], "test_loss": tested[-1]["test_loss"],
        "best_test_accuracy": max(h["test_accuracy"] for h in tested),
        "history": history,
        "training_state_bytes": training_state_bytes([c["memory"] for c in cores]),
        "max_core_bytes": max(sum(c["memory"].values()) for c in cores),
        "peak_rss_bytes": peak_rss_bytes(),
        "samples": samples + tested_samples,
        "weights_crc32": crc, "restarts": ck.restarts,
        "layers": eprop_layers(cores, net, steps, samples, tested_samples),
        "traffic": m["traffic"], "memory": m["memory"], "mapping": m["mapping"],
        "machine": asdict(cfg.machine),
    }
    write_json(out_dir / "cores.json", cores)
    write_json(out_dir / "routers.json", routers)
    return metrics
