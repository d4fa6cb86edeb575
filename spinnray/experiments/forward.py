"""A forward run (kind ``forward``, ``learning.rule = none``): a network of cores driven by
Poisson input trials, with no learning; it exercises mapping, routing, packets and both
backends, and reports traffic, memory and timing."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from spinnray.data.poisson import poisson_trials
from spinnray.errors import ConfigError
from spinnray.experiments.setup import Run
from spinnray.experiments.summary import progress, write_json
from spinnray.machine.counters import SCHEMA_VERSION
from spinnray.model.builders import source_rates
from spinnray.report import save_raster
from spinnray.simulator import Simulator

__all__ = ["run_forward", "forward_network"]

log = logging.getLogger("spinnray")


def forward_network(run: Run):
    """The network of a forward run (its builder needs no data set; ``network.steps`` is required)."""
    net_cfg = run.network
    if run.builder.build is None:
        raise ConfigError(f"network.name = {net_cfg.name!r}: a forward run needs a network of cores")
    if getattr(net_cfg, "steps", None) is None:
        raise ConfigError(f"network.steps = null: a forward run of network.name = {net_cfg.name} needs the steps "
                          "per trial; set network.steps")
    return run.builder.build(net_cfg, None, run.config.seed)


def run_forward(run: Run, out_dir: Path, scenario: str) -> dict:
    cfg, net_cfg, data, learning = run.config, run.network, run.data, run.learning
    net = forward_network(run)
    rates = source_rates(net_cfg, net)
    trials = min(data.trials, data.limit or data.trials)
    batch = cfg.parallel.batch_size * cfg.parallel.replicas      # trials per run, shared by the replicas
    t_start = time.perf_counter()
    sim = Simulator(net, cfg.machine, parallel=cfg.parallel, backend=cfg.backend, cluster=cfg.cluster,
                    timeout_s=cfg.cluster.round_timeout_s)
    setup_s = time.perf_counter() - t_start
    log.info("mapped %d populations onto %d cores on %d chip(s); backend %s",
             len(net.populations), sim.mapping.n_cores, sim.mapping.summary()["chips_used"], cfg.backend)
    spike_counts = {name: 0 for name, p in net.populations.items() if p.model.spiking}
    run_s = 0.0
    try:
        with progress(trials * learning.epochs, f"{scenario}", cfg.progress) as bar:
            for epoch in range(learning.epochs):
                for first in range(0, trials, batch):
                    b = min(batch, trials - first)
                    inputs = poisson_trials(rates, {name: net[name].size for name in rates}, net_cfg.steps,
                                            net.dt_ms, cfg.seed, epoch, first, b)
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
        "kind": run.kind,
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
