"""Counters of every packet, and the summary a run writes to ``metrics.json``.

Counters live on the cores and routers that do the work; the summary is
built from them, never re-derived.  ``SCHEMA_VERSION`` changes whenever a
key of ``metrics.json`` changes meaning.  The users' reference of every key is
``docs/metrics.md`` (``tests/unit/experiments/test_metrics_doc.py`` checks it
against the keys that runs write).

The files of a run directory (schema version 1)
===============================================

``metrics.json`` -- one JSON object.  Units are in the key names or below;
"per sample" means per forward sample unless said otherwise.

Every run:

=====================================  =====================================================
``schema_version``                      int, this layout (``SCHEMA_VERSION``)
``scenario``, ``kind``, ``backend``     str: scenario name, ``forward`` | ``eventprop`` | ...,
                                        ``local`` | ``ray``
``seed``, ``cores``, ``replicas``       int: master seed, emulated cores (PEs), data-parallel copies
``steps``, ``epochs``, ``batch_size``   int: steps per sample, passes, samples per lockstep run
``wall_s``, ``setup_s``                 float s: whole run; mapping and actor start
``traffic.spike_events``                int: spike events delivered by the routers (per destination core)
``traffic.error_events``                int: error events delivered (EventProp errors, e-prop learning signals)
``traffic.spike_events_sent``           int: spike events the cores emitted (once per event)
``traffic.error_events_sent``           int: error events the cores emitted
``traffic.packets``, ``traffic.bytes``  int: packets / bytes leaving the routers
``traffic.dense_equivalent_events``     int: steps x samples x neurons of every sending population
``traffic.sparsity``                    float: ``spike_events_sent / dense_equivalent_events``
``traffic.dropped``, ``rejected``       int: unroutable events; frames failing strict decode
``traffic.max_events_per_step``         int: most events one core emitted in one step
``traffic.by_link_class``               {class: {"events": int, "bytes": int}} for every class of
                                        :data:`LINK_CLASSES`: events delivered (per destination
                                        core) and their bytes, by how far they travelled
``traffic.inter_node``                  {"packets", "events", "bytes"}: copies the routers sent to
                                        routers on other nodes (one per source frame and destination
                                        router: the inter-node wire); all 0 on one node
``traffic.inter_chip``                  {"packets", "events", "bytes"}: copies the routers sent to
                                        routers of other chips on their own node (one router per
                                        chip, ``cluster.router_per = chip``); all 0 with one router
                                        per node
``memory.per_core_bytes``               list[int]: bytes each core holds, in core order
``memory.per_core_max_bytes``           int: the largest of them; ``memory.total_bytes`` their sum
``memory.budget_bytes_per_core``        int: ``machine.sram_per_pe_bytes``
``memory.max_utilisation``              float: ``per_core_max_bytes / budget_bytes_per_core``
``memory.by_category_bytes``            {category: int}: bytes summed over cores (weights, delays,
                                        neuron_state, spike_history, key_table, input_spikes, and a
                                        learning rule's own: gradients, optimizer, adjoint, ...)
``mapping.cores``, ``chips_used``       int
``mapping.key_bits``                    int: neuron-index bits of a key
``mapping.routing_entries``             int: entries of the whole routing table
``mapping.routing_entries_per_chip``    {chip id as str: int}: entries each chip's router holds
                                        (capacity: ``machine.routing_entries_per_chip``)
``mapping.replicas``, ``mapping.slices``  int; {population: [[lo, hi], ...]} of replica 0
``mapping.nodes``                       int: cluster nodes the chips are spread over
``mapping.node_of_chip``                {chip id as str: node index}
``mapping.cores_per_node``              list[int]: cores on each node, by node index
``mapping.router_per``                  str: what one router serves, ``chip`` or ``node``
``mapping.routers``                     int: routers of the machine (chips in use, or nodes)
``mapping.node_of_router``              list[int]: the node index of each router
``mapping.routing_entries_per_router``  {router as str: int}: entries of each router's table
``mapping.routing_entries_per_node``    {node as str: int}: entries of the router tables of each node,
                                        summed
``mapping.ray_node_ids``                list[str] (ray backend only): the Ray node id of each node index
``mapping.populations``                 {population: {"model": str, "neurons": int, "cores": int (per
                                        replica; 0 = written by the host), "spiking": bool, "sends_to":
                                        [population, ...]}}: the network as placed
``machine``                             the :class:`~spinnray.config.MachineConfig` as a mapping
=====================================  =====================================================

Forward runs add ``samples`` (int), ``exchange_interval`` (int K), ``schedule``
(``lockstep`` or ``layered``), ``run_s``
(float s inside ``Simulator.run``), ``ms_per_step`` (ms per lockstep step),
``realtime_factor`` (emulated time / ``run_s``) and ``rates_hz``
({population: mean Hz}).

Training runs add ``test_accuracy``, ``best_test_accuracy`` (fractions),
EventProp's ``val_selected_epoch``, ``val_accuracy``, ``val_selected_test_accuracy``
and ``val_selected_test_loss`` (the epoch of best validation accuracy and its test
figures; with ``data.val_size > 0``), ``schedule``,
``test_loss``, ``train_s``, ``train_samples_per_s``, ``peak_rss_bytes``, the
rule's own counters (EventProp: ``guarded_spikes``, ``weight_bumps``),
``history`` (a list, one mapping per epoch: ``epoch``, ``train_loss``,
``train_accuracy``, ``test_loss``, ``test_accuracy``, ``lr``) and ``layers``:
{population: {...}} with, per population,

* ``dense_per_sample`` -- T x neurons: what a dense exchange of one value per
  neuron and step would send for one sample;
* ``spike_events_per_sample`` -- forward spike events *sent* per sample;
  ``spike_sparsity`` = ``spike_events_per_sample / dense_per_sample``;
* ``error_events_sent_per_sample`` -- error events this population's cores
  sent, per training sample;
* ``error_events_about_per_sample`` -- backward phase: error events sent
  *about* this population's neurons (by the cores above it and, EventProp on a
  recurrent population, by its own cores), per training sample;
* ``learning_signals_per_sample`` -- e-prop: learning-signal error events
  this population's cores received, per training sample.

A report (:mod:`spinnray.report.run_report`) shows each phase present as events per
sample against ``dense_per_sample``.

``cores.json`` -- a list, one object per core: ``core_id``, ``chip``, ``pe``,
``population``, ``slice`` [lo, hi], ``node`` (int, the node index the core's
chip is placed on; reports of older runs may lack it: the one node),
``ray_node_id`` (ray backend: the Ray node the actor runs on), ``counters``
(:class:`CoreCounters`), ``memory`` ({category: bytes} of the arrays the core
holds), ``process`` (ray backend: the core actor's process, ``{"pid", "rss_bytes",
"uss_bytes"}``, :func:`spinnray.backends.base.process_memory`; None on ``local``, whose
cores share the driver's process) and ``reasons`` (first notes of dropped or rejected traffic).

``routers.json`` -- a list, one object per router (one per chip, or per node
with ``cluster.router_per = node``): ``router_id`` (the router index),
``node`` (its node index), ``chips`` (the chips it serves), ``ray_node_id``
(ray backend), ``counters`` (:class:`RouterCounters`; ``links`` maps
``"src->dst"`` core ids to ``[events, bytes]`` this router delivered from
core src's packets to core dst, which this router serves; ``peers`` maps a
destination router to ``[events, bytes]`` forwarded to it;
``forwarded_by_class`` and ``from_routers_by_class`` split the copies sent to
and received from other routers by :data:`ROUTER_LINK_CLASSES`, each
``{"packets", "events", "bytes"}``), ``by_link_class`` (this router's
``links`` grouped by :data:`LINK_CLASSES`) and ``reasons``.  On the ray
backend also ``error`` and ``connection_reasons`` (why the first connections in
``rejected_connections`` were dropped: strangers on the router's port that did
not authenticate; they never change a run, and are always 0 on ``local``).
:func:`bytes_by_link_class` groups the links by :data:`LINK_CLASSES`.

``raster.npz`` (optional) -- the spikes of one sample, written with
:func:`spinnray.report.runs.save_raster`; the format is documented there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from spinnray.errors import DataError

__all__ = ["CoreCounters", "RouterCounters", "SCHEMA_VERSION", "traffic_summary", "memory_summary",
           "LINK_CLASSES", "ROUTER_LINK_CLASSES", "link_class", "bytes_by_link_class"]

SCHEMA_VERSION = 1

ROUTER_LINK_CLASSES = ("same_node", "across_nodes")
"""How far a copy forwarded from one router to another travels: to the router
of another chip on the same node (inter-chip), or to a router on another node
(inter-node)."""


def _by_class() -> dict:
    return {k: {"packets": 0, "events": 0, "bytes": 0} for k in ROUTER_LINK_CLASSES}


@dataclass
class CoreCounters:
    """What one core sent and received (events are counted per destination)."""

    packets_sent: int = 0
    spike_events_sent: int = 0
    error_events_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    spike_events_received: int = 0
    error_events_received: int = 0
    bytes_received: int = 0
    rejected: int = 0            # frames that failed strict decode at this core
    dropped: int = 0             # events whose key this core cannot resolve
    max_events_per_step: int = 0  # most events this core emitted in one step
    steps: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def add(self, other: "CoreCounters") -> None:
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, max(a, b) if f.name == "max_events_per_step" else a + b)


@dataclass
class RouterCounters:
    """What one router took in and multicast out; ``links`` is the traffic
    matrix ``(src core, dst core) -> [events, bytes]`` of what this router
    delivered to its cores; ``forwarded_*`` and ``peers`` what it sent on to
    other routers, ``from_routers_*`` what they sent to it, both also split by
    :data:`ROUTER_LINK_CLASSES` (``*_by_class``);
    ``rejected_connections`` the connections to its TCP port (ray backend)
    dropped because they did not authenticate."""

    packets_in: int = 0
    bytes_in: int = 0
    spike_events_in: int = 0
    error_events_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    spike_events_out: int = 0
    error_events_out: int = 0
    dropped: int = 0             # events with no matching entry
    rejected: int = 0            # frames that failed strict decode
    forwarded_packets: int = 0   # copies sent to other routers (other chips' or other nodes')
    forwarded_events: int = 0
    forwarded_bytes: int = 0
    from_routers_packets: int = 0  # frames other routers forwarded to this one
    from_routers_events: int = 0
    from_routers_bytes: int = 0
    rejected_connections: int = 0  # connections to the router's port dropped before they authenticated
    links: dict = field(default_factory=dict)
    peers: dict = field(default_factory=dict)   # dst router -> [events, bytes] forwarded to it
    forwarded_by_class: dict = field(default_factory=_by_class)     # the forwarded_* by ROUTER_LINK_CLASSES
    from_routers_by_class: dict = field(default_factory=_by_class)  # the from_routers_* by ROUTER_LINK_CLASSES

    def add_forwarded(self, router: int, cls: str, events: int, nbytes: int) -> None:
        """One copy of ``events`` events in ``nbytes`` bytes sent to ``router``, a peer of class ``cls``."""
        self.forwarded_packets += 1
        self.forwarded_events += events
        self.forwarded_bytes += nbytes
        cell = self.peers.setdefault(router, [0, 0])
        cell[0] += events
        cell[1] += nbytes
        by = self.forwarded_by_class[cls]
        by["packets"] += 1
        by["events"] += events
        by["bytes"] += nbytes

    def add_from_router(self, cls: str, packets: int, events: int, nbytes: int) -> None:
        """Frames (``packets``), ``events`` and ``nbytes`` that a router of class ``cls`` forwarded here."""
        self.from_routers_packets += packets
        self.from_routers_events += events
        self.from_routers_bytes += nbytes
        by = self.from_routers_by_class[cls]
        by["packets"] += packets
        by["events"] += events
        by["bytes"] += nbytes

    def as_dict(self) -> dict:
        d = asdict(self)
        d["links"] = {f"{s}->{t}": list(v) for (s, t), v in sorted(self.links.items())}
        d["peers"] = {str(n): list(v) for n, v in sorted(self.peers.items())}
        return d


def traffic_summary(routers: list[dict], cores: list[dict], dense_equivalent_events: int) -> dict:
    """The ``traffic`` block of ``metrics.json`` from router and core counters.

    Events are counted as delivered (once per destination core), bytes as
    they leave the routers; ``dense_equivalent_events`` is what a dense
    exchange would have sent (steps x sending neurons x samples).
    """
    def total(key, rows):
        return sum(r[key] for r in rows)

    return {
        "spike_events": total("spike_events_out", routers),
        "error_events": total("error_events_out", routers),
        "spike_events_sent": total("spike_events_sent", cores),
        "error_events_sent": total("error_events_sent", cores),
        "packets": total("packets_out", routers),
        "bytes": total("bytes_out", routers),
        "dense_equivalent_events": dense_equivalent_events,
        "sparsity": (total("spike_events_sent", cores) / dense_equivalent_events
                     if dense_equivalent_events else 0.0),
        "dropped": total("dropped", routers) + total("dropped", cores),
        "rejected": total("rejected", routers) + total("rejected", cores),
        "max_events_per_step": max((r["max_events_per_step"] for r in cores), default=0),
        # router to router: one copy per source frame and destination router
        "inter_node": _forwarded(routers, "across_nodes"),
        "inter_chip": _forwarded(routers, "same_node"),
    }


def _forwarded(routers: list[dict], cls: str) -> dict[str, int]:
    """Copies of class ``cls`` the routers forwarded; reports written before the split (one router
    per node) count every forwarded copy as inter-node."""
    out = {"packets": 0, "events": 0, "bytes": 0}
    for r in routers:
        by = r.get("forwarded_by_class")
        for k in out:
            out[k] += by[cls][k] if by is not None else (r.get(f"forwarded_{k}", 0) if cls == "across_nodes" else 0)
    return out


def memory_summary(per_core: list[dict[str, int]], budget: int) -> dict:
    """The ``memory`` block of ``metrics.json``: bytes per core by category."""
    totals = [sum(m.values()) for m in per_core]
    by_category: dict[str, int] = {}
    for m in per_core:
        for k, v in m.items():
            by_category[k] = by_category.get(k, 0) + v
    return {
        "per_core_max_bytes": max(totals, default=0),
        "total_bytes": sum(totals),
        "budget_bytes_per_core": budget,
        "max_utilisation": max(totals, default=0) / budget if budget else 0.0,
        "by_category_bytes": by_category,
        "per_core_bytes": totals,
    }


LINK_CLASSES = ("same_core", "same_chip", "same_node", "across_nodes")
"""How far an event travels from its source core to a destination core:
``same_core`` (a core's events routed back to itself, e.g. recurrent
synapses), ``same_chip``, ``same_node`` (same node, another chip) and
``across_nodes``."""


def link_class(src: dict, dst: dict) -> str:
    """The :data:`LINK_CLASSES` entry of the link from core report ``src`` to
    core report ``dst`` (entries of ``cores.json``).

    Cores are compared by ``core_id``, then by ``node`` (a report without a
    ``node`` key, or with ``node`` null, is on the one node of older runs, so
    two such cores share a node), then by ``chip``.
    """
    if src["core_id"] == dst["core_id"]:
        return "same_core"
    if src.get("node") != dst.get("node"):
        return "across_nodes"
    return "same_chip" if src["chip"] == dst["chip"] else "same_node"


def bytes_by_link_class(routers: list[dict], cores: list[dict]) -> dict[str, dict[str, int]]:
    """``{class: {"events": int, "bytes": int}}`` for every class of
    :data:`LINK_CLASSES` (zeros included): the ``links`` counters of every
    router report summed by :func:`link_class` of their two cores.

    ``routers`` and ``cores`` are the lists of ``routers.json`` and
    ``cores.json``.  A link is counted by the router that delivers to its
    destination core, so with one router per node every delivered event is
    counted once.  Raises :class:`DataError` when a link names a core
    that is not in ``cores`` or is not written ``"src->dst"``.
    """
    by_id = {c["core_id"]: c for c in cores}
    out = {k: {"events": 0, "bytes": 0} for k in LINK_CLASSES}
    for r in routers:
        for name, (events, nbytes) in r["counters"].get("links", {}).items():
            try:
                src, dst = (int(x) for x in name.split("->"))
            except ValueError:
                raise DataError(f"router {r.get('router_id')} link {name!r}: expected 'src->dst' core ids") from None
            for cid in (src, dst):
                if cid not in by_id:
                    raise DataError(f"router {r.get('router_id')} link {name!r}: core {cid} is not in the core "
                                    f"reports (core ids {min(by_id, default=None)}..{max(by_id, default=None)})")
            cell = out[link_class(by_id[src], by_id[dst])]
            cell["events"] += int(events)
            cell["bytes"] += int(nbytes)
    return out
