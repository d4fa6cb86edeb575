"""Dense single-process baselines of e-prop: full BPTT and temporally-truncated local BPTT
(Guo et al. 2023) of deep recurrent ALIF networks, their exact gradients and memory
(:mod:`spinnray.rules.bptt.dense`).  Registered as the rules ``bptt`` and ``tlbptt``, run by
:mod:`spinnray.experiments.dense` on the network ``deep_alif``."""

from __future__ import annotations

from dataclasses import dataclass

from spinnray.config import opt
from spinnray.model.builders import register as register_network
from spinnray.rules.registry import Rule, register

__all__ = ["DeepALIFConfig", "DenseConfig"]


@dataclass(frozen=True)
class DeepALIFConfig:
    """``layers`` recurrent ALIF layers of ``hidden`` neurons and a leaky readout, trained in one
    process (``network.name = deep_alif``; the network of :mod:`spinnray.rules.bptt.dense`)."""

    name: str = opt("deep_alif", "network builder", choices=("deep_alif",))
    steps: int | None = opt(None, "steps per sample: null = the data set's own length (set, it must equal it)",
                            min=1, max=1_000_000)
    layers: int = opt(1, "hidden layers (each recurrent ALIF of `hidden` neurons)", min=1, max=1000)
    hidden: int = opt(100, "ALIF neurons per hidden layer", min=1, max=1_000_000)
    dt_ms: float = opt(1.0, "ms per step", min=1e-6, max=1000.0)
    tau_mem_ms: float = opt(20.0, "membrane time constant (ms)", min=1e-6, max=1e6)
    tau_adapt_ms: float = opt(2000.0, "threshold-adaptation time constant (ms)", min=1e-6, max=1e6)
    beta: float = opt(0.0175, "threshold jump per unit of adaptation (0 = LIF)", min=0.0, max=1e6)
    v_th: float = opt(0.6, "baseline threshold", min=1e-9, max=1e6)
    tau_out_ms: float = opt(20.0, "readout time constant (ms)", min=1e-6, max=1e6)
    w_in_scale: float = opt(1.0, "input weights ~ N(0, scale / sqrt(inputs))", min=0.0, max=1e6)
    w_rec_scale: float = opt(1.0, "recurrent weights ~ N(0, scale / sqrt(hidden)), no self-connections", min=0.0, max=1e6)
    w_ff_scale: float = opt(1.0, "layer-to-layer weights ~ N(0, scale / sqrt(hidden))", min=0.0, max=1e6)
    w_out_scale: float = opt(1.0, "readout weights ~ N(0, scale / sqrt(hidden))", min=0.0, max=1e6)
    recurrent: bool = opt(True, "recurrent weights in every hidden layer")


@dataclass(frozen=True)
class DenseConfig:
    """The ``learning.*`` keys of dense full BPTT and truncated local BPTT."""

    rule: str = opt("tlbptt", "bptt (full, end-to-end) | tlbptt (truncated windows, local blocks)", choices=("bptt", "tlbptt"))
    window: int | None = opt(None, "tlbptt: truncation window in steps (null = T: no truncation)", min=1, max=1_000_000)
    block_size: int | None = opt(None, "tlbptt: hidden layers per local block, each with its own readout "
                                       "(null = all layers: one block)", min=1, max=1000)
    epochs: int = opt(5, "passes over the training set", min=1, max=1_000_000)
    batch_size: int = opt(32, "samples per Adam update", min=1, max=65535)
    lr: float = opt(0.005, "Adam learning rate", min=0.0, max=10.0)
    lr_decay: float = opt(1.0, "learning-rate factor every lr_decay_every epochs", min=0.0, max=1.0)
    lr_decay_every: int = opt(1, "epochs between learning-rate decays", min=1, max=1_000_000)
    beta1: float = opt(0.9, "Adam beta1", min=0.0, max=1.0)
    beta2: float = opt(0.999, "Adam beta2", min=0.0, max=1.0)
    eps: float = opt(1e-5, "Adam epsilon", min=0.0, max=1.0)
    weight_decay: float = opt(0.0, "L2 coefficient added to every gradient", min=0.0, max=1000.0)
    clip_norm: float | None = opt(None, "rescale each local block's gradient (all its matrices) to at most this "
                                        "L2 norm before Adam (null = no clipping)", max=1e12)
    surrogate: str = opt("triangle", "pseudo-derivative", choices=("triangle", "multi_gaussian"))
    gamma: float = opt(0.3, "pseudo-derivative scale", min=1e-9, max=100.0)
    window_steps: int | None = opt(None, "loss on the mean readout of the last N steps (null = all; cue: the "
                                         "recall period)", min=1)
    eval_every: int = opt(1, "evaluate on the test set every N epochs (and after the last)", min=1, max=1_000_000)
    eval_batch: int = opt(100, "test samples per forward pass", min=1, max=65535)


register_network("deep_alif", DeepALIFConfig)          # built by spinnray.rules.bptt.dense, not a Network
register(Rule("bptt", "bptt", DenseConfig, "dense", order_stream=13))
register(Rule("tlbptt", "bptt", DenseConfig, "dense", order_stream=13))
