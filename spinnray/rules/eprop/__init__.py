"""e-prop (Bellec et al. 2020; Rostami et al. 2022 on SpiNNaker2): model-parallel online learning
of recurrent ALIF networks with eligibility traces on the cores and learning signals through the
routers; data parallel over ``parallel.replicas`` copies of the network (each on its own cores,
each a shard of the mini-batch, their gradients summed).  :mod:`~spinnray.rules.eprop.core` holds
the hidden and readout cores (and their memory models); this module registers the rule: its
``learning.*`` config, the cores of a recurrent ALIF network (``network.name = recurrent_alif``),
and its metrics.

The network (Bellec et al. 2020; Rostami et al. 2022 on SpiNNaker2), one
step ``t`` of ``dt``; weights indexed (pre, post)::

    a[t] = rho a[t-1] + (1 - rho) z[t-1]                       hidden ALIF
    A[t] = v_th + beta a[t]
    v[t] = alpha v[t-1] + (1 - alpha) (x[t] W_in + z[t-d_rec] W_rec) - z[t-1] A[t]
    z[t] = H(v[t] - A[t])
    y[t] = kappa y[t-1] + (1 - kappa) z[t-d_out] W_out        LI readout
    logits = mean of y[t] over the loss window [T - T_w, T);  loss = CE(softmax(logits), label)

``psi[t]`` is the pseudo-derivative dz/dv, a function of ``h = (v - A)/v_th``
(:func:`spinnray.rules.losses.pseudo_derivative`).  The reset term ``z[t-1] A[t]`` is a constant
for every gradient (as in Bellec et al.).  ``d_rec`` and ``d_out`` (>= 1) are the delays of the
recurrent and readout projections, one per projection (``network.rec_delay``, ``network.out_delay``;
per-synapse delays are refused); every exchange interval K <= min(d_rec, d_out) gives the same result.

e-prop, for pre input ``i`` of post neuron ``j`` (``pre_i[t]`` is ``x_i[t]``
or ``z_i[t-d_rec]``)::

    eps_v_i[t]  = alpha eps_v_i[t-1] + (1 - alpha) pre_i[t]        one per pre neuron
    e_ij[t-1]   = psi_j[t-1] (eps_v_i[t-1] - beta eps_a_ij[t-1])     eligibility trace
    eps_a_ij[t] = rho eps_a_ij[t-1] + (1 - rho) e_ij[t-1]
    ebar_ij[t]  = kappa ebar_ij[t-1] + (1 - kappa) e_ij[t-d_out]     readout-filtered trace
    acc_ij     += ebar_ij[t]   for t in the loss window
    err_k       = (softmax(logits) - onehot(label))_k / (T_w B)      at the end of the sample
    L_j         = sum_k B_jk err_k   (B = W_out: symmetric; or fixed random)
    dW_ij       = sum over samples of L_j acc_ij

The readout's own gradient is exact: ``dW_out[j, k] = sum_b err_k sum_window
zbar_j`` with ``zbar`` the kappa-filtered input spikes as they arrive
(``z[t-d_out]``).  Because the loss depends on the time-averaged logits,
``L_j`` is one number per sample: the readout core sends it once, at the end
of the sample, as one error event per hidden neuron (float payload) through
the router.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from spinnray.config import opt
from spinnray.errors import ConfigError
from spinnray.mapping import Learning
from spinnray.model.builders import hidden_populations
from spinnray.model.network import Network
from spinnray.rules.eprop.core import EPropHiddenSpec, EPropReadoutSpec
from spinnray.rules.losses import SurrogateSpec
from spinnray.rules.learning import LR_SCALE_HELP, check_lr_scale, lr_scales, weight_store_options
from spinnray.rules.optim import AdamSpec
from spinnray.rules.registry import Rule, register

__all__ = ["EPropConfig", "learning", "hidden_core_split", "RULE", "TRAINING_STATE", "SURROGATES"]

#: the pseudo-derivatives e-prop offers (:mod:`spinnray.rules.losses`)
SURROGATES = ("triangle", "multi_gaussian")

#: memory categories that make up the training state (the paper's 680 KB)
TRAINING_STATE = ("weights", "weight_accumulator", "gradients", "optimizer", "traces", "learning_signal", "feedback")


@dataclass(frozen=True)
class EPropConfig:
    """The ``learning.*`` keys of e-prop (Adam, the pseudo-derivative, the feedback, the loss window,
    the firing-rate regulariser)."""

    rule: str = opt("eprop", "learning rule", choices=("eprop",))
    epochs: int = opt(10, "passes over the training set", min=1, max=1_000_000)
    batch_size: int = opt(1, "samples per update (all replicas together): 1 = online, as on the chip; B = "
                             "mini-batch, in lockstep on each copy", min=1, max=65535)
    lr: float = opt(0.01, "Adam learning rate (Rostami et al.: 0.01)", min=0.0, max=10.0)
    lr_decay: float = opt(0.3, "learning-rate factor every lr_decay_every epochs", min=0.0, max=1.0)
    lr_decay_every: int = opt(6, "epochs between learning-rate decays", min=1, max=1_000_000)
    beta1: float = opt(0.9, "Adam beta1", min=0.0, max=1.0)
    beta2: float = opt(0.999, "Adam beta2", min=0.0, max=1.0)
    eps: float = opt(1e-5, "Adam epsilon (Rostami et al.: 1e-5)", min=0.0, max=1.0)
    lr_scale: dict | None = opt(None, LR_SCALE_HELP, factory=dict)
    weight_decay: float = opt(0.0, "L2 coefficient added to every gradient", min=0.0, max=1000.0)
    surrogate: str = opt("multi_gaussian", "pseudo-derivative", choices=SURROGATES)
    gamma: float = opt(0.5, "pseudo-derivative scale (triangle: 0.3, multi_gaussian: 0.5)", min=1e-9, max=100.0)
    feedback: str = opt("symmetric", "learning-signal weights: symmetric (W_out) or random (fixed)",
                        choices=("symmetric", "random"))
    window_steps: int | None = opt(None, "loss on the mean readout of the last N steps (null = all; "
                                         "cue: the recall period)", min=1)
    eval_every: int = opt(1, "evaluate on the test set every N epochs (and after the last)", min=1, max=1_000_000)
    rate_reg: float = opt(0.0, "firing-rate regulariser c (Bellec et al.'s reg_f, their value 1): the loss "
                               "gains c sum_j (r_j - r*)^2, rates in spikes per ms; 0 = off", min=0.0, max=1e6)
    rate_target_hz: float = opt(10.0, "the regulariser's target rate r* (Hz; Bellec et al.: 10)", min=0.0, max=1e6)

    def __post_init__(self):
        check_lr_scale(self.lr_scale)
        if self.lr_scale is None:
            object.__setattr__(self, "lr_scale", {})


def learning(network, cfg: EPropConfig, machine) -> Learning:
    """The hidden populations learn with traces; the readout ``output`` sends the learning signals."""
    hidden = hidden_populations(network)
    if not hidden or "output" not in network.populations:
        raise ConfigError("e-prop trains a recurrent ALIF network with populations 'hidden' (and 'lif') and a "
                          "readout 'output' (network.name = recurrent_alif)")
    for pop in (*hidden, "output"):
        for proj in network.incoming(network[pop]):
            if not np.isscalar(proj.delays):
                raise ConfigError(f"e-prop: projection {proj.name!r} has per-synapse delays; expected one delay "
                                  "per projection (the traces of a core follow each projection's one delay)")
    adam = AdamSpec(cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, lr_scales(cfg.lr_scale, network))
    ws = weight_store_options(machine, network)
    spec = EPropHiddenSpec(adam, tau_out_ms=network["output"].model.tau_mem_ms,
                           surrogate=SurrogateSpec(cfg.surrogate, cfg.gamma), weight_decay=cfg.weight_decay,
                           window_steps=cfg.window_steps, rate_reg=cfg.rate_reg, rate_target_hz=cfg.rate_target_hz,
                           weight_store=ws)
    readout = EPropReadoutSpec(adam, weight_decay=cfg.weight_decay, window_steps=cfg.window_steps,
                               feedback=cfg.feedback, feedback_seed=0, weight_store=ws)
    # one spec per hidden population: each filters its traces with its own readout delay
    specs = {p: replace(spec, readout_delay=_readout_delay(network, p)) for p in hidden}
    return Learning({**specs, "output": readout}, frozenset(hidden))


def _readout_delay(network: Network, pop: str) -> int:
    """The delay of ``pop``'s projection(s) into the readout (1 if it has none: no learning
    signal reaches it).  Several projections must share it: each signal is filtered with one delay."""
    delays = sorted({int(p.delays) for p in network.incoming(network["output"]) if p.pre.name == pop})
    if len(delays) > 1:
        names = [p.name for p in network.incoming(network["output"]) if p.pre.name == pop]
        raise ConfigError(f"e-prop: the projections {names} from {pop!r} into the readout have delays {delays}; "
                          "expected one delay (the learning signals of a population are filtered with one delay)")
    return delays[0] if delays else 1


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


def cores(network, cores_per_population):
    """The hidden cores of ``parallel.cores_per_population`` (:func:`hidden_core_split`), the
    readout on one core."""
    hidden = cores_per_population
    if isinstance(hidden, dict):
        hidden = {k: v for k, v in hidden.items() if k in hidden_populations(network)}
        if list(hidden) == ["hidden"]:
            hidden = hidden["hidden"]
    return {**hidden_core_split(network, hidden), "output": 1}


def check(cfg: EPropConfig, parallel, network, data) -> None:
    if parallel.replicas > cfg.batch_size:
        raise ConfigError(f"parallel.replicas = {parallel.replicas} with learning.batch_size = {cfg.batch_size}: the "
                          "replicas share each mini-batch, so some would never get a sample; expected "
                          f"learning.batch_size >= {parallel.replicas} (or fewer replicas)")
    if parallel.schedule != "lockstep":
        raise ConfigError(f"parallel.schedule = {parallel.schedule!r}: the recurrent ALIF layer exchanges "
                          "spikes every step; expected 'lockstep'")


def adapt(cfg: EPropConfig, data) -> EPropConfig:
    """The loss window of the data set (the cue task's recall period) when none is set."""
    if cfg.window_steps is None and data.loss_window is not None:
        return replace(cfg, window_steps=data.loss_window)
    return cfg


def training_state_bytes(memory_per_core: list[dict]) -> int:
    """Sum of the training-state categories over the cores (weights, gradients, Adam, traces)."""
    return sum(v for mem in memory_per_core for k, v in mem.items() if k in TRAINING_STATE)


def metrics(trainer, cores: list[dict]) -> dict:
    """e-prop's own keys of ``metrics.json``, for one copy of the network (replica 0)."""
    hidden = hidden_populations(trainer.sim.network)
    first = {pl.core_id for pl in trainer.sim.mapping.placements if pl.replica == 0}
    cores = [c for c in cores if c["core_id"] in first]
    return {"hidden_cores": sum(1 for c in cores if c["population"] in hidden),
            "training_state_bytes": training_state_bytes([c["memory"] for c in cores])}


RULE = register(Rule("eprop", "eprop", EPropConfig, "on_chip", learning=learning, cores=cores, reverse_rounds=1,
                     order_stream=13, check=check, metrics=metrics, adapt=adapt))
