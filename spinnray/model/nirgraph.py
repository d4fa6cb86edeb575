"""A :class:`~spinnray.model.network.Network` to and from a NIR graph (the Neuromorphic Intermediate
Representation, ``pip install nir``; files are HDF5, nothing in them is ever executed or unpickled).

NIR describes neurons by continuous-time equations and carries no time step, so a graph means
nothing in steps until a *convention* says how its parameters become a discrete update.  The
frameworks disagree; ``docs/nir.md`` has the derivations.  Every convention reads a spiking
node (``CubaLIF``; ``LIF`` is the same without the current ``I``) as, per step ``dt``::

    I[t] = alpha I[t-1] + g_I u[t]          u[t]: the node's summed weighted input in step t
    V[t] = beta  V[t-1] + g_V I[t - lag]    (LIF: V[t] = beta V[t-1] + g_V u[t])
    spike where V[t] > v_threshold;  then V <- v_reset (reset "value") or V <- V - v_threshold ("subtract")

==========  ===================  ==================  ===============  ===  ==============  ==========
convention  alpha, beta          g_I                 g_V              lag  reset           default dt
==========  ===================  ==================  ===============  ===  ==============  ==========
spinnray    exp(-dt/tau)         w_in / tau_syn      (1 - beta) r     0    node metadata,  the graph's
                                                                           else v_reset
snntorch    1 - dt/tau (Euler)   w_in dt / tau_syn   r dt / tau_mem   0    to 0            1e-4 s
norse       1 - dt/tau (Euler)   w_in dt / tau_syn   r dt / tau_mem   0    to 0            1e-3 s
nir         1 - dt/tau (Euler)   w_in dt / tau_syn   r dt / tau_mem   1    subtract        none
==========  ===================  ==================  ===============  ===  ==============  ==========

(``LI`` and ``CubaLI`` are the same without threshold.)  ``spinnray`` is the exact solution for
Dirac input spikes of ``I`` (a spike of weight W makes I jump by w_in W / tau_syn) and the
exponential-Euler step of ``V`` -- spinnray's own :class:`~spinnray.model.neurons.LIF`, so its
graphs read back exactly.  ``snntorch`` and ``norse`` are what those frameworks' importers compute
(snnTorch 1.0's ``Synaptic`` and Norse 1.1's ``LIBox`` + ``LIFBox``, both with the new ``I`` and a
reset to 0 that ignores ``v_reset``: a node with another v_reset is refused); ``nir`` is the NIR
paper's reference implementation (``nir_reference_impl.py``: the previous step's ``I`` and reset
by subtraction).

A spinnray population holds ``exp(-dt/tau)`` decays and ``V[t] = b V[t-1] + (1 - b) I[t]``, so
every gain folds into the weights into the node: ``W_spinnray[i, j] = W[j, i] g_I[j] g_V[j] /
(1 - beta)`` (per neuron ``r`` and ``w_in`` are allowed; the time constants, ``v_threshold`` and
``v_reset`` must be one value per node, and ``v_leak`` and biases zero).  An Euler decay becomes
``tau_spinnray = -dt / ln(1 - dt/tau)``.

Time.  A time-stepped NIR executor (snnTorch, Norse, nirtorch) runs a feed-forward edge within the
step and a recurrent edge (one that closes a cycle and leads no further from the inputs) one
step later; a spinnray projection takes at least one step.  So every population P has an
*offset* ``k[P]``: spinnray's spikes of P at step ``t`` are the graph's at step ``t - k[P]``
(inputs: 0), and a projection's delay in steps is ``delta + lag + back + k[post] - k[pre]``
(``delta``: the graph's ``Delay`` nodes in steps, ``back``: 1 for a recurrent edge; from an analog
input it must come to 0).  Export picks the largest offsets the delays allow (so the graph needs
the fewest ``Delay`` nodes; per-synapse delays become one ``Linear`` + ``Delay`` pair per distinct
value) and records them in the graph's metadata; import uses recorded offsets, else the longest
path of feed-forward edges from an input, each counting ``1 - lag`` (every such edge then becomes
a one-step projection).  A cycle faster than spinnray's one step per projection (two populations
exciting each other within one step) is refused.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinnray.errors import ConfigError, DataError, NetworkError
from spinnray.model.network import MAX_DELAY_STEPS, Network
from spinnray.model.neurons import LI, LIF, AnalogSource, SpikeSource

__all__ = ["Convention", "CONVENTIONS", "MS_PER_UNIT", "Imported", "to_nir", "from_nir", "graph_time_unit", "read_nir",
           "write_nir", "nir_module"]

log = logging.getLogger("spinnray")

#: milliseconds in one time unit of a graph
MS_PER_UNIT = {"s": 1000.0, "ms": 1.0}

#: the most bytes the arrays of a NIR file may hold (checked before they are read)
MAX_FILE_ARRAY_BYTES = 1 << 31


@dataclass(frozen=True)
class Convention:
    """How a graph's neuron parameters become steps (module docstring)."""

    name: str
    integrator: str            # "exp": exp(-dt/tau) and w_in / tau_syn; "euler": 1 - dt/tau and w_in dt / tau_syn
    lag: int                   # 1: V[t] takes I[t-1] (the NIR reference); 0: I[t]
    reset: str | None          # "value" | "subtract"; None: the node's metadata, else "value"
    v_reset: bool              # the reader honours v_reset (False: it resets to 0, so v_reset must be 0)
    dt: float | None           # default step, in time_unit
    time_unit: str             # unit of the time constants (and dt) in the graph
    export_r: str              # what export writes as r: "one" | "tau" (r = tau_mem / dt: g_V = 1, weights x (1 - b))
    doc: str


CONVENTIONS = {c.name: c for c in (
    Convention("spinnray", "exp", 0, None, True, None, "ms", "one",
               "exact for I (Dirac input), exponential-Euler V: spinnray's own LIF; reads its graphs back exactly"),
    Convention("snntorch", "euler", 0, "value", False, 1e-4, "s", "tau",
               "snnTorch's Synaptic/Leaky as its NIR importer builds them (dt 1e-4 s, reset to 0)"),
    Convention("norse", "euler", 0, "value", False, 1e-3, "s", "one",
               "Norse's NIR importer (w_in -> LIBox -> r -> LIFBox, dt 1e-3 s by default; Norse 1.1 resets to 0)"),
    Convention("nir", "euler", 1, "subtract", True, None, "ms", "one",
               "the NIR paper's reference implementation: forward Euler, the previous step's I, subtract reset"),
)}

_SOURCE, _NEURON, _WEIGHT, _DELAY, _OUTPUT, _PASS = "source", "neuron", "weight", "delay", "output", "pass"
_CUBA = ("CubaLIF", "CubaLI")
_SPIKING = ("CubaLIF", "LIF")
_NEURON_PARAMS = ("tau", "tau_mem", "tau_syn", "r", "v_leak", "v_threshold", "v_reset", "w_in")
_READ = "Input, Output, Linear, Affine (zero bias), Delay, LIF, CubaLIF, LI, CubaLI and nested NIRGraphs of these"


def nir_module():
    """The ``nir`` package (an optional dependency: ``pip install 'spinnray[nir]'``)."""
    try:
        import nir
    except ImportError:
        raise ConfigError("NIR support needs the optional package nir (1.0.x): pip install 'spinnray[nir]' "
                          "or pip install nir") from None
    return nir


def _convention(name) -> Convention:
    if name not in CONVENTIONS:
        raise ConfigError(f"convention = {name!r}: expected one of {sorted(CONVENTIONS)}")
    return CONVENTIONS[name]


def _unit(name) -> str:
    if name not in MS_PER_UNIT:
        raise ConfigError(f"time_unit = {name!r}: expected one of {sorted(MS_PER_UNIT)}")
    return name


def _positive_dt(dt, what: str) -> float:
    if not isinstance(dt, (int, float)) or isinstance(dt, bool) or not math.isfinite(dt) or not dt > 0:
        raise ConfigError(f"{what} = {dt!r}: expected a finite number > 0")
    return float(dt)


# ============================================================================================ files
def read_nir(path):
    """The NIR graph in the HDF5 file ``path``; DataError naming the file when it is not one.

    Before anything is read, the file's arrays are sized (at most :data:`MAX_FILE_ARRAY_BYTES`
    together, so a small compressed file cannot make the reader allocate gigabytes)."""
    nir = nir_module()
    import h5py
    path = Path(path)
    if not path.is_file():
        raise DataError(f"NIR file {str(path)!r}: no such file")
    sizes = []
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: sizes.append(obj.size * obj.dtype.itemsize)
                         if isinstance(obj, h5py.Dataset) else None)
            if "node" not in f:
                raise DataError(f"NIR file {str(path)!r}: no 'node' group; not a NIR graph file")
    except OSError as e:
        raise DataError(f"NIR file {str(path)!r}: not an HDF5 file ({e})") from None
    if sum(sizes) > MAX_FILE_ARRAY_BYTES:
        raise DataError(f"NIR file {str(path)!r}: its arrays hold {sum(sizes)} bytes; at most "
                        f"{MAX_FILE_ARRAY_BYTES} are read")
    try:
        graph = nir.read(path, type_check=False)    # snnTorch's scalar-parameter nodes fail NIR's type check
    except (KeyError, ValueError, TypeError, AssertionError, AttributeError, IndexError, OSError) as e:
        raise DataError(f"NIR file {str(path)!r}: cannot read its graph ({type(e).__name__}: {e})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise DataError(f"NIR file {str(path)!r} holds a single {type(graph).__name__} node; expected a NIRGraph")
    return graph


def write_nir(graph, path) -> Path:
    """Write ``graph`` to ``path`` (HDF5, gzip); returns the path."""
    nir = nir_module()
    path = Path(path)
    try:
        nir.write(path, graph)
    except OSError as e:
        raise DataError(f"NIR file {str(path)!r}: cannot write it ({e.strerror or e})") from None
    return path


# ============================================================================================ import
@dataclass(frozen=True)
class Imported:
    """A network read from a graph: the :class:`Network`, each population's ``offsets`` (its
    spikes at step t are the graph's at step t - offset), the node each population came from,
    the populations the graph's Output nodes read, and the reading (convention, dt, time unit)."""

    network: Network
    offsets: dict[str, int]
    nodes: dict[str, str]
    outputs: tuple[str, ...]
    convention: str
    dt: float
    time_unit: str


@dataclass
class _Path:
    """Weights from a source or neuron node ``pre`` to a neuron node ``post``: ``w`` (n_post,
    n_pre) or None (identity), graph delays ``delta`` (n_pre, n_post) in steps."""

    pre: str
    post: str
    w: np.ndarray | None
    delta: np.ndarray
    via: str | None = None                    # the weight node
    meta: dict = field(default_factory=dict)  # its metadata
    order: int = 0


def _meta(node) -> dict:
    m = getattr(node, "metadata", None)
    return dict(m) if isinstance(m, dict) else {}


def _meta_int(meta: dict, key: str, default: int | None = None) -> int | None:
    """An integer spinnray wrote into metadata; ``default`` for anything else (foreign metadata is
    never trusted)."""
    v = meta.get(key)
    return int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else default


def _meta_mask(meta: dict, shape: tuple) -> np.ndarray | None:
    """The synapse mask spinnray wrote with a projection's weights, if it is one of ``shape``."""
    m = meta.get("spinnray_mask")
    return m if isinstance(m, np.ndarray) and m.dtype == bool and m.shape == shape else None


def _flatten(graph, nir, prefix: str = "") -> tuple[dict, list]:
    """Nodes and edges of ``graph`` with nested graphs inlined (``outer.inner`` names); a nested
    graph's Input and Output nodes become pass-through nodes."""
    nodes, edges = {}, []
    inner_io: dict[str, tuple[list[str], list[str]]] = {}
    for name, node in graph.nodes.items():
        full = prefix + str(name)
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = _flatten(node, nir, full + ".")
            ins = [n for n, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [n for n, v in node.nodes.items() if isinstance(v, nir.Output)]
            for n, v in sub_nodes.items():
                nodes[n] = (_PASS, v) if v[0] in (_SOURCE, _OUTPUT) else v
            edges += sub_edges
            inner_io[full] = ([f"{full}.{n}" for n in ins], [f"{full}.{n}" for n in outs])
        else:
            nodes[full] = (_kind(full, node, nir), node)

    def endpoint(name: str, into: bool) -> str:
        if name in inner_io:
            ends = inner_io[name][0 if into else 1]
            if len(ends) != 1:
                raise NetworkError(f"NIR edge to or from the nested graph {name!r}, which has {len(ends)} "
                                   f"{'Input' if into else 'Output'} nodes; expected one (or an edge naming one)")
            return ends[0]
        return name

    for a, b in graph.edges:
        edges.append((endpoint(prefix + str(a), False), endpoint(prefix + str(b), True)))
    return nodes, edges


def _kind(name: str, node, nir) -> str:
    t = type(node).__name__
    if isinstance(node, nir.Input):
        return _SOURCE
    if isinstance(node, nir.Output):
        return _OUTPUT
    if t in ("LIF", "CubaLIF", "LI", "CubaLI"):
        return _NEURON
    if t in ("Linear", "Affine"):
        return _WEIGHT
    if t == "Delay":
        return _DELAY
    raise NetworkError(f"NIR node {name!r} of type {t}: spinnray cannot represent it (it reads {_READ})")


def _without_pass_through(nodes: dict, edges: list) -> list:
    """Edges with the pass-through nodes (a nested graph's Input and Output) bridged."""
    edges = list(dict.fromkeys(edges))
    for p in [n for n, (k, _) in nodes.items() if k == _PASS]:
        ins = [a for a, b in edges if b == p]
        outs = [b for a, b in edges if a == p]
        edges = [e for e in edges if p not in e] + [(a, b) for a in ins for b in outs]
        del nodes[p]
    for a, b in edges:
        for end in (a, b):
            if end not in nodes:
                raise NetworkError(f"NIR edge ({a!r}, {b!r}) names the node {end!r}, which the graph does not have")
    return list(dict.fromkeys(edges))


def _shape(node, kind: str, name: str) -> int | None:
    """Neurons or channels of a node, or None where it is only known from its neighbours (snnTorch
    writes 0-d parameters)."""
    if kind in (_SOURCE, _OUTPUT):
        types = node.input_type if kind == _SOURCE else node.output_type
        shape = next(iter(types.values()), None) if isinstance(types, dict) else None
        if shape is None:
            return None
        shape = [int(s) for s in np.ravel(shape)]
        if not shape:
            return None
        if any(s != 1 for s in shape[:-1]) or shape[-1] < 1:
            raise NetworkError(f"NIR node {name!r} ({type(node).__name__}) has shape {shape}; spinnray's "
                               "populations are one-dimensional")
        return shape[-1]
    if kind == _WEIGHT:
        return None
    attrs = ("delay",) if kind == _DELAY else _NEURON_PARAMS
    shapes = {np.shape(getattr(node, a)) for a in attrs if getattr(node, a, None) is not None}
    if any(len(s) > 1 for s in shapes) or len({s for s in shapes if s}) > 1:
        raise NetworkError(f"NIR node {name!r} ({type(node).__name__}) has parameters of shapes {sorted(shapes)}; "
                           "expected one-dimensional parameters of one length (or scalars)")
    sized = [s[0] for s in shapes if s]
    return int(sized[0]) if sized else None


def _weight(node, name: str) -> np.ndarray:
    w = np.asarray(node.weight)
    if w.ndim != 2 or not np.issubdtype(w.dtype, np.number) or not np.all(np.isfinite(w)):
        raise NetworkError(f"NIR node {name!r} ({type(node).__name__}): weight of shape {w.shape} and dtype "
                           f"{w.dtype}; expected a finite 2-D (out, in) matrix")
    if type(node).__name__ == "Affine":
        b = np.asarray(node.bias)
        if not np.issubdtype(b.dtype, np.number) or np.any(b != 0):
            raise NetworkError(f"NIR node {name!r} (Affine) has a non-zero bias; spinnray's neurons take no bias "
                               "current (write a Linear, or a zero bias)")
    return w.astype(np.float64)


def _sizes(nodes: dict, edges: list) -> dict[str, int]:
    """The size of every node, its own or its neighbours' (weights: their two sides)."""
    size = {n: _shape(v, k, n) for n, (k, v) in nodes.items()}
    win = {n: _weight(v, n).shape[1] for n, (k, v) in nodes.items() if k == _WEIGHT}
    wout = {n: _weight(v, n).shape[0] for n, (k, v) in nodes.items() if k == _WEIGHT}

    def out_size(n):
        return wout[n] if n in wout else size.get(n)

    def in_size(n):
        return win[n] if n in win else size.get(n)

    changed = True
    while changed:
        changed = False
        for a, b in edges:
            if a not in wout and size[a] is None and in_size(b) is not None:
                size[a], changed = in_size(b), True
            if b not in win and size[b] is None and out_size(a) is not None:
                size[b], changed = out_size(a), True
    for a, b in edges:
        if out_size(a) is not None and in_size(b) is not None and out_size(a) != in_size(b):
            raise NetworkError(f"NIR edge ({a!r}, {b!r}): {a!r} gives {out_size(a)} values and {b!r} takes "
                               f"{in_size(b)}")
    unknown = [n for n in size if n not in win and size[n] is None]
    if unknown:
        raise NetworkError(f"NIR node {unknown[0]!r}: its size is given neither by its parameters nor by its neighbours")
    return {**{n: s for n, s in size.items() if s is not None}, **{n: wout[n] for n in wout}}


def _steps(name: str, delay: np.ndarray, dt: float) -> np.ndarray:
    d = np.asarray(delay, dtype=np.float64) / dt
    r = np.rint(d)
    if not np.all(np.isfinite(d)) or np.any(r < 0) or np.any(np.abs(d - r) > 1e-6 * np.maximum(1.0, r)):
        bad = d.ravel()[0] if d.size else d
        raise NetworkError(f"NIR node {name!r} (Delay): delays of {np.asarray(delay).ravel()[:3]}... are not whole "
                           f"steps of dt = {dt} (e.g. {bad} steps); expected multiples of dt >= 0")
    return r.astype(np.int64)


def _paths(nodes: dict, edges: list, size: dict, dt: float) -> tuple[list[_Path], set[str]]:
    """Every weight path between source/neuron nodes, and the nodes the Output nodes read."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    paths, outputs = [], set()

    def walk(pre, at, w, via, meta, d_pre, d_post, seen):
        for nxt in succ[at]:
            kind, node = nodes[nxt]
            if kind in (_NEURON, _OUTPUT):
                if kind == _OUTPUT:
                    if w is not None or np.any(d_pre) or np.any(d_post):
                        raise NetworkError(f"NIR node {nxt!r} (Output) reads {pre!r} through weights or delays; "
                                           "spinnray reads populations, so an Output must follow a neuron or Input node")
                    outputs.add(pre)
                    continue
                if w is None and size[pre] != size[nxt]:
                    raise NetworkError(f"NIR edge {pre!r} -> {nxt!r} has no weights between {size[pre]} and "
                                       f"{size[nxt]} neurons")
                if w is None:       # identity: channel i to neuron i, delayed as channel i
                    delta = np.broadcast_to(d_pre[:, None], (size[pre], size[pre])).copy()
                else:               # delays before the weights are the pre channels', after them the post's
                    delta = d_pre[:, None] + d_post[None, :]
                paths.append(_Path(pre, nxt, w, delta, via, meta, len(paths)))
            elif nxt in seen:
                raise NetworkError(f"NIR node {nxt!r} is on a cycle of weight and delay nodes with no neuron on it")
            elif kind == _WEIGHT:
                if w is not None:
                    raise NetworkError(f"NIR nodes {via!r} and {nxt!r}: two weight nodes in a row between {pre!r} "
                                       "and a neuron node; a spinnray projection holds one matrix")
                m = _weight(node, nxt)
                walk(pre, nxt, m, nxt, _meta(node), d_pre, np.zeros(m.shape[0], np.int64), seen | {nxt})
            else:                                               # Delay
                steps = _steps(nxt, node.delay, dt)
                if w is None:
                    walk(pre, nxt, w, via, meta, d_pre + steps, d_post, seen | {nxt})
                else:
                    walk(pre, nxt, w, via, meta, d_pre, d_post + steps, seen | {nxt})

    for name, (kind, _) in nodes.items():
        if kind in (_SOURCE, _NEURON):
            walk(name, name, None, None, {}, np.zeros(size[name], np.int64), np.zeros(0, np.int64), {name})
    return paths, outputs


def _bfs(sources, edges) -> dict[str, int]:
    dist = {s: 0 for s in sources}
    q = deque(sources)
    while q:
        u = q.popleft()
        for a, b in edges:
            if a == u and b not in dist:
                dist[b] = dist[u] + 1
                q.append(b)
    return dist


def _reaches(edges, start, goal) -> bool:
    return goal in _bfs([start], edges)


def _recurrent(pops: list[str], sources: list[str], edges: list[tuple[str, str]], what: str) -> set:
    """The recurrent edges of the population graph ``edges``: those that close a cycle and lead
    no further from the inputs (breadth-first distance) -- the edges a time-stepped executor
    runs one step late."""
    dist = _bfs(sources, edges)
    unreached = [p for p in pops if p not in dist]
    if unreached:
        raise NetworkError(f"{what} {unreached[0]!r} is not reached from any input; spinnray cannot place it in time")
    return {(a, b) for a, b in edges if a == b or (dist[b] <= dist[a] and _reaches(edges, b, a))}


def _longest(pops: list[str], sources: list[str], analog: set[str], edges: list[tuple[str, str]], back: set,
             lag: dict[str, int]) -> dict[str, int]:
    """Offsets for a graph that records none: the longest path of the feed-forward edges from an
    input, each counting ``1 - lag[post]`` (``-lag[post]`` from an analog input)."""
    fwd = [(a, b) for a, b in edges if (a, b) not in back]
    k = {s: 0 for s in sources}
    indeg = {p: sum(1 for a, b in fwd if b == p) for p in pops}
    ready = deque(p for p in pops if indeg[p] == 0)
    while ready:
        u = ready.popleft()
        for a, b in fwd:
            if a == u:
                step = (0 if a in analog else 1) - lag[b]
                k[b] = max(k.get(b, k[a] + step), k[a] + step)
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
    return {p: k.get(p, 0) for p in pops}


def _widest(pops: list[str], sources: list[str], bound: dict[tuple[str, str], int]) -> dict[str, int]:
    """Offsets for export: the largest with ``k[post] - k[pre] <= bound[edge]`` for every edge and
    0 at the inputs (shortest paths, Bellman-Ford), so that the graph needs as few Delay nodes
    as the delays allow."""
    inf = float("inf")
    k = {p: (0 if p in sources else inf) for p in pops}
    for _ in range(len(pops) + 1):
        changed = None
        for (a, b), c in bound.items():
            if k[a] + c < k[b]:
                k[b], changed = k[a] + c, (a, b)
        if changed is None:
            return {p: int(v) for p, v in k.items()}
    a, b = changed
    raise NetworkError(f"the cycle through the projection {a!r} -> {b!r} is faster in spinnray than the convention's "
                       "time-stepped reading allows (a recurrent edge takes one step there, and the previous-current "
                       "lag another); NIR cannot express it")


def _one(name: str, node, param: str, values) -> float:
    v = np.unique(np.asarray(values, dtype=np.float64))
    if v.size != 1:
        raise NetworkError(f"NIR node {name!r} ({type(node).__name__}): {param} takes {v.size} values across its "
                           f"neurons ({v[:3]}...); a spinnray population has one")
    return float(v[0])


def _param(name: str, node, attr: str, n: int, default=None) -> np.ndarray:
    value = getattr(node, attr, default)
    if value is None:
        value = default
    a = np.asarray(value, dtype=np.float64) if value is not None else None
    if a is None or a.ndim > 1 or (a.ndim == 1 and a.size != n) or not np.all(np.isfinite(a)):
        raise NetworkError(f"NIR node {name!r} ({type(node).__name__}): {attr} of shape {np.shape(value)}; "
                           f"expected finite numbers, one or {n}")
    return np.broadcast_to(a, (n,)).astype(np.float64)


def _tau_steps(name: str, node, param: str, tau: float, conv: Convention, dt: float, unit: str) -> float:
    """spinnray's time constant in ms for the graph's ``tau`` read by ``conv`` at step ``dt``."""
    if not tau > 0:
        raise NetworkError(f"NIR node {name!r} ({type(node).__name__}): {param} = {tau}; expected > 0")
    if conv.integrator == "exp":
        return tau * MS_PER_UNIT[unit]
    decay = 1.0 - dt / tau
    if decay <= 0.0:
        if param == "tau_syn" and decay == 0.0:
            return 0.0                          # the current follows the input: spinnray's tau_syn_ms = 0
        raise NetworkError(f"NIR node {name!r} ({type(node).__name__}): {param} = {tau} with dt = {dt}: the Euler "
                           f"decay 1 - dt/{param} = {decay} is not in (0, 1); spinnray's decays are exp(-dt/tau)")
    return -dt * MS_PER_UNIT[unit] / math.log(decay)


def _neuron(name: str, node, n: int, conv: Convention, dt: float, unit: str, reset: str | None,
            unit_threshold: bool):
    """(spinnray model, per-neuron weight factor (n,), lag) of a neuron node (module docstring)."""
    t = type(node).__name__
    r = _param(name, node, "r", n)
    v_leak = _param(name, node, "v_leak", n)
    if np.any(v_leak != 0):
        raise NetworkError(f"NIR node {name!r} ({t}): v_leak = {v_leak[v_leak != 0][0]}; spinnray's neurons rest at 0 "
                           "(expected v_leak = 0)")
    if t in _CUBA:
        tau_syn = _one(name, node, "tau_syn", _param(name, node, "tau_syn", n))
        tau_mem = _one(name, node, "tau_mem", _param(name, node, "tau_mem", n))
        w_in = _param(name, node, "w_in", n, 1.0)
        jump = w_in / tau_syn if conv.integrator == "exp" else w_in * (dt / tau_syn)
        factor = jump * r
        syn_ms = _tau_steps(name, node, "tau_syn", tau_syn, conv, dt, unit)
    else:
        tau_mem = _one(name, node, "tau", _param(name, node, "tau", n))
        factor, syn_ms = r, 0.0
    mem_ms = _tau_steps(name, node, "tau_mem" if t in _CUBA else "tau", tau_mem, conv, dt, unit)
    lag = conv.lag if t in _CUBA else 0
    if t not in _SPIKING:
        return LI(tau_mem_ms=mem_ms, tau_syn_ms=syn_ms), factor, lag
    theta = _one(name, node, "v_threshold", _param(name, node, "v_threshold", n))
    v_reset = _one(name, node, "v_reset", _param(name, node, "v_reset", n, 0.0))
    how = reset or conv.reset or str(_meta(node).get("spinnray_reset", "value"))
    if how not in ("value", "subtract"):
        raise NetworkError(f"NIR node {name!r}: reset {how!r} in its metadata; expected 'value' or 'subtract'")
    if not conv.v_reset and how == "value" and v_reset != 0:
        raise NetworkError(f"NIR node {name!r} ({t}): v_reset = {v_reset}; the {conv.name} convention's reader "
                           "resets to 0 whatever v_reset says (convention 'spinnray' honours it)")
    if unit_threshold and theta > 0:
        factor, v_reset, theta = factor / theta, v_reset / theta, 1.0
    model = LIF(tau_mem_ms=mem_ms, tau_syn_ms=syn_ms, v_th=theta, v_reset=v_reset if how == "value" else 0.0,
                reset="zero" if how == "value" else "subtract")
    return model, factor, lag


def _merged(group: list[_Path], weights: list[np.ndarray], delays: list[np.ndarray]):
    """One projection for paths that spinnray's export split by delay (disjoint metadata masks of
    one projection), else None."""
    masks = [_meta_mask(p.meta, w.shape) for p, w in zip(group, weights)]
    names = {str(p.meta.get("spinnray_projection")) for p in group}
    if len(group) < 2 or len(names) != 1 or any(m is None for m in masks) or np.any(np.sum(masks, axis=0) > 1):
        return None
    mask = np.any(masks, axis=0)
    w = np.sum([np.where(m, w, 0.0) for m, w in zip(masks, weights)], axis=0)
    d = np.full(mask.shape, min(int(x.min()) for x in delays), np.int64)
    for m, x in zip(masks, delays):
        d[m] = x[m]
    return w, d, (None if mask.all() else mask)


def graph_time_unit(graph, convention: str, time_unit: str | None = None) -> str:
    """The unit of ``graph``'s time constants: ``time_unit``, else what the graph records, else the
    convention's."""
    return _unit(time_unit or str(_meta(graph).get("spinnray_time_unit", _convention(convention).time_unit)))


def from_nir(graph, *, convention: str = "spinnray", dt: float | None = None, time_unit: str | None = None,
             reset: str | None = None, input_kind: str | None = None, unit_threshold: bool = False) -> Imported:
    """The spinnray :class:`Network` of a NIR graph read under ``convention`` at step ``dt``.

    ``dt`` and the graph's time constants are in ``time_unit`` (None: the unit the graph records,
    else the convention's: ``ms`` for spinnray and nir, ``s`` for snntorch and norse); ``dt``
    None: the step the graph records (graphs spinnray wrote), else the convention's default.
    ``reset``: ``value`` (to v_reset) or ``subtract`` (v_threshold) for every spiking node; None:
    the convention's.  ``input_kind``: ``spikes`` (a :class:`SpikeSource` per Input node) or
    ``analog`` (an :class:`AnalogSource`); None: what the graph records, else spikes.
    ``unit_threshold``: scale each spiking population's potential so its threshold is 1 (weights
    and v_reset divided by v_threshold; the spikes are unchanged; EventProp needs it).
    Refuses, with a :class:`NetworkError` naming the node and its type, what spinnray cannot
    represent.
    """
    nir = nir_module()
    conv = _convention(convention)
    meta = _meta(graph)
    unit = graph_time_unit(graph, convention, time_unit)
    if reset not in (None, "value", "subtract"):
        raise ConfigError(f"reset = {reset!r}: expected 'value', 'subtract' or None (the convention's)")
    if input_kind not in (None, "spikes", "analog"):
        raise ConfigError(f"input_kind = {input_kind!r}: expected 'spikes', 'analog' or None")
    dt = _positive_dt(_step(meta, conv, unit) if dt is None else dt, "dt")
    written = meta.get("spinnray_convention")
    if written is not None and str(written) != conv.name:
        log.warning("NIR graph written for convention %r, read as %r", str(written), conv.name)

    nodes, edges = _flatten(graph, nir)
    edges = _without_pass_through(nodes, edges)
    size = _sizes(nodes, edges)
    paths, outputs = _paths(nodes, edges, size, dt)
    pops = [n for n, (k, _) in nodes.items() if k in (_SOURCE, _NEURON)]
    sources = [n for n in pops if nodes[n][0] == _SOURCE]
    if not sources:
        raise NetworkError("the NIR graph has no Input node; spinnray feeds a network through its inputs")
    recorded_kind = {s: str(_meta(nodes[s][1]).get("spinnray_input", "spikes")) for s in sources}
    analog = {s for s in sources if (input_kind or recorded_kind[s]) == "analog"}
    models, factors, lag = {}, {}, {}
    for n in pops:
        if n in sources:
            models[n], lag[n] = (AnalogSource() if n in analog else SpikeSource()), 0
        else:
            models[n], factors[n], lag[n] = _neuron(n, nodes[n][1], size[n], conv, dt, unit, reset, unit_threshold)
    pop_edges = list(dict.fromkeys((p.pre, p.post) for p in paths))
    back = _recurrent(pops, sources, pop_edges, "NIR node")
    recorded = {n: _meta_int(meta, f"spinnray_offset.{n}") for n in pops}
    if written == conv.name and all(v is not None for v in recorded.values()) \
            and all((s in analog) == (recorded_kind[s] == "analog") for s in sources):
        k = recorded                    # spinnray wrote the graph for this reading: its own offsets
    else:
        k = _longest(pops, sources, analog, pop_edges, back, lag)

    names = {n: _population_name(n) for n in pops}
    if len(set(names.values())) != len(names):      # two nodes sanitized alike: number them
        names = {n: f"p{i}_{names[n]}" for i, n in enumerate(pops)}
    dist = _bfs(sources, pop_edges)
    net = Network(dt_ms=dt * MS_PER_UNIT[unit])
    for n in sorted(pops, key=lambda n: (_meta_int(_meta(nodes[n][1]), "spinnray_index", 1 << 30), dist[n], n)):
        net.population(names[n], size[n], models[n])
    _connect(net, names, paths, factors, lag, back, k, analog)
    return Imported(net, {names[n]: int(k[n]) for n in pops}, {n: names[n] for n in pops},
                    tuple(names[n] for n in pops if n in outputs), conv.name, dt, unit)


def _step(meta: dict, conv: Convention, unit: str) -> float:
    """The step to read a graph at when none is given: the graph's own, else the convention's."""
    recorded = meta.get("spinnray_dt")
    if isinstance(recorded, (int, float, np.integer, np.floating)) and not isinstance(recorded, bool):
        return float(recorded) * MS_PER_UNIT[_unit(str(meta.get("spinnray_time_unit", unit)))] / MS_PER_UNIT[unit]
    if conv.dt is not None:
        return conv.dt * MS_PER_UNIT[conv.time_unit] / MS_PER_UNIT[unit]
    raise ConfigError(f"dt: the graph records no time step and convention {conv.name!r} has no default; give the "
                      f"step in {unit}")


def _connect(net: Network, names: dict, paths: list[_Path], factors: dict, lag: dict, back: set, k: dict,
             analog: set) -> None:
    """The projections of ``paths``: weights times the post neurons' factors, delays from the
    graph's delays, the lag, recurrence and offsets (module docstring); the paths spinnray's export
    split by delay merged back into one projection; in the order spinnray wrote them, else by
    their populations' order."""
    groups: dict[tuple[str, str], list] = {}
    for p in paths:
        w = (np.eye(len(p.delta)) if p.w is None else p.w.T) * factors[p.post][None, :]      # (n_pre, n_post)
        d = p.delta + lag[p.post] + ((p.pre, p.post) in back) + k[p.post] - k[p.pre]
        where = f"NIR path {p.pre!r} -> {p.via + ' -> ' if p.via else ''}{p.post!r}"
        if p.pre in analog:
            if np.any(d != 0):
                raise NetworkError(f"{where}: analog input reaches {p.post!r} {int(d.max())} step(s) late in the "
                                   "graph's timing; spinnray's analog input enters its targets in the same step")
            d = np.ones_like(d)
        elif d.min() < 1:
            raise NetworkError(f"{where} would need a delay of {int(d.min())} steps: the graph's cycle through "
                               f"{p.pre!r} and {p.post!r} is faster than spinnray's projections (one step each)")
        elif d.max() > MAX_DELAY_STEPS:
            raise NetworkError(f"{where} needs a delay of {int(d.max())} steps; spinnray's delays are at most "
                               f"{MAX_DELAY_STEPS}")
        groups.setdefault((p.pre, p.post), []).append((p, w, d))
    projections = []
    for group in groups.values():
        merged = _merged([g[0] for g in group], [g[1] for g in group], [g[2] for g in group])
        if merged is not None:
            projections.append((min((g[0] for g in group), key=lambda p: p.order), *merged))
        else:
            projections += [(p, w, d, _meta_mask(p.meta, w.shape)) for p, w, d in group]
    rank = {p.name: p.index for p in net.populations.values()}
    projections.sort(key=lambda t: (_meta_int(t[0].meta, "spinnray_index", 1 << 30), rank[names[t[0].pre]],
                                    rank[names[t[0].post]], t[0].order))
    for p, w, d, m in projections:
        name = p.meta.get("spinnray_projection")
        name = name if isinstance(name, str) and not any(q.name == name for q in net.projections) else None
        scalar = np.all(d == d.flat[0])
        net.connect(names[p.pre], names[p.post], w, delays=int(d.flat[0]) if scalar else d, mask=m, name=name)


def _population_name(node: str) -> str:
    """A population name for a node: ``lif1.lif`` -> ``lif1_lif``, ``1`` -> ``n1``."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in node)
    return name if name.isidentifier() else f"n{name}"


# ============================================================================================ export
def to_nir(network: Network, *, convention: str = "spinnray", dt: float | None = None,
           time_unit: str | None = None):
    """The NIR graph of ``network``, written so that ``convention``'s reader at step ``dt`` (in
    ``time_unit``) computes spinnray's spikes (module docstring).

    ``spinnray``: time constants as they are, ``r = 1``, ``w_in = tau_syn`` (a spike of weight W
    makes I jump by W), ``dt`` the network's own step.  ``snntorch``: ``tau = dt / (1 - decay)``
    with ``r = tau_mem/dt``, ``w_in = tau_syn/dt`` and weights times ``1 - exp(-dt/tau_mem)`` (what
    snnTorch's exporter writes), dt 1e-4 s by default.  ``norse`` and ``nir``: ``tau = dt / (1 -
    decay)``, ``r = 1``, ``w_in = tau_syn/dt``.  Spiking populations must reset as the convention
    reads (``spinnray`` writes either, in node metadata).  Graph metadata records the
    convention, dt, time unit and every population's offset.
    """
    nir = nir_module()
    conv = _convention(convention)
    unit = _unit(time_unit or conv.time_unit)
    own_dt = network.dt_ms / MS_PER_UNIT[unit]
    if dt is None:
        dt = own_dt if conv.dt is None or conv.integrator == "exp" else \
            conv.dt * MS_PER_UNIT[conv.time_unit] / MS_PER_UNIT[unit]
    dt = _positive_dt(dt, "dt")
    if conv.integrator == "exp" and not math.isclose(dt, own_dt, rel_tol=1e-12):
        raise ConfigError(f"dt = {dt} {unit} with convention 'spinnray': it writes the network's own time constants, "
                          f"read at its own step dt_ms = {network.dt_ms} ({own_dt} {unit}); leave dt unset")
    pops = list(network.populations.values())
    sources = [p.name for p in pops if isinstance(p.model, (SpikeSource, AnalogSource))]
    analog = {p.name for p in pops if isinstance(p.model, AnalogSource)}
    nodes, lag = {}, {}
    for p in pops:
        nodes[p.name], lag[p.name] = _node(p, network.dt_ms, conv, dt, unit, nir)
    edges = list(dict.fromkeys((q.pre.name, q.post.name) for q in network.projections))
    back = _recurrent([p.name for p in pops], sources, edges, "population")
    bound: dict[tuple[str, str], int] = {}
    for q in network.projections:
        e = (q.pre.name, q.post.name)
        if q.pre.name in analog:
            c = -lag[q.post.name]
        else:
            d = np.asarray(q.delays) if q.mask is None or np.ndim(q.delays) == 0 or not q.mask.any() \
                else np.asarray(q.delays)[q.mask]
            c = int(d.min()) - lag[q.post.name] - (e in back)
        bound[e] = min(bound.get(e, c), c)
    k = _widest([p.name for p in pops], sources, bound)
    graph_edges = []
    taken = set(nodes)

    def fresh(base: str) -> str:
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    for q in network.projections:
        pre, post = q.pre.name, q.post.name
        d = np.broadcast_to(np.asarray(q.delays, np.int64), q.weights.shape)
        if pre in analog:
            delta = np.zeros_like(d) - lag[post] - (k[post] - k[pre])
        else:
            delta = d - lag[post] - ((pre, post) in back) - (k[post] - k[pre])
        present = np.ones(q.weights.shape, bool) if q.mask is None or not q.mask.any() else q.mask
        shown = delta[present]
        if pre in analog and shown.max() > 0:
            raise NetworkError(f"projection {q.name!r} from the analog input {pre!r} would need a Delay of "
                               f"{int(shown.max())} step(s) in the graph; spinnray's analog input enters in the same "
                               "step and cannot be delayed")
        w_file = q.weights * _export_gain(q.post, network.dt_ms, conv)[None, :]
        values = np.unique(shown)
        for value in values:
            sel = present & (delta == value) if len(values) > 1 else present
            base = f"{pre}_to_{post}" + (f"_d{int(value)}" if len(values) > 1 else "")
            lin = fresh(base)
            meta = {"spinnray_projection": q.name, "spinnray_index": q.index}
            if q.mask is not None or len(values) > 1:
                meta["spinnray_mask"] = sel if q.mask is None else sel & q.mask
            nodes[lin] = nir.Linear(weight=np.where(sel, w_file, 0.0).T.copy(), metadata=meta)
            if value > 0:
                dn = fresh(f"{lin}_delay")
                nodes[dn] = nir.Delay(delay=np.full(q.post.size, float(value) * dt))
                graph_edges += [(pre, lin), (lin, dn), (dn, post)]
            else:
                graph_edges += [(pre, lin), (lin, post)]
    for p in pops:
        if not network.outgoing(p) and p.name not in sources:
            out = fresh(f"{p.name}_out")
            nodes[out] = nir.Output(output_type={"output": np.array([p.size])})
            graph_edges.append((p.name, out))
    meta = {"spinnray_convention": conv.name, "spinnray_dt": dt, "spinnray_time_unit": unit,
            **{f"spinnray_offset.{p.name}": int(k[p.name]) for p in pops}}
    return nir.NIRGraph(nodes=nodes, edges=graph_edges, metadata=meta, type_check=False)


def _export_gain(post, dt_ms: float, conv: Convention) -> np.ndarray:
    """Per-neuron factor of the written weights into ``post``: ``1 - b`` where the convention's
    reader takes ``r = tau_mem/dt`` (g_V = 1), else 1."""
    n = post.size
    if conv.export_r != "tau":
        return np.ones(n)
    b = post.model.consts(dt_ms)["b"]
    return np.full(n, 1.0 - b)


def _node(pop, dt_ms: float, conv: Convention, dt: float, unit: str, nir):
    """(NIR node, lag) of a population."""
    n, m = pop.size, pop.model
    meta = {"spinnray_index": pop.index}
    if isinstance(m, (SpikeSource, AnalogSource)):
        meta["spinnray_input"] = "analog" if isinstance(m, AnalogSource) else "spikes"
        return nir.Input(input_type={"input": np.array([n])}, metadata=meta), 0
    if not isinstance(m, (LIF, LI)):
        raise NetworkError(f"population {pop.name!r} is {type(m).__name__}: no NIR node describes it (spinnray writes "
                           "LIF as CubaLIF or LIF, LI as CubaLI or LI, sources as Input)")
    full = lambda v: np.full(n, float(v))  # noqa: E731
    c = m.consts(dt_ms)

    def tau(name: str, tau_ms: float, decay: float) -> float:
        if conv.integrator == "exp":
            return tau_ms / MS_PER_UNIT[unit]
        if decay <= 0.0:
            raise NetworkError(f"population {pop.name!r}: {name} = {tau_ms} ms has decay {decay} per step; the "
                               f"{conv.name} convention's Euler decay 1 - dt/tau cannot be {decay}")
        return dt / (1.0 - decay)

    syn = m.tau_syn_ms > 0
    t_mem = tau("tau_mem_ms", m.tau_mem_ms, c["b"])
    r = full(1.0 if conv.export_r == "one" else t_mem / dt)
    params = dict(r=r, v_leak=full(0.0))
    if syn:
        t_syn = tau("tau_syn_ms", m.tau_syn_ms, c["a"])
        params.update(tau_syn=full(t_syn), tau_mem=full(t_mem),
                      w_in=full(t_syn if conv.integrator == "exp" else t_syn / dt))
    else:
        params.update(tau=full(t_mem))
    lag = conv.lag if syn else 0
    if isinstance(m, LI):
        return (nir.CubaLI(**params, metadata=meta) if syn else nir.LI(**params, metadata=meta)), lag
    how = "value" if m.reset == "zero" else "subtract"
    if conv.reset is not None and how != conv.reset:
        raise NetworkError(f"population {pop.name!r} resets {'to v_reset' if how == 'value' else 'by subtraction'}; "
                           f"the {conv.name} convention's reader resets "
                           f"{'to v_reset' if conv.reset == 'value' else 'by subtraction'} (convention 'spinnray' "
                           "writes either)")
    if not conv.v_reset and how == "value" and m.v_reset != 0:
        raise NetworkError(f"population {pop.name!r}: v_reset = {m.v_reset}; the {conv.name} convention's reader "
                           "resets to 0 whatever v_reset says")
    meta["spinnray_reset"] = how
    params.update(v_threshold=full(m.v_th), v_reset=full(m.v_reset if how == "value" else 0.0))
    return (nir.CubaLIF(**params, metadata=meta) if syn else nir.LIF(**params, metadata=meta)), lag
