"""Network builders: what a run's ``network.*`` describes, registered by ``network.name``.

A builder turns its typed config, the shape of the data (inputs, classes, spikes or analog) and
the seed into a :class:`~spinnray.model.network.Network`::

    def build_feedforward(cfg, data, seed) -> Network: ...
    register("feedforward", FeedForwardConfig, build_feedforward)

so a new network family is one function here and its ``conf/network/NAME.yaml``.  A builder
registered with ``build=None`` names a network that a rule builds itself (the dense BPTT's
layers, :mod:`spinnray.rules.bptt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from spinnray.config import opt
from spinnray.errors import ConfigError
from spinnray.registry import Registry
from spinnray.model.network import MAX_DELAY_STEPS, Network
from spinnray.model.neurons import ALIF, LI, LIF, AnalogSource, SpikeSource, model_from_dict
from spinnray.model.nirgraph import CONVENTIONS, MS_PER_UNIT, from_nir, graph_time_unit, read_nir

__all__ = ["DataShape", "register", "builder", "builder_names", "FeedForwardConfig", "RecurrentALIFConfig",
           "RecurrentLIFConfig", "RandomNetworkConfig", "NIRNetworkConfig", "build_feedforward", "build_recurrent_alif",
           "build_recurrent_lif", "build_random", "build_nir", "source_rates"]


@dataclass(frozen=True)
class DataShape:
    """What a builder needs to know of the data: input channels, classes, spikes or analog."""

    n_inputs: int
    n_classes: int
    input_kind: str = "analog"


@dataclass(frozen=True)
class Builder:
    name: str
    config: type
    build: Callable | None        # (cfg, DataShape | None, seed) -> Network


BUILDERS: Registry[Builder] = Registry("network.name")


def register(name: str, config: type, build: Callable | None = None) -> None:
    """Register ``build(cfg, data, seed) -> Network`` as network ``name``; ``build=None``: a network
    that a rule builds itself (no :class:`Network`)."""
    BUILDERS.add(name, Builder(name, config, build))


def builder_names() -> list[str]:
    return BUILDERS.names()


def builder(name) -> Builder:
    return BUILDERS.get(name)


# --------------------------------------------------------------------------------- feedforward
@dataclass(frozen=True)
class FeedForwardConfig:
    """input spikes -> hidden LIF -> output LIF, one output neuron per class (``network.name =
    feedforward``; Wunderlich & Pehle's Yin-Yang network)."""

    name: str = opt("feedforward", "network builder", choices=("feedforward",))
    steps: int = opt(50, "steps per sample (network.steps = T)", min=2, max=1_000_000)
    dt_ms: float = opt(1.0, "milliseconds per step", min=1e-6, max=1000.0)
    hidden: int = opt(200, "hidden LIF neurons", min=1, max=1_000_000)
    tau_mem_ms: float = opt(20.0, "membrane time constant", min=1e-6, max=1e6)
    tau_syn_ms: float = opt(5.0, "synaptic time constant", min=1e-6, max=1e6)
    w_in_mean: float = opt(1.5, "initial input->hidden weights: mean (Wunderlich & Pehle)", max=1e6)
    w_in_std: float = opt(0.78, "initial input->hidden weights: standard deviation", min=0.0, max=1e6)
    w_out_mean: float = opt(0.93, "initial hidden->output weights: mean", max=1e6)
    w_out_std: float = opt(0.1, "initial hidden->output weights: standard deviation", min=0.0, max=1e6)


def build_feedforward(cfg: FeedForwardConfig, data: DataShape, seed: int) -> Network:
    """``input`` (a spike source of the data's channels) -> ``hidden`` -> ``output`` (one LIF per
    class), weights drawn from ``seed``."""
    if data.input_kind != "spikes":
        raise ConfigError(f"network.name = feedforward takes spike input; the data set gives {data.input_kind} "
                          "input (use a spiking data set, or network.name = recurrent_alif)")
    n_in, n_out = data.n_inputs, data.n_classes
    rng = np.random.default_rng([seed, 7])
    net = Network(dt_ms=cfg.dt_ms)
    net.population("input", n_in, SpikeSource())
    net.population("hidden", cfg.hidden, LIF(tau_mem_ms=cfg.tau_mem_ms, tau_syn_ms=cfg.tau_syn_ms))
    net.population("output", n_out, LIF(tau_mem_ms=cfg.tau_mem_ms, tau_syn_ms=cfg.tau_syn_ms))
    net.connect("input", "hidden", rng.normal(cfg.w_in_mean, cfg.w_in_std, (n_in, cfg.hidden)), delays=1)
    net.connect("hidden", "output", rng.normal(cfg.w_out_mean, cfg.w_out_std, (cfg.hidden, n_out)), delays=1)
    return net


register("feedforward", FeedForwardConfig, build_feedforward)


# ------------------------------------------------------------------------------ recurrent_alif
@dataclass(frozen=True)
class RecurrentALIFConfig:
    """input (written by the host) -> recurrent ALIF (optionally partly LIF) -> LI readout, one
    per class (``network.name = recurrent_alif``; Rostami et al.'s keyword network)."""

    name: str = opt("recurrent_alif", "network builder", choices=("recurrent_alif",))
    steps: int | None = opt(None, "steps per sample: null = the data set's own length (set, it must equal it)",
                            min=1, max=1_000_000)
    hidden: int = opt(120, "recurrent ALIF neurons (Rostami et al.: 120)", min=1, max=1_000_000)
    dt_ms: float = opt(1.0, "ms per step", min=1e-6, max=1000.0)
    tau_mem_ms: float = opt(5.0, "hidden membrane time constant (ms)", min=1e-6, max=1e6)
    tau_adapt_ms: float = opt(150.0, "threshold-adaptation time constant (ms)", min=1e-6, max=1e6)
    beta: float = opt(0.184, "threshold-adaptation strength (0 = LIF)", min=0.0, max=1e6)
    v_th: float = opt(1.6, "baseline threshold", min=1e-9, max=1e6)
    tau_out_ms: float = opt(10.0, "readout time constant (ms)", min=1e-6, max=1e6)
    w_in_scale: float = opt(1.0, "input weights ~ N(0, scale / sqrt(inputs))", min=0.0, max=1e6)
    w_rec_scale: float = opt(1.0, "recurrent weights ~ N(0, scale / sqrt(hidden)), no self-connections", min=0.0, max=1e6)
    w_out_scale: float = opt(1.0, "readout weights ~ N(0, scale / sqrt(hidden))", min=0.0, max=1e6)
    recurrent: bool = opt(True, "recurrent hidden weights (false: feed-forward hidden layer)")
    refractory_steps: int = opt(0, "hidden neurons cannot spike for this many steps after a spike (Bellec et "
                                   "al.'s n_ref = 5 blocks 4 steps: 4 here)", min=0, max=1_000_000)
    n_lif: int = opt(0, "of the hidden neurons, how many are plain LIF (beta = 0; Bellec et al.'s cue "
                        "task: 50 of 100), in their own population 'lif' on their own cores", min=0, max=1_000_000)
    rec_delay: int = opt(1, "steps from a hidden spike to the hidden neurons it reaches (recurrent delay); the "
                            "exchange interval K may be up to min(rec_delay, out_delay)", min=1, max=MAX_DELAY_STEPS)
    out_delay: int = opt(1, "steps from a hidden spike to the readout (readout delay); e-prop's traces follow it",
                         min=1, max=MAX_DELAY_STEPS)


def build_recurrent_alif(cfg: RecurrentALIFConfig, data: DataShape, seed: int) -> Network:
    """The input -> recurrent hidden -> readout network with seeded initial weights.

    With ``cfg.n_lif = m > 0`` the first m hidden neurons are plain LIF (ALIF with
    beta = 0) in a population ``lif`` and the other ``hidden - m`` stay in ``hidden``;
    one population per neuron model, as a SpiNNaker core runs one model.  The weights
    are the same draws as for one population, split by rows and columns.
    """
    n_in, n_out = data.n_inputs, data.n_classes
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
                net.connect(pre, post, w_rec[psl, qsl], delays=cfg.rec_delay, mask=mask)
    w_out = rng.normal(0, cfg.w_out_scale / np.sqrt(h), (h, n_out))
    for name, sl in pops:
        net.connect(name, "output", w_out[sl], delays=cfg.out_delay)
    return net


def hidden_populations(net: Network) -> list[str]:
    """The recurrent populations of an e-prop network: ``hidden`` and, if any, ``lif``."""
    return [name for name in ("lif", "hidden") if name in net.populations]


register("recurrent_alif", RecurrentALIFConfig, build_recurrent_alif)


# ------------------------------------------------------------------------------- recurrent_lif
@dataclass(frozen=True)
class RecurrentLIFConfig:
    """input spikes -> recurrent LIF -> leaky-integrator readout, one per class (``network.name =
    recurrent_lif``): the network mlGeNN trains with EventProp on the Spiking Heidelberg Digits
    (Nowotny, Turner & Knight; their initial weights for 700 inputs and 256 hidden neurons are the
    defaults), for a voltage loss (``learning.loss = mean_voltage | sum_voltage | max_voltage``)."""

    name: str = opt("recurrent_lif", "network builder", choices=("recurrent_lif",))
    steps: int | None = opt(None, "steps per sample: null = the data set's own length (set, it must equal it)",
                            min=1, max=1_000_000)
    dt_ms: float = opt(1.0, "ms per step", min=1e-6, max=1000.0)
    hidden: int = opt(256, "recurrent LIF neurons", min=1, max=1_000_000)
    tau_mem_ms: float = opt(20.0, "hidden membrane time constant (ms)", min=1e-6, max=1e6)
    tau_syn_ms: float = opt(5.0, "hidden synaptic time constant (ms)", min=1e-6, max=1e6)
    v_th: float = opt(1.0, "hidden threshold (reset to 0)", min=1e-9, max=1e6)
    tau_out_ms: float = opt(20.0, "readout membrane time constant (ms)", min=1e-6, max=1e6)
    tau_out_syn_ms: float = opt(5.0, "readout synaptic time constant (ms; EventProp needs > 0)", min=1e-6, max=1e6)
    w_in_mean: float = opt(0.03, "initial input->hidden weights: mean", min=-1e6, max=1e6)
    w_in_std: float = opt(0.01, "initial input->hidden weights: standard deviation", min=0.0, max=1e6)
    w_rec_mean: float = opt(0.0, "initial recurrent weights: mean", min=-1e6, max=1e6)
    w_rec_std: float = opt(0.02, "initial recurrent weights: standard deviation", min=0.0, max=1e6)
    w_out_mean: float = opt(0.0, "initial hidden->readout weights: mean", min=-1e6, max=1e6)
    w_out_std: float = opt(0.03, "initial hidden->readout weights: standard deviation", min=0.0, max=1e6)
    recurrent: bool = opt(True, "recurrent hidden weights, all to all (false: a feed-forward hidden layer)")
    delay: int = opt(1, "delay of every projection in steps (parallel.exchange_interval may rise to the smallest)",
                     min=1, max=255)
    rec_delay_max: int | None = opt(None, "recurrent delays drawn per synapse from [delay, rec_delay_max] steps; "
                                          "null = all delay", min=1, max=255)


def build_recurrent_lif(cfg: RecurrentLIFConfig, data: DataShape, seed: int) -> Network:
    """``input`` (the data's spike channels) -> ``hidden`` (LIF, recurrent) -> ``output`` (LI, one
    per class), weights N(mean, std) from ``seed``."""
    if data.input_kind != "spikes":
        raise ConfigError(f"network.name = recurrent_lif takes spike input; the data set gives {data.input_kind} "
                          "input (use a spiking data set, or network.name = recurrent_alif)")
    if cfg.rec_delay_max is not None and cfg.rec_delay_max < cfg.delay:
        raise ConfigError(f"network.rec_delay_max = {cfg.rec_delay_max}: expected null or >= network.delay = "
                          f"{cfg.delay}")
    n_in, n_out, h = data.n_inputs, data.n_classes, cfg.hidden
    rng = np.random.default_rng([seed, 9])
    net = Network(dt_ms=cfg.dt_ms)
    net.population("input", n_in, SpikeSource())
    net.population("hidden", h, LIF(tau_mem_ms=cfg.tau_mem_ms, tau_syn_ms=cfg.tau_syn_ms, v_th=cfg.v_th))
    net.population("output", n_out, LI(tau_mem_ms=cfg.tau_out_ms, tau_syn_ms=cfg.tau_out_syn_ms))
    net.connect("input", "hidden", rng.normal(cfg.w_in_mean, cfg.w_in_std, (n_in, h)), delays=cfg.delay)
    if cfg.recurrent:
        w_rec = rng.normal(cfg.w_rec_mean, cfg.w_rec_std, (h, h))
        delays = cfg.delay if cfg.rec_delay_max is None else rng.integers(cfg.delay, cfg.rec_delay_max + 1, (h, h))
        net.connect("hidden", "hidden", w_rec, delays=delays)
    net.connect("hidden", "output", rng.normal(cfg.w_out_mean, cfg.w_out_std, (h, n_out)), delays=cfg.delay)
    return net


register("recurrent_lif", RecurrentLIFConfig, build_recurrent_lif)


# --------------------------------------------------------------------------------------- random
@dataclass(frozen=True)
class RandomNetworkConfig:
    """A network written out in YAML: populations and random projections (``network.name = random``)."""

    name: str = opt("random", "network builder", choices=("random",))

    steps: int = opt(500, "steps per trial (network.steps = T)", min=1, max=1_000_000)
    dt_ms: float = opt(1.0, "milliseconds per step", min=1e-6, max=1000.0)
    populations: dict = opt(None, "name -> {size, model: source|lif|alif|li, model parameters; "
                                  "rate_hz for a source}", factory=dict)
    projections: tuple[dict, ...] = opt((), "list of {pre, post, p_connect, weight_mean, weight_std, "
                                            "delay | delay_min and delay_max}", factory=tuple)


_PROJ_KEYS = {"pre", "post", "p_connect", "weight_mean", "weight_std", "delay", "delay_min", "delay_max", "name"}


def build_random(cfg: RandomNetworkConfig, data: DataShape | None, seed: int) -> Network:
    """The network of ``cfg`` with weights drawn from ``seed`` (the data shape is not used: the
    populations are written out)."""
    if not cfg.populations:
        raise ConfigError("network.populations is empty: expected name -> {size, model, ...}")
    rng = np.random.default_rng([seed, 1])
    net = Network(dt_ms=cfg.dt_ms)
    for name, spec in cfg.populations.items():
        spec = dict(spec)
        where = f"network.populations.{name}"
        size = spec.pop("size", None)
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"{where}.size = {size!r}: expected an integer >= 1")
        rate = spec.pop("rate_hz", None)
        model = model_from_dict(spec, where)
        if model.kind == "source":
            if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate < float("inf"):
                raise ConfigError(f"{where}.rate_hz = {rate!r}: a source needs a finite rate in Hz >= 0")
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
    return net


def source_rates(cfg, net: Network | None = None) -> dict[str, float]:
    """Firing rate in Hz of every spike-source population of a forward run's network: each its
    own (``network.name = random``) or ``network.rate_hz`` for all of ``net``'s (``nir``)."""
    if isinstance(cfg, RandomNetworkConfig):
        return {name: float(spec["rate_hz"]) for name, spec in cfg.populations.items()
                if dict(spec).get("model") == "source"}
    if isinstance(cfg, NIRNetworkConfig) and net is not None:
        return {p.name: float(cfg.rate_hz) for p in net.populations.values() if isinstance(p.model, SpikeSource)}
    raise ConfigError(f"network.name = {cfg.name}: a forward run drives its inputs with Poisson spikes at rates this "
                      "network does not give; use network=random or network=nir")


register("random", RandomNetworkConfig, build_random)


# ------------------------------------------------------------------------------------------ nir
@dataclass(frozen=True)
class NIRNetworkConfig:
    """A network read from a NIR graph file (``network.name = nir``; :mod:`spinnray.model.nirgraph`,
    ``docs/nir.md``)."""

    name: str = opt("nir", "network builder", choices=("nir",))
    path: str | None = opt(None, "the NIR graph file (.nir, HDF5) to read", path=True)
    convention: str = opt("spinnray", "how the graph's parameters become steps: spinnray (its own graphs, exact) | "
                                      "snntorch | norse | nir (the NIR reference code)", choices=tuple(CONVENTIONS))
    dt_ms: float = opt(1.0, "ms per step: the graph is read at this step (snnTorch's graphs: 0.1, Norse's: 1)",
                       min=1e-6, max=1000.0)
    time_unit: str | None = opt(None, "unit of the graph's time constants: s | ms; null = what the graph records, "
                                      "else the convention's (spinnray, nir: ms; snntorch, norse: s)",
                                choices=tuple(MS_PER_UNIT))
    reset: str | None = opt(None, "how spiking nodes reset: value (to v_reset) | subtract; null = the convention's",
                            choices=("value", "subtract"))
    unit_threshold: bool = opt(True, "scale each spiking population so its threshold is 1 (weights / v_threshold; "
                                     "the spikes are unchanged; EventProp needs it)")
    steps: int | None = opt(None, "steps per sample: null = the data set's (training); a forward run needs it",
                            min=1, max=1_000_000)
    rate_hz: float = opt(20.0, "forward runs: Poisson rate of every input population (Hz)", min=0.0, max=1e6)


def build_nir(cfg: NIRNetworkConfig, data: DataShape | None, seed: int) -> Network:
    """The network of the graph in ``cfg.path`` read at ``cfg.dt_ms`` (the seed is not used: the
    graph holds its weights).  With a data set, the Input is analog or spiking as the data are,
    and its size and the output population's must be the data's inputs and classes."""
    if cfg.path is None:
        raise ConfigError("network.path = null: network.name = nir reads its network from a NIR file; give "
                          "network.path=FILE.nir")
    graph = read_nir(cfg.path)
    unit = graph_time_unit(graph, cfg.convention, cfg.time_unit)
    imp = from_nir(graph, convention=cfg.convention, dt=cfg.dt_ms / MS_PER_UNIT[unit], time_unit=unit,
                   reset=cfg.reset, input_kind=None if data is None else data.input_kind,
                   unit_threshold=cfg.unit_threshold)
    net = imp.network
    if data is not None:
        inputs = [p for p in net.populations.values() if not p.model.has_core or not net.incoming(p)]
        sinks = [p for p in net.populations.values() if net.incoming(p) and not net.outgoing(p)]
        if [p.size for p in inputs] != [data.n_inputs]:
            raise ConfigError(f"network.path = {cfg.path!r}: the graph's inputs have {[p.size for p in inputs]} "
                              f"channels; the data set gives {data.n_inputs}")
        if [p.size for p in sinks] != [data.n_classes]:
            raise ConfigError(f"network.path = {cfg.path!r}: the graph's output populations have "
                              f"{[p.size for p in sinks]} neurons; the data set has {data.n_classes} classes")
    return net


register("nir", NIRNetworkConfig, build_nir)
