"""The trainers and networks the benchmarks build, from the public API (rule registry, network
builders, :class:`~spinnray.experiments.trainer.Trainer`), with the keyword arguments the
benchmarks passed to ``EventPropTrainer`` / ``EPropTrainer`` before the 0.2 layout (the same
adapters as ``tests/helpers.py``; bench/ does not import tests/).

Import it as ``import trainers`` / ``from trainers import ...``: ``python bench/X.py`` puts bench/
first on ``sys.path``.
"""

from __future__ import annotations

from dataclasses import replace

from spinnray.config import ClusterConfig, ParallelConfig
from spinnray.experiments.trainer import Trainer
from spinnray.model.builders import (DataShape, FeedForwardConfig, RecurrentALIFConfig, build_feedforward,
                                     build_recurrent_alif)
from spinnray.rules import rule
from spinnray.rules.eprop import EPropConfig
from spinnray.rules.eventprop import EventPropConfig

__all__ = ["yinyang_net", "eprop_net", "eventprop_trainer", "eprop_trainer", "Trainer", "EventPropConfig",
           "EPropConfig", "FeedForwardConfig", "RecurrentALIFConfig"]


def yinyang_net(cfg: FeedForwardConfig, seed: int = 0, n_in: int = 5, n_out: int = 3):
    """The feed-forward LIF network of the Yin-Yang task (was ``spinnray.train.build_network``)."""
    return build_feedforward(cfg, DataShape(n_in, n_out, "spikes"), seed)


def eprop_net(cfg: RecurrentALIFConfig, n_in: int, n_out: int, seed: int = 0):
    """The recurrent ALIF network of e-prop (was ``spinnray.eprop_train.build_eprop_network``)."""
    return build_recurrent_alif(cfg, DataShape(n_in, n_out, "analog"), seed)


def eventprop_trainer(net, learn: EventPropConfig, *, machine, cores_per_population=None, replicas: int = 1,
                      backend: str = "local", timeout_s: float = 120.0, cluster=None,
                      schedule: str = "lockstep") -> Trainer:
    """Data-parallel EventProp on the cores (was ``spinnray.train.EventPropTrainer``)."""
    cluster = replace(cluster or ClusterConfig(), round_timeout_s=timeout_s)
    return Trainer(net, rule("eventprop"), learn, machine=machine,
                   parallel=ParallelConfig(cores_per_population=cores_per_population, replicas=replicas,
                                           schedule=schedule),
                   backend=backend, cluster=cluster)


def eprop_trainer(net, learn: EPropConfig, *, machine, hidden_cores, backend: str = "local",
                  timeout_s: float = 120.0, batch_size: int | None = None, cluster=None,
                  replicas: int = 1) -> Trainer:
    """Model-parallel e-prop on the cores (was ``spinnray.eprop_train.EPropTrainer``), data parallel
    over ``replicas`` copies."""
    if batch_size is not None:
        learn = replace(learn, batch_size=batch_size)
    cluster = replace(cluster or ClusterConfig(), round_timeout_s=timeout_s)
    return Trainer(net, rule("eprop"), learn, machine=machine,
                   parallel=ParallelConfig(cores_per_population=hidden_cores, replicas=replicas), backend=backend,
                   cluster=cluster)
