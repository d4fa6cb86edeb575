"""The learning rules a run can name (``learning.rule``), registered by their packages.

A :class:`Rule` says everything the experiments need to train with it: its typed config (the
``learning.*`` keys), which experiment runs it (``forward``: no learning; ``on_chip``: on the
emulated cores; ``dense``: one process, no cores), and for on-chip rules how the network's
populations learn (:attr:`Rule.learning`, the typed core specs the mapping and the cores take),
how many cores each population gets, how many reverse rounds a training step needs, and the
rule's own per-batch work and metrics.  A new rule is a package ``spinnray/rules/NAME/`` that
calls :func:`register` (and its ``conf/learning/NAME.yaml``): nothing else names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from spinnray.config import opt
from spinnray.registry import Registry

__all__ = ["Rule", "register", "rule", "rule_names", "ForwardConfig"]


@dataclass(frozen=True)
class Rule:
    """One learning rule (module docstring).

    ``learning(network, cfg, machine) -> Learning``: the typed core spec of every population
    that learns and the populations that receive error events (on-chip rules).
    ``cores(network, cores_per_population)``: the cores each population gets (e.g. the loss
    needs every output neuron on one core).  ``check(cfg, parallel, network, data)``: refuse
    what the rule cannot do, naming the option.  ``after_batch(trainer, result, labels)``: the
    rule's own work after a training step.  ``metrics(trainer, cores)``: its own keys of
    ``metrics.json``.  ``order_stream``: the stream of the data order (``[seed, stream]``).
    ``errors_to_owner``: each error event about a neuron goes to the one core owning it (the
    per-layer traffic then counts the events a population's cores received as those about it).
    """

    name: str
    kind: str
    config: type
    runner: str
    learning: Callable | None = None
    cores: Callable | None = None
    reverse_rounds: int | None = None
    order_stream: int = 13
    check: Callable | None = None
    after_batch: Callable | None = None
    metrics: Callable | None = None
    adapt: Callable | None = None          # (cfg, dataset) -> cfg: settings the data implies (loss window)
    errors_to_owner: bool = False


RULES: Registry[Rule] = Registry("learning.rule")


def register(r: Rule) -> Rule:
    return RULES.add(r.name, r)


def rule_names() -> list[str]:
    return RULES.names()


def rule(name) -> Rule:
    return RULES.get(name)


@dataclass(frozen=True)
class ForwardConfig:
    """No learning: ``epochs`` repeats the trials (fresh input spikes each epoch)."""

    rule: str = opt("none", "learning rule", choices=("none",))
    epochs: int = opt(1, "passes over the trials", min=1, max=1_000_000)


register(Rule("none", "forward", ForwardConfig, "forward"))
