"""The network a training run trained: rebuilt from the run directory's configuration
(``RUN_DIR/.hydra/config.yaml``) and given the weights of one of its checkpoints, for export
(:mod:`spinnray.nir`) or inspection."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from spinnray.config import ClusterConfig, RunConfig, from_dict
from spinnray.data.base import Timing, load_dataset
from spinnray.errors import ConfigError, DataError
from spinnray.experiments.checkpoint import latest, warm_start
from spinnray.experiments.setup import resolve
from spinnray.experiments.trainer import Trainer
from spinnray.model.builders import DataShape
from spinnray.model.network import Network

__all__ = ["run_config", "trained_network"]

log = logging.getLogger("spinnray")


def run_config(run_dir) -> RunConfig:
    """The typed configuration a run directory was made with."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise DataError(f"{str(run_dir)!r} is not a run directory: no {path.relative_to(run_dir)} (the configuration "
                        "run.py saves into every run's output directory)")
    try:
        section = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:          # noqa: BLE001 -- OmegaConf raises many kinds; each is a bad file here
        raise DataError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    return from_dict(RunConfig, section)


def trained_network(run_dir, checkpoint=None) -> Network:
    """The network of the training run in ``run_dir`` with the weights of ``checkpoint`` (a
    file; None: the newest checkpoint of the run, in ``checkpoint.dir`` or ``RUN_DIR/checkpoints``).

    The network is rebuilt as the run built it (its builder, its data set's shape, its seed) and
    mapped as the run mapped it, so that every core's weights go back to their neurons
    (:func:`~spinnray.experiments.checkpoint.warm_start`).  A run keeps weights only in checkpoints:
    train with ``checkpoint.every=N`` (``1`` keeps the final weights).
    """
    cfg = run_config(run_dir)
    run = resolve(cfg)
    if run.rule.runner != "on_chip" or run.builder.build is None:
        raise ConfigError(f"{str(run_dir)!r} is a {run.kind} run (learning.rule = {run.rule.name}): only training runs on "
                          "the emulated cores (eventprop, eprop) keep the weights of a spinnray network")
    if checkpoint is None:
        where = Path(cfg.checkpoint.dir) if cfg.checkpoint.dir else Path(run_dir) / "checkpoints"
        checkpoint = latest(where, run.kind) if where.is_dir() else None
        if checkpoint is None:
            raise DataError(f"{str(run_dir)!r}: no checkpoint ({run.kind}-NNNNNNNNN.ckpt) in {str(where)!r}; the run's "
                            "weights are kept only in checkpoints (train with checkpoint.every=N; 1 keeps the final "
                            "weights)")
    net_cfg = run.network
    data = load_dataset(run.data, Timing(net_cfg.dt_ms, getattr(net_cfg, "steps", None)))
    learn = run.rule.adapt(run.learning, data) if run.rule.adapt is not None else run.learning
    net = run.builder.build(net_cfg, DataShape(data.n_inputs, data.n_classes, data.input_kind), cfg.seed)
    trainer = Trainer(net, run.rule, learn, machine=cfg.machine, parallel=cfg.parallel, backend="local",
                      cluster=ClusterConfig())
    try:
        warm_start(checkpoint, run.kind, net, trainer.sim.mapping)     # the mapping the run's cores had
    finally:
        trainer.close()
    log.info("network of %s with the weights of %s", run_dir, checkpoint)
    return net
