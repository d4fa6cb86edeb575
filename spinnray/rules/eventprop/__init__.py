"""EventProp (Wunderlich & Pehle 2021, discretized as Béna et al. 2024): exact event-based
gradients of spiking networks, feed-forward or recurrent, with any delays of whole steps, on the
cores that hold the neurons; data parallel over replicas.

:mod:`~spinnray.rules.eventprop.numerics` holds the losses and the adjoint step,
:mod:`~spinnray.rules.eventprop.core` the core that learns with them (and its memory model).
This module registers the rule: its ``learning.*`` config, which populations learn (every
population with a core and incoming projections: hidden LIF populations, recurrent or not, and
the one output population without outgoing projections, which computes the loss on one core: a
time-to-first-spike loss on LIF outputs, a voltage loss on a leaky-integrator output), and the
silent-neuron weight bump of Wunderlich & Pehle's training code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinnray.config import opt
from spinnray.errors import ConfigError
from spinnray.mapping import Learning
from spinnray.rules.eventprop.core import EventPropCore, EventPropCoreSpec, model_problem
from spinnray.rules.eventprop.numerics import VOLTAGE_LOSSES, CountRegulariser, TTFSLoss, VoltageLoss
from spinnray.rules.learning import LR_SCALE_HELP, check_lr_scale, lr_scales, weight_store_options
from spinnray.rules.optim import AdamSpec
from spinnray.rules.registry import Rule, register

__all__ = ["EventPropConfig", "learning", "RULE"]


@dataclass(frozen=True)
class EventPropConfig:
    """The ``learning.*`` keys of EventProp (Adam, the loss, the adjoint's guard, the silent-neuron
    remedies)."""

    rule: str = opt("eventprop", "learning rule", choices=("eventprop",))
    epochs: int = opt(40, "passes over the training set", min=1, max=1_000_000)
    batch_size: int = opt(32, "mini-batch (all replicas together)", min=1, max=65535)
    lr: float = opt(5e-3, "Adam learning rate", min=0.0, max=10.0)
    lr_decay: float = opt(0.95, "learning-rate factor every lr_decay_every epochs", min=0.0, max=1.0)
    lr_decay_every: int = opt(1, "epochs between learning-rate decays", min=1, max=1_000_000)
    beta1: float = opt(0.9, "Adam beta1", min=0.0, max=1.0)
    beta2: float = opt(0.999, "Adam beta2", min=0.0, max=1.0)
    eps: float = opt(1e-8, "Adam epsilon", min=0.0, max=1.0)
    lr_scale: dict | None = opt(None, LR_SCALE_HELP, factory=dict)
    loss: str = opt("wunderlich", "the loss the output population computes: on LIF outputs a time-to-first-spike "
                                  "cross-entropy, wunderlich (tau0, tau1, alpha) or bena (xi, alpha, beta in steps); "
                                  "on a leaky-integrator (li) output a cross-entropy of its voltage, mean_voltage "
                                  "(softmax over the mean of V over the sample), sum_voltage (over the sum) or "
                                  "max_voltage (over the maximum)", choices=("wunderlich", "bena") + VOLTAGE_LOSSES)
    tau0_ms: float = opt(0.5, "wunderlich loss: softmax temperature", min=1e-9, max=1e6)
    tau1_ms: float = opt(6.4, "wunderlich loss: regulariser time constant", min=1e-9, max=1e6)
    alpha: float = opt(3e-3, "wunderlich loss: regulariser weight", min=0.0, max=1e6)
    guard: float = opt(1e-3, "lower bound of I - V at a spike in the adjoint jump (counted when used)", min=1e-12, max=1e6)
    bump: float = opt(5e-3, "silent-neuron heuristic (Wunderlich & Pehle's code): added to a layer's weights "
                            "after a mini-batch with too many silent neurons; 0 = off", min=0.0, max=1e6)
    quiet_hidden: float = opt(1.0, "bump the hidden weights when more than this fraction of hidden neurons "
                                   "stayed silent (mean over the mini-batch); 1 = never (the reference's 0.3 "
                                   "held Yin-Yang near 91 % here)", min=0.0, max=1.0)
    quiet_output: float = opt(0.0, "else bump the incoming weights of the output neurons that stayed silent "
                                   "as the label, when more than this fraction of samples had a silent label",
                              min=0.0, max=1.0)
    interpolate: bool = opt(True, "TTFS losses: interpolate output spike times inside the step")
    eval_every: int = opt(1, "test (and validate) every N epochs (and after the last)", min=1, max=1_000_000)
    silent_ms: float = opt(0.0, "TTFS losses' silent-output surrogate: an output neuron that never fired counts as "
                                "firing at T + silent_ms * (v_th - its peak voltage), which gives it a gradient; "
                                "0 = off (silent outputs sit at T with no gradient); a voltage loss gives every "
                                "output a gradient and ignores it", min=0.0, max=1e6)
    reg_lambda_upper: float = opt(0.0, "hidden spike-count regulariser (as mlGeNN's): strength above the target; "
                                       "each sample's loss gains sum over hidden neurons of lambda/2 (N - "
                                       "reg_nu_upper)^2, N the neuron's spikes in the sample, and every spike of a "
                                       "neuron jumps its lamV by -lambda (N - reg_nu_upper) / batch (docs/rules.md); "
                                       "0 (and reg_lambda_lower 0) = off", min=0.0, max=1e6)
    reg_lambda_lower: float = opt(0.0, "hidden spike-count regulariser: strength below the target (raises the "
                                       "activity of neurons that spike, but fewer than reg_nu_upper times; a "
                                       "silent neuron has no spike to carry it)", min=0.0, max=1e6)
    reg_nu_upper: float = opt(0.0, "hidden spike-count regulariser: target spikes per hidden neuron and sample",
                              min=0.0, max=1e6)

    def __post_init__(self):
        check_lr_scale(self.lr_scale)
        if self.lr_scale is None:
            object.__setattr__(self, "lr_scale", {})


def _layers(network) -> tuple[list[str], str]:
    """The populations that learn and the output population (the one that sends nothing)."""
    learners = [p.name for p in network.populations.values() if p.model.has_core and network.incoming(p)]
    outputs = [name for name in learners if not network.outgoing(network[name])]
    if len(outputs) != 1:
        raise ConfigError(f"EventProp computes its loss on one output population (no outgoing projections); "
                          f"this network has {outputs or 'none'}")
    return learners, outputs[0]


def _loss(cfg: EventPropConfig):
    if cfg.loss in VOLTAGE_LOSSES:
        return VoltageLoss(cfg.loss)
    return TTFSLoss("wunderlich", cfg.tau0_ms, cfg.tau1_ms, cfg.alpha) if cfg.loss == "wunderlich" else TTFSLoss("bena")


def learning(network, cfg: EventPropConfig, machine) -> Learning:
    """Every learning population's :class:`EventPropCoreSpec`; errors flow to the hidden ones.
    ConfigError naming the population when EventProp's adjoint does not hold for its neurons
    (:func:`~spinnray.rules.eventprop.core.model_problem`), or the loss does not fit the output."""
    learners, output = _layers(network)
    loss = _loss(cfg)
    for name in learners:
        problem = model_problem(network[name].model, loss if name == output else None)
        if problem:
            raise ConfigError(f"EventProp cannot train population {name!r}"
                              f"{' (the output)' if name == output else ''}: {problem}")
    common = dict(adam=AdamSpec(cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, lr_scales(cfg.lr_scale, network)), guard=cfg.guard,
                  interpolate=cfg.interpolate, weight_store=weight_store_options(machine, network))
    reg = CountRegulariser(cfg.reg_lambda_upper, cfg.reg_lambda_lower, cfg.reg_nu_upper)
    reg = reg if reg.active else None
    specs = {name: EventPropCoreSpec(**common, tau_syn_ms=network[name].model.tau_syn_ms, regulariser=reg)
             for name in learners}
    specs[output] = EventPropCoreSpec(**common, tau_syn_ms=network[output].model.tau_syn_ms, loss=loss,
                                      silent_ms=0.0 if isinstance(loss, VoltageLoss) else cfg.silent_ms)
    return Learning(specs, frozenset(name for name in learners if name != output))


def cores(network, cores_per_population):
    """``parallel.cores_per_population`` for every population, the output on one core (its loss
    needs every output neuron)."""
    _, output = _layers(network)
    if isinstance(cores_per_population, int):
        cores_per_population = {name: cores_per_population for name, p in network.populations.items()
                                if p.model.has_core}
    split = dict(cores_per_population or {})
    split[output] = 1
    return split


def after_batch(trainer, res, labels: np.ndarray) -> None:
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
    learn, net = trainer.learn, trainer.sim.network
    if learn.bump == 0:
        return
    _, output = _layers(net)
    hidden = [name for name in trainer.learning.error_populations]
    bumps = trainer.counters.setdefault("weight_bumps", {"hidden": 0, "output": 0})
    silent = sum(float(np.mean(res.silent[name])) for name in hidden)
    quiet_hidden = silent / sum(net[name].size for name in hidden) if hidden else 0.0
    learners = trainer.learners
    if quiet_hidden > learn.quiet_hidden:
        bumps["hidden"] += 1
        trainer.sim.call(EventPropCore.bump, {pl.core_id: (learn.bump,) for pl in learners},
                         cores=[pl.core_id for pl in learners if pl.slice.population in hidden])
    elif "label_silent" in res.outputs and float(np.mean(res.outputs["label_silent"])) > learn.quiet_output:
        # the labels silent anywhere in the mini-batch: every replica bumps the same columns
        cols = np.unique(np.asarray(labels)[res.outputs["label_silent"]])
        bumps["output"] += 1
        trainer.sim.call(EventPropCore.bump, {pl.core_id: (learn.bump, cols) for pl in learners},
                         cores=[pl.core_id for pl in learners if pl.slice.population == output])


def metrics(trainer, cores: list[dict]) -> dict:
    """EventProp's own keys of ``metrics.json``: guarded spikes and weight bumps."""
    return {"guarded_spikes": sum(c.get("guarded_spikes", 0) for c in cores),
            "weight_bumps": dict(trainer.counters.get("weight_bumps", {"hidden": 0, "output": 0}))}


RULE = register(Rule("eventprop", "eventprop", EventPropConfig, "on_chip", learning=learning, cores=cores,
                     reverse_rounds=None, order_stream=11, after_batch=after_batch, metrics=metrics,
                     errors_to_owner=True))
