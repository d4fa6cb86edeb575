"""From the composed config to a typed run: the network, data and learning sections become the
typed configs their registries name (``network.name``, ``data.name``, ``learning.rule``).

:class:`RunConfig` (:mod:`spinnray.config`) is what Hydra composes; it keeps these three
sections as mappings because which dataclass they are depends on the registries above the
config layer.  :func:`resolve` checks them here, once, with the same errors as every other key
(the dotted key, the value, what is allowed); everything below receives typed objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spinnray.config import ParallelConfig, RunConfig, from_dict
from spinnray.data.base import DatasetEntry, dataset_entry
from spinnray.errors import ConfigError
from spinnray.model.builders import Builder, builder
from spinnray.rules.registry import Rule, rule

__all__ = ["Run", "resolve", "DEFAULT_NETWORK", "check_steps", "check_parallel"]

#: the network builder a rule uses when ``network.name`` is not given
DEFAULT_NETWORK = {"none": "random", "eventprop": "feedforward", "eprop": "recurrent_alif", "bptt": "deep_alif",
                   "tlbptt": "deep_alif"}
#: the data set a rule uses when ``data.name`` is not given
DEFAULT_DATA = {"none": "poisson", "eventprop": "yinyang", "eprop": "keywords", "bptt": "keywords",
                "tlbptt": "keywords"}
#: the rule of a ``kind`` given without ``learning.rule`` (configs written before the rule registry)
RULE_OF_KIND = {"forward": "none", "eventprop": "eventprop", "eprop": "eprop", "bptt": "bptt"}


@dataclass(frozen=True)
class Run:
    """A run with every section typed."""

    config: RunConfig
    rule: Rule
    learning: Any
    builder: Builder
    network: Any
    dataset: DatasetEntry
    data: Any

    @property
    def kind(self) -> str:
        return self.rule.kind


def _named(section: dict, key: str, default, what: str) -> str:
    name = section.get(key, default)
    if not isinstance(name, str):
        raise ConfigError(f"{what}.{key} = {name!r}: expected a name")
    return name


def resolve(cfg: RunConfig) -> Run:
    """The typed run of ``cfg``; ConfigError for an unknown name, key or value."""
    r = rule(_named(cfg.learning, "rule", RULE_OF_KIND.get(cfg.kind, "none"), "learning"))
    learning = from_dict(r.config, cfg.learning, "learning")
    b = builder(_named(cfg.network, "name", DEFAULT_NETWORK.get(r.name), "network"))
    network = from_dict(b.config, cfg.network, "network")
    d = dataset_entry(_named(cfg.data, "name", DEFAULT_DATA.get(r.name), "data"))
    data = from_dict(d.config, cfg.data, "data")
    if cfg.kind is not None and cfg.kind != r.kind:
        raise ConfigError(f"kind = {cfg.kind!r} with learning.rule = {r.name!r}: the rule makes a run of kind "
                          f"{r.kind!r}; leave kind out (it follows the rule) or set it to {r.kind!r}")
    return Run(cfg, r, learning, b, network, d, data)


def check_steps(network, data) -> None:
    """ConfigError when ``network.steps`` is set and differs from the data set's sample length."""
    steps = getattr(network, "steps", None)
    if steps is not None and steps != data.steps:
        raise ConfigError(f"network.steps = {steps}: the {data.name} data set's samples have {data.steps} steps "
                          f"of {network.dt_ms} ms; expected network.steps = null (the data's length) or {data.steps}")


def check_parallel(run: Run) -> None:
    """Refuse the ``parallel.*`` options a kind of run does not use, naming the one to use instead."""
    p, d = run.config.parallel, ParallelConfig()
    if run.rule.runner == "on_chip" and p.batch_size != d.batch_size:
        raise ConfigError(f"parallel.batch_size = {p.batch_size}: a training run's mini-batch is learning.batch_size "
                          "(the replicas share it); leave parallel.batch_size at 1")
    if run.rule.runner == "dense":
        used = [f"parallel.{k} = {getattr(p, k)!r}" for k in ("cores_per_population", "replicas", "batch_size",
                                                               "exchange_interval", "schedule")
                if getattr(p, k) != getattr(d, k)]
        if used:
            raise ConfigError(f"{', '.join(used)}: learning.rule = {run.rule.name} trains in one process, on no "
                              "emulated cores; leave the parallel options at their defaults")
