"""The user-facing facade: map a network, run it on a backend, read results.

    sim = Simulator(net, backend="local", cores_per_population=2, exchange_interval=1)
    res = sim.run(100, inputs={"input": spikes})     # spikes (steps, n) or (steps, batch, n)
    res.spikes["hidden"]                              # (steps, batch, n) bool
    sim.metrics()                                     # traffic and memory, as in metrics.json
    sim.close()

On a Ray cluster, ``cluster=ClusterConfig(nodes=3)`` (or ``chips_per_node``)
spreads the chips over three nodes; every chip has its own router
(``cluster.router_per = "node"``: one per node); the ``local`` backend
emulates the same routers, with identical results and counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spinnray.backends import ensure_ray, make_backend
from spinnray.config import ClusterConfig, MachineConfig, ParallelConfig, from_dict
from spinnray.errors import ConfigError, NetworkError, SpinnrayError
from spinnray.machine.counters import bytes_by_link_class, memory_summary, traffic_summary
from spinnray.machine.schedule import TrainStep
from spinnray.mapping import Learning, Mapping, assign_nodes, map_network, specs_from_mapping
from spinnray.model.network import Network
from spinnray.model.neurons import AnalogSource, SpikeSource

__all__ = ["Simulator", "RunResult", "poisson_spikes", "place", "check_exchange_interval", "schedule_levels"]


@dataclass
class RunResult:
    """What one run recorded, assembled per population: ``(steps, batch, n)``."""

    steps: int
    batch: int
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)   # per sample: loss (reg_loss included), pred, t_first_ms, reg_loss
    silent: dict[str, np.ndarray] = field(default_factory=dict)    # per sample: neurons that never fired (learning cores)

    def rates_hz(self, dt_ms: float) -> dict[str, float]:
        """Mean firing rate of each spiking population."""
        return {k: float(s.mean() * 1000.0 / dt_ms) for k, s in self.spikes.items()}


def poisson_spikes(rate_hz: float, steps: int, batch: int, n: int, dt_ms: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Bernoulli approximation of Poisson spike trains: (steps, batch, n) bool."""
    return rng.random((steps, batch, n)) < rate_hz * dt_ms / 1000.0


def place(network: Network, machine: MachineConfig, parallel: ParallelConfig, cluster: ClusterConfig,
          learning: Learning | None = None) -> Mapping:
    """Where ``network`` goes on the machine: sliced, placed on chips (``parallel``), keys and routes,
    every core's memory checked against its budget, chips spread over ``cluster``'s nodes; what a
    :class:`Simulator` runs on, and what ``plan=true`` reports without running.  The schedule and
    the exchange interval are checked first (:func:`schedule_levels`, :func:`check_exchange_interval`):
    a plan refuses what a run would."""
    schedule_levels(network, parallel.schedule)
    check_exchange_interval(network, parallel.exchange_interval)
    mapping = map_network(network, machine, parallel.cores_per_population, parallel.batch_size,
                          parallel.replicas, learning)
    return assign_nodes(mapping, cluster.nodes, cluster.chips_per_node, cluster.router_per)


def check_exchange_interval(network: Network, k) -> None:
    """ConfigError unless the exchange interval ``k`` is an int in [1, the network's minimum delay]."""
    min_delay = network.min_delay
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"parallel.exchange_interval = {k!r}: expected an int >= 1")
    if k > min_delay:
        raise ConfigError(
            f"parallel.exchange_interval = {k} exceeds the minimum synaptic delay of {min_delay} steps; "
            f"expected K <= {min_delay} (a spike must never be needed before the round that carries it ends)")


def schedule_levels(network: Network, schedule: str) -> dict[str, int] | None:
    """The layered schedule's level of every population (None for lockstep); ConfigError when the
    network is not feed-forward."""
    if schedule != "layered":
        return None
    try:
        return network.levels()
    except NetworkError as e:
        raise ConfigError(f"parallel.schedule = 'layered' needs a feed-forward network: {e}; "
                          "use parallel.schedule=lockstep") from None


class Simulator:
    """A network mapped onto emulated cores, run on the ``local`` or ``ray`` backend."""

    def __init__(self, network: Network, machine: MachineConfig | None = None, *,
                 parallel: ParallelConfig | None = None, backend: str = "local",
                 cluster: ClusterConfig | None = None, learning: Learning | None = None,
                 timeout_s: float | None = None, **parallel_fields):
        """``parallel`` (or its fields as keywords: ``cores_per_population``,
        ``exchange_interval``, ``batch_size``, ``replicas``, ``schedule``) says how the network
        is spread: ``replicas`` copies share each run's samples (data parallelism), each core
        runs ``batch_size`` samples in lockstep, ``cores_per_population`` an int, a
        ``{population: cores}`` dict or None (as few as the neuron cap and SRAM allow).
        ``learning`` (a rule's :class:`~spinnray.mapping.Learning`): the populations that learn,
        with their cores' typed specs, and those that receive error events.  ``cluster`` spreads
        the chips over nodes (``nodes``, ``chips_per_node``, ``node_ids``) and gives them routers
        (``router_per``: one per chip or per node, on either backend) and bounds the waits (``round_timeout_s``, ``placement_timeout_s``;
        ``timeout_s``, when given, overrides ``cluster.round_timeout_s``).  Raises
        :class:`MappingError` when the chips cannot be spread so, or the Ray cluster cannot
        hold them.

        ``schedule``: ``"lockstep"`` runs rounds of K steps (every core steps together, as the
        chip does in real time); ``"layered"`` (feed-forward networks only) runs one round per
        level of the network, and the reverse pass likewise from the top level down: identical
        results in far fewer rounds (:mod:`spinnray.machine.schedule`)."""
        self.network = network
        if parallel is None:
            parallel = from_dict(ParallelConfig, parallel_fields, "parallel")
        elif parallel_fields:
            raise ConfigError(f"Simulator: give parallel= or its fields {sorted(parallel_fields)}, not both")
        self.parallel = parallel
        schedule = parallel.schedule
        self.schedule = schedule
        pop_levels = schedule_levels(network, schedule)
        self.machine = machine or MachineConfig()
        self.cluster = cluster if cluster is not None else ClusterConfig()
        if backend not in ("local", "ray"):
            raise ConfigError(f"backend = {backend!r}: expected 'local' or 'ray'")
        self.k = parallel.exchange_interval
        self.batch_size = parallel.batch_size
        self.replicas = parallel.replicas
        self.learning = learning
        self.mapping = place(network, self.machine, parallel, self.cluster, learning)
        specs = specs_from_mapping(self.mapping, parallel.batch_size, learning)
        self.levels = ({pl.core_id: pop_levels[pl.slice.population] for pl in self.mapping.placements}
                       if pop_levels is not None else None)
        if backend == "ray":
            ensure_ray()
        self.backend = make_backend(
            backend, specs, self.mapping.table, self.machine.strict,
            self.cluster.round_timeout_s if timeout_s is None else timeout_s,
            node_of=self.mapping.node_of(), tables=self.mapping.router_tables(), node_ids=self.cluster.node_ids,
            placement_timeout_s=self.cluster.placement_timeout_s, router_of=self.mapping.router_of(),
            copies=parallel.copies and schedule == "lockstep")
        self.dense_equivalent_events = 0
        self.last_run = None
        self.steps_run = 0
        self.samples_run = 0

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def run(self, steps: int, inputs: dict[str, np.ndarray] | None = None,
            record: tuple[str, ...] = ("spikes",), exchange_interval: int | None = None,
            targets: dict[str, np.ndarray] | None = None, train: TrainStep | None = None) -> RunResult:
        """Run ``steps`` steps from rest; ``inputs`` gives every SpikeSource's spikes.

        ``inputs[name]``: ``(steps, n)`` or ``(steps, batch, n)`` bools; the
        batch is shared out to the replicas in contiguous, near-equal shards.
        ``targets[name]``: per-sample labels ``(batch,)`` for the cores of a
        population that computes a loss.  ``exchange_interval`` overrides K
        for this run (same rule: K <= min delay).  ``train``
        (:class:`~spinnray.machine.schedule.TrainStep`): run the reverse pass (as
        :meth:`backward`) and, with ``train.lr``, every core's Adam step on its own
        gradient right after, in the same call to every core: a whole training step
        is one Ray call per core and one router set-up.
        """
        k = self.k if exchange_interval is None else exchange_interval
        check_exchange_interval(self.network, k)
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"network.steps = {steps!r}: expected an int >= 1")
        unknown = set(record) - {"spikes", "v"}
        if unknown:
            raise ConfigError(f"record = {sorted(unknown)}: expected some of ['spikes', 'v']")
        arrays, analog, batch = self._split_inputs(steps, inputs)
        per_core, shards = self._shard(batch, arrays, analog, targets)
        batches = {pl.core_id: len(shards[pl.replica]) for pl in self.mapping.placements}
        recorded = self.backend.run(steps, k, batches, per_core, tuple(record), levels=self.levels,
                                    train=train)
        self.last_run = (steps, max(batches.values()), k)
        self.steps_run += steps
        self.samples_run += batch
        senders = {p.pre.name for p in self.network.projections if not isinstance(p.pre.model, AnalogSource)}
        self.dense_equivalent_events += steps * batch * sum(
            self.network.populations[name].size for name in senders)
        return self._gather(recorded, steps, batch)

    def _split_inputs(self, steps: int, inputs) -> tuple[dict, dict, int]:
        """Every source population's input, checked: ``(spikes, analog values, batch)`` (steps x batch x n)."""
        inputs = dict(inputs or {})
        batch = None
        arrays = {}
        analog = {}
        for pop in self.network.populations.values():
            if not isinstance(pop.model, (SpikeSource, AnalogSource)):
                continue
            kind = "SpikeSource" if isinstance(pop.model, SpikeSource) else "AnalogSource"
            if pop.name not in inputs:
                what = "spikes" if kind == "SpikeSource" else "values"
                raise SpinnrayError(f"population {pop.name!r} is a {kind}: give its {what} in "
                                    f"inputs[{pop.name!r}] as (steps, n) or (steps, batch, n) "
                                    f"{'bools' if kind == 'SpikeSource' else 'floats'}")
            x = np.asarray(inputs.pop(pop.name))
            if x.ndim == 2:
                x = x[:, None, :]
            if x.ndim != 3 or x.shape[0] != steps or x.shape[2] != pop.size:
                raise SpinnrayError(f"inputs[{pop.name!r}] has shape {x.shape}; expected "
                                    f"({steps}, {pop.size}) or ({steps}, batch, {pop.size})")
            if batch is not None and x.shape[1] != batch:
                raise SpinnrayError(f"inputs[{pop.name!r}] has batch {x.shape[1]}; others have {batch}")
            batch = x.shape[1]
            if kind == "AnalogSource":
                if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
                    raise SpinnrayError(f"inputs[{pop.name!r}]: expected finite numbers (dtype {x.dtype})")
                analog[pop.name] = x
            else:
                arrays[pop.name] = x
        if inputs:
            raise SpinnrayError(f"inputs for {sorted(inputs)}: no such SpikeSource or AnalogSource population")
        return arrays, analog, batch or 1

    def _shard(self, batch: int, arrays: dict, analog: dict, targets) -> tuple[dict, list]:
        """What each core gets of the batch: replicas take contiguous, near-equal shards."""
        capacity = self.batch_size * self.replicas
        if batch > capacity:
            raise SpinnrayError(f"batch {batch} exceeds parallel.batch_size x replicas = {self.batch_size} x "
                                f"{self.replicas} that the cores were mapped for")
        shards = np.array_split(np.arange(batch), self.replicas)
        per_core: dict[int, np.ndarray] = {}
        for r, idx in enumerate(shards):
            for name, x in arrays.items():
                for pl in self.mapping.cores_of(name, r):
                    per_core[pl.core_id] = np.ascontiguousarray(x[:, idx, pl.slice.lo:pl.slice.hi], bool)
            for name, x in analog.items():
                for proj in self.network.outgoing(self.network[name]):
                    for pl in self.mapping.cores_of(proj.post.name, r):
                        per_core.setdefault(pl.core_id, {})[name] = np.ascontiguousarray(x[:, idx])
            for name, y in (targets or {}).items():
                y = np.asarray(y)
                if y.shape != (batch,):
                    raise SpinnrayError(f"targets[{name!r}] has shape {y.shape}; expected ({batch},)")
                for pl in self.mapping.cores_of(name, r):
                    if isinstance(per_core.get(pl.core_id), dict):
                        per_core[pl.core_id]["targets"] = y[idx]
                    else:
                        per_core[pl.core_id] = y[idx]
        return per_core, shards

    def _gather(self, recorded: dict, steps: int, batch: int) -> RunResult:
        """The cores' records joined back into whole populations and the whole batch."""
        result = RunResult(steps, batch)
        for name in self.network.populations:
            for var, target in (("spikes", result.spikes), ("v", result.v)):
                per_replica = []
                for r in range(self.replicas):
                    parts = [recorded[pl.core_id][var] for pl in self.mapping.cores_of(name, r)
                             if var in recorded[pl.core_id]]
                    if parts:
                        per_replica.append(np.concatenate(parts, axis=2))
                if per_replica:
                    target[name] = np.concatenate(per_replica, axis=1)
        for name in self.network.populations:
            per_replica = []
            for r in range(self.replicas):
                parts = [recorded[pl.core_id]["silent"] for pl in self.mapping.cores_of(name, r)
                         if "silent" in recorded[pl.core_id]]
                if parts:
                    per_replica.append(np.sum(parts, axis=0))
            if per_replica:
                result.silent[name] = np.concatenate(per_replica)
        for var in ("loss", "pred", "logits", "t_first_ms", "label_silent"):
            parts = [recorded[pl.core_id][var] for pl in self.mapping.placements if var in recorded[pl.core_id]]
            if parts:
                result.outputs[var] = np.concatenate(parts, axis=0)
        # a regulariser's per-sample parts (EventProp's hidden spike counts): summed over a replica's
        # cores, then part of each sample's loss
        per_replica = []
        for r in range(self.replicas):
            parts = [recorded[pl.core_id]["reg_loss"] for pl in self.mapping.placements
                     if pl.replica == r and "reg_loss" in recorded[pl.core_id]]
            if parts:
                per_replica.append(np.sum(parts, axis=0))
        if per_replica:
            result.outputs["reg_loss"] = np.concatenate(per_replica)
            if "loss" in result.outputs:
                result.outputs["loss"] = result.outputs["loss"] + result.outputs["reg_loss"]
        return result

    def backward(self, scale: float, rounds: int | None = None) -> None:
        """The reverse pass of the last run (learning cores; error events through the routers).

        ``rounds``: reverse steps to run, by default every step of the run (EventProp, in
        rounds of the run's K steps); e-prop's learning signals need one.
        """
        if self.last_run is None:
            raise SpinnrayError("Simulator.backward() needs a forward run() first")
        steps, batch, k = self.last_run
        if rounds is not None and self.levels is not None:
            raise SpinnrayError("Simulator.backward(rounds=...) is for lockstep runs; the layered schedule's "
                                "reverse pass covers every step of the run")
        self.backend.run_backward(steps if rounds is None else rounds, batch, scale, levels=self.levels,
                                  k=k if rounds is None else 1)

    def call(self, method, args: dict[int, tuple] | None = None, cores=None) -> dict:
        """``method(core, *args[core])`` on cores (all, or the ids in ``cores``), wherever they run:
        results by core id.  ``method`` is a function of the cores' class, such as
        ``LearningCore.gradients`` (the learner interface of :mod:`spinnray.rules.learning`)."""
        return self.backend.call(method, args, cores)

    def events_sent(self) -> int:
        """Spike and error events all cores have sent so far (the cores' own
        counters, as of the last forward or backward run): for progress displays."""
        return self.backend.events_sent()

    def reports(self) -> tuple[list[dict], list[dict]]:
        """Per-core and per-router reports: counters, memory, notes."""
        return self.backend.reports()

    def metrics(self) -> dict:
        """The ``cores``, ``traffic`` and ``memory`` blocks of ``metrics.json``."""
        cores, routers = self.reports()
        traffic = traffic_summary([r["counters"] for r in routers], [c["counters"] for c in cores],
                                  self.dense_equivalent_events)
        traffic["by_link_class"] = bytes_by_link_class(routers, cores)
        mapping = self.mapping.summary()
        if getattr(self.backend, "ray_node_ids", None) is not None:
            mapping["ray_node_ids"] = list(self.backend.ray_node_ids)
        return {
            "cores": self.mapping.n_cores,
            "traffic": traffic,
            "memory": memory_summary([c["memory"] for c in cores], self.machine.sram_per_pe_bytes),
            "mapping": mapping,
        }

    def close(self) -> None:
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
