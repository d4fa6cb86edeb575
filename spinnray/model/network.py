"""What the user builds: populations of neurons and the projections between them.

A :class:`Network` is a plain description, independent of any machine::

    net = Network(dt_ms=1.0)
    inp = net.population("input", 100, SpikeSource())
    hid = net.population("hidden", 200, LIF(tau_mem_ms=20, tau_syn_ms=5))
    net.connect(inp, hid, weights=w, delays=1)            # w: (100, 200)
    net.connect(hid, hid, weights=w_rec, delays=d_rec)    # d_rec: (200, 200) ints

Weights are dense ``(n_pre, n_post)`` arrays; a zero weight together with a
``mask`` marks an absent synapse.  Delays are whole steps >= 1, one per
projection or one per synapse.  Everything is validated when added, with the
offending name and value in the message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spinnray.errors import NetworkError
from spinnray.model.neurons import LI, AnalogSource, NeuronModel, SpikeSource

__all__ = ["Population", "Projection", "Network", "MAX_DELAY_STEPS"]

MAX_DELAY_STEPS = 255   # delays are stored as uint8 on the cores


@dataclass(frozen=True)
class Population:
    """``size`` neurons of one model; ``index`` is its position in the network."""

    name: str
    size: int
    model: NeuronModel
    index: int

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise NetworkError(f"population name {self.name!r}: expected an identifier")
        if not isinstance(self.size, (int, np.integer)) or isinstance(self.size, bool) or self.size < 1:
            raise NetworkError(f"population {self.name!r}: size = {self.size!r}, expected an int >= 1")


@dataclass(frozen=True, eq=False)
class Projection:
    """All-to-all (optionally masked) synapses from ``pre`` to ``post``.

    ``weights`` (n_pre, n_post) float; ``delays`` an int >= 1 or an
    (n_pre, n_post) integer array of steps; ``mask`` None (every pair is a
    synapse) or an (n_pre, n_post) bool array.
    """

    name: str
    pre: Population
    post: Population
    weights: np.ndarray
    delays: int | np.ndarray
    mask: np.ndarray | None = None
    index: int = 0

    @property
    def min_delay(self) -> int:
        return int(self.delays) if np.isscalar(self.delays) else int(self.delays.min())

    @property
    def max_delay(self) -> int:
        return int(self.delays) if np.isscalar(self.delays) else int(self.delays.max())

    def delay_values(self) -> np.ndarray:
        """The distinct delays of this projection, ascending."""
        if np.isscalar(self.delays):
            return np.array([int(self.delays)])
        d = self.delays if self.mask is None else self.delays[self.mask]
        return np.unique(d) if d.size else np.array([self.min_delay])


@dataclass
class Network:
    """Populations and projections; ``dt_ms`` is the length of one step."""

    dt_ms: float = 1.0
    populations: dict[str, Population] = field(default_factory=dict)
    projections: list[Projection] = field(default_factory=list)

    def __post_init__(self):
        if not isinstance(self.dt_ms, (int, float)) or isinstance(self.dt_ms, bool) \
                or not math.isfinite(self.dt_ms) or not self.dt_ms > 0:
            raise NetworkError(f"dt_ms = {self.dt_ms!r}: expected a finite number > 0")

    def population(self, name: str, size: int, model: NeuronModel) -> Population:
        """Add a population and return it."""
        if name in self.populations:
            raise NetworkError(f"population {name!r} exists already")
        pop = Population(name, int(size) if isinstance(size, np.integer) else size, model,
                         len(self.populations))
        self.populations[name] = pop
        return pop

    def connect(self, pre: Population | str, post: Population | str, weights, delays=1,
                mask=None, name: str | None = None) -> Projection:
        """Add a projection from ``pre`` to ``post`` and return it."""
        pre, post = self[pre], self[post]
        name = name or f"{pre.name}->{post.name}" + (
            f"#{sum(p.pre is pre and p.post is post for p in self.projections)}"
            if any(p.pre is pre and p.post is post for p in self.projections) else "")
        if any(p.name == name for p in self.projections):
            raise NetworkError(f"projection {name!r} exists already")
        if isinstance(post.model, SpikeSource):
            raise NetworkError(f"projection {name!r}: post population {post.name!r} is a "
                               "SpikeSource and takes no input")
        if isinstance(post.model, AnalogSource):
            raise NetworkError(f"projection {name!r}: post population {post.name!r} is an "
                               "AnalogSource and takes no input")
        if isinstance(pre.model, AnalogSource) and not (np.isscalar(delays) and delays == 1):
            raise NetworkError(f"projection {name!r}: delays = {delays!r} from the AnalogSource {pre.name!r}; "
                               "analog input carries no events (x[t] enters at step t): leave delays = 1")
        if isinstance(pre.model, LI):
            raise NetworkError(f"projection {name!r}: pre population {pre.name!r} is a "
                               "non-spiking LI readout and cannot send spikes")
        shape = (pre.size, post.size)
        w = np.asarray(weights)
        if w.shape != shape or not np.issubdtype(w.dtype, np.floating) and not np.issubdtype(w.dtype, np.integer):
            raise NetworkError(f"projection {name!r}: weights of shape {w.shape} and dtype {w.dtype}; "
                               f"expected a numeric array of shape {shape} (n_pre, n_post)")
        bad = np.argwhere(~np.isfinite(w))
        if len(bad):
            i, j = (int(v) for v in bad[0])
            raise NetworkError(f"projection {name!r}: weight ({i}, {j}) = {float(w[i, j])}; expected finite weights "
                               f"({len(bad)} non-finite)")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != shape or mask.dtype != bool:
                raise NetworkError(f"projection {name!r}: mask of shape {mask.shape} and dtype "
                                   f"{mask.dtype}; expected bool of shape {shape}")
            w = np.where(mask, w, 0)
        if np.isscalar(delays) or np.ndim(delays) == 0:
            d = delays.item() if isinstance(delays, np.ndarray) else delays
            if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or not 1 <= d <= MAX_DELAY_STEPS:
                raise NetworkError(f"projection {name!r}: delay = {d!r}; expected an int step "
                                   f"count in [1, {MAX_DELAY_STEPS}]")
            d = int(d)
        else:
            d = np.asarray(delays)
            if d.shape != shape or not np.issubdtype(d.dtype, np.integer):
                raise NetworkError(f"projection {name!r}: delays of shape {d.shape} and dtype {d.dtype}; "
                                   f"expected an int or an integer array of shape {shape}")
            if d.min() < 1 or d.max() > MAX_DELAY_STEPS:
                raise NetworkError(f"projection {name!r}: delays range over [{d.min()}, {d.max()}]; "
                                   f"expected steps in [1, {MAX_DELAY_STEPS}]")
            d = d.astype(np.uint8)
        proj = Projection(name, pre, post, np.array(w, dtype=np.float64), d, mask, len(self.projections))
        self.projections.append(proj)
        return proj

    def __getitem__(self, key: Population | str) -> Population:
        if isinstance(key, Population):
            if self.populations.get(key.name) is not key:
                raise NetworkError(f"population {key.name!r} does not belong to this network")
            return key
        if key not in self.populations:
            raise NetworkError(f"no population {key!r}; the network has {sorted(self.populations)}")
        return self.populations[key]

    def incoming(self, pop: Population) -> list[Projection]:
        return [p for p in self.projections if p.post is pop]

    def outgoing(self, pop: Population) -> list[Projection]:
        return [p for p in self.projections if p.pre is pop]

    def levels(self) -> dict[str, int]:
        """Feed-forward depth of every population: the longest path of spike
        projections that reaches it (0 without incoming spike projections;
        analog input carries no events and does not count).

        The ``layered`` schedule runs level by level.  Raises
        :class:`NetworkError` naming a projection of a cycle (a recurrent
        network has no levels).
        """
        spikes = [p for p in self.projections if not isinstance(p.pre.model, AnalogSource)]
        level: dict[str, int] = {}
        visiting: set[str] = set()

        def depth(name: str) -> int:
            if name in level:
                return level[name]
            visiting.add(name)
            d = 0
            for p in spikes:
                if p.post.name != name:
                    continue
                if p.pre.name in visiting:
                    raise NetworkError(f"projection {p.name!r} closes a cycle ({p.pre.name!r} reaches itself): "
                                       "the network is recurrent and has no feed-forward levels")
                d = max(d, depth(p.pre.name) + 1)
            visiting.discard(name)
            level[name] = d
            return d

        for name in self.populations:
            depth(name)
        return level

    @property
    def min_delay(self) -> int:
        """The smallest delay of the spike projections in steps (bounds the exchange interval K).

        Projections from an :class:`AnalogSource` carry no events and do not count.
        """
        return min((p.min_delay for p in self.projections if not isinstance(p.pre.model, AnalogSource)),
                   default=MAX_DELAY_STEPS)
