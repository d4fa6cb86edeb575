"""What ``run.py`` runs: one scenario kind, from a typed config to ``metrics.json``.

Every run writes into its output directory:

* ``metrics.json``: the summary (documented key by key in README.md);
* ``cores.json``: one report per core (counters, memory by category, notes);
* ``routers.json``: one report per router (counters, traffic matrix, notes);
* ``config.yaml`` is written by Hydra itself under ``.hydra/``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from spinnray.config import RunConfig, from_dict, opt
from spinnray.errors import ConfigError
from spinnray.machine.counters import SCHEMA_VERSION
from spinnray.model.network import Network
from spinnray.model.neurons import model_from_dict
from spinnray.report.build import report_after_run, save_raster
from spinnray.simulator import Simulator, poisson_spikes

__all__ = ["ForwardNetworkConfig", "ForwardDataConfig", "ForwardLearningConfig",
           "build_forward_network", "run", "write_json"]

log = logging.getLogger("spinnray")


@dataclass(frozen=True)
class ForwardNetworkConfig:
    """A network written out in YAML: populations and random projections."""

    steps: int = opt(500, "steps per trial (network.steps = T)", min=1)
    dt_ms: float = opt(1.0, "milliseconds per step", min=1e-6)
    populations: dict = opt(None, "name -> {size, model: source|lif|alif|li, model parameters; "
                                  "rate_hz for a source}", factory=dict)
    projections: tuple[dict, ...] = opt((), "list of {pre, post, p_connect, weight_mean, weight_std, "
                                            "delay | delay_min and delay_max}", factory=tuple)


@dataclass(frozen=True)
class ForwardDataConfig:
    """Poisson input trials."""

    name: str = opt("poisson", "input generator", choices=("poisson",))
    trials: int = opt(4, "input trials (samples) per epoch", min=1)
    limit: int | None = opt(None, "use only the first N trials (null = all)", min=1)


@dataclass(frozen=True)
class ForwardLearningConfig:
    """No learning: ``epochs`` repeats the trials (fresh input spikes each epoch)."""

    rule: str = opt("none", "learning rule", choices=("none",))
    epochs: int = opt(1, "passes over the trials", min=1)


_PROJ_KEYS = {"pre", "post", "p_connect", "weight_mean", "weight_std", "delay", "delay_min", "delay_max", "name"}


def build_forward_network(cfg: ForwardNetworkConfig, seed: int) -> tuple[Network, dict[str, float]]:
    """The network of ``cfg`` with weights drawn from ``seed``; and source rates in Hz."""
    if not cfg.populations:
        raise ConfigError("network.populations is empty: expected name -> {size, model, ...}")
    rng = np.random.default_rng([seed, 1])
    net = Network(dt_ms=cfg.dt_ms)
    rates = {}
    for name, spec in cfg.populations.items():
        spec = dict(spec)
        where = f"network.populations.{name}"
        size = spec.pop("size", None)
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"{where}.size = {size!r}: expected an integer >= 1")
        rate = spec.pop("rate_hz", None)
        model = model_from_dict(spec, where)
        if model.kind == "source":
            if not isinstance(rate, (int, float)) or rate < 0:
                raise ConfigError(f"{where}.rate_hz = {rate!r}: a source needs a rate in Hz >= 0")
            rates[name] = float(rate)
        elif rate is not None:
            raise ConfigError(f"{where}.rate_hz: only a source population takes a rate")
        net.population(name, size, model)
    for i, spec in enumerate(cfg.projections):
        where = f"network.projections[{i}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} = {spec!r}: expected a mapping")
        unknown = sorted(set(spec) - _PROJ_KEYS)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key; allowed keys are {sorted(_PROJ_KEYS)}")
        for key in ("pre", "post"):
            if spec.get(key) not in net.populations:
                raise ConfigError(f"{where}.{key} = {spec.get(key)!r}: expected one of {sorted(net.populations)}")
        pre, post = net[spec["pre"]], net[spec["post"]]
        p = spec.get("p_connect", 1.0)
        if not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ConfigError(f"{where}.p_connect = {p!r}: expected a probability in [0, 1]")
        shape = (pre.size, post.size)
        mask = None if p == 1 else rng.random(shape) < p
        w = rng.normal(float(spec.get("weight_mean", 0.0)), float(spec.get("weight_std", 0.0)), shape)
        if "delay" in spec:
            delays = spec["delay"]
        elif "delay_min" in spec and "delay_max" in spec:
            lo, hi = spec["delay_min"], spec["delay_max"]
            if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
                raise ConfigError(f"{where}: delay_min = {lo!r}, delay_max = {hi!r}; expected ints 1 <= min <= max")
            delays = rng.integers(lo, hi + 1, shape)
        else:
            delays = 1
        net.connect(pre, post, w, delays=delays, mask=mask, name=spec.get("name"))
    return net, rates


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (set, tuple)):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def events_rate(events: int, since: float) -> str:
    """Events per second since ``since`` (a ``time.perf_counter()`` value), for
    progress bars and log lines: ``"1.23e+05"``."""
    elapsed = time.perf_counter() - since
    return f"{events / elapsed:.3g}" if elapsed > 0 else "-"


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="trial", disable=not enabled, dynamic_ncols=True, leave=False)


def run_forward(cfg: RunConfig, out_dir: Path, scenario: str) -> dict:
    net_cfg = from_dict(ForwardNetworkConfig, cfg.network, "network")
    data = from_dict(ForwardDataConfig, cfg.data, "data")
    learning = from_dict(ForwardLearningConfig, cfg.learning, "learning")
    net, rates = build_forward_network(net_cfg, cfg.seed)
    trials = min(data.trials, data.limit or data.trials)
    batch = cfg.parallel.batch_size * cfg.parallel.replicas      # trials per run, shared by the replicas
    t_start = time.perf_counter()
    sim = Simulator(net, cfg.machine, cores_per_population=cfg.parallel.cores_per_population,
                    exchange_interval=cfg.parallel.exchange_interval, batch_size=cfg.parallel.batch_size,
                    backend=cfg.backend, timeout_s=cfg.cluster.round_timeout_s, replicas=cfg.parallel.replicas,
                    cluster=cfg.cluster, schedule=cfg.parallel.schedule)
    setup_s = time.perf_counter() - t_start
    log.info("mapped %d populations onto %d cores on %d chip(s); backend %s",
             len(net.populations), sim.mapping.n_cores, sim.mapping.summary()["chips_used"], cfg.backend)
    spike_counts = {name: 0 for name, p in net.populations.items() if p.model.spiking}
    run_s = 0.0
    try:
        with _progress(trials * learning.epochs, f"{scenario}", cfg.progress) as bar:
            for epoch in range(learning.epochs):
                for first in range(0, trials, batch):
                    b = min(batch, trials - first)
                    # One generator per trial: the trials do not depend on how they are batched.
                    gens = [np.random.default_rng([cfg.seed, 2, epoch, first + j]) for j in range(b)]
                    inputs = {name: np.concatenate([poisson_spikes(rate, net_cfg.steps, 1, net[name].size,
                                                                   net.dt_ms, g) for g in gens], axis=1)
                              for name, rate in rates.items()}
                    t0 = time.perf_counter()
                    res = sim.run(net_cfg.steps, inputs, record=cfg.record)
                    run_s += time.perf_counter() - t0
                    if epoch == 0 and first == 0 and res.spikes:       # the report's raster: sample 0
                        save_raster(out_dir, res.spikes, net.dt_ms)
                    for name, s in res.spikes.items():
                        spike_counts[name] += int(s.sum())
                    bar.update(b)
                    bar.set_postfix(spikes_per_s=f"{sum(spike_counts.values()) / run_s:.3g}")
        m = sim.metrics()
        cores, routers = sim.reports()
    finally:
        sim.close()
    samples = trials * learning.epochs
    duration_s = samples * net_cfg.steps * net.dt_ms / 1000.0
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "scenario": scenario,
        "kind": cfg.kind,
        "backend": cfg.backend,
        "seed": cfg.seed,
        "cores": m["cores"],
        "steps": net_cfg.steps,
        "samples": samples,
        "epochs": learning.epochs,
        "exchange_interval": cfg.parallel.exchange_interval,
        "schedule": cfg.parallel.schedule,
        "batch_size": cfg.parallel.batch_size,
        "replicas": cfg.parallel.replicas,
        "wall_s": round(time.perf_counter() - t_start, 4),
        "setup_s": round(setup_s, 4),
        "run_s": round(run_s, 4),
        "ms_per_step": 1000.0 * run_s / (samples * net_cfg.steps / batch),
        "realtime_factor": duration_s / run_s if run_s else 0.0,
        "rates_hz": {k: v / (samples * net_cfg.steps * net[k].size) * 1000.0 / net.dt_ms
                     for k, v in spike_counts.items()},
        "traffic": m["traffic"],
        "memory": m["memory"],
        "mapping": m["mapping"],
        "machine": asdict(cfg.machine),
    }
    write_json(out_dir / "cores.json", cores)
    write_json(out_dir / "routers.json", routers)
    return metrics


def _runners():
    from spinnray.rules.bptt.dense import run_dense
    from spinnray.experiments.eprop import run_eprop
    from spinnray.experiments.eventprop import run_eventprop

    return {"forward": run_forward, "eventprop": run_eventprop, "eprop": run_eprop, "bptt": run_dense}


def check_weight_store_kind(cfg: RunConfig) -> None:
    """Low-precision and PCM weights live in the learning cores (kinds ``eprop`` and ``eventprop``);
    a ``forward`` or dense ``bptt`` run keeps float weights, so asking it for them is a ConfigError
    instead of a run that silently ignores the setting (a sweep then lists the job with the reason)."""
    m = cfg.machine
    if cfg.kind in ("eprop", "eventprop") or m.weight_store is None:
        return
    raise ConfigError(f"machine.weight_bits = {m.weight_bits}, machine.synapse = {m.synapse} with a scenario of "
                      f"kind {cfg.kind}: low-precision and PCM weights are modelled in the learning cores of "
                      "kinds eprop and eventprop only; expected machine.weight_bits=32 and machine.synapse=ideal")


def run(cfg: RunConfig, out_dir: Path, scenario: str) -> dict:
    """Run ``cfg`` and write ``metrics.json`` (and the reports) into ``out_dir``.
    Raises ConfigError (:func:`check_weight_store_kind`) for weight precision the kind does not model."""
    check_weight_store_kind(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = _runners()[cfg.kind](cfg, out_dir, scenario)
    write_json(out_dir / "metrics.json", metrics)
    log.info("wrote %s", out_dir / "metrics.json")
    if cfg.report:
        report_after_run(out_dir)           # report.md, report.html, PNGs; a failure is logged, not raised
    return metrics
