"""Small builders the tests share: trainers of the two on-chip rules and their networks, from the
public API (rule registry, builders, Trainer)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from spinnray.config import ClusterConfig, ParallelConfig
from spinnray.data.base import ArraySplit, RasterSplit
from spinnray.experiments.trainer import Trainer
from spinnray.model.builders import (DataShape, FeedForwardConfig, RecurrentALIFConfig, build_feedforward,
                                     build_recurrent_alif)
from spinnray.rules import rule
from spinnray.rules.eprop import EPropConfig
from spinnray.rules.eventprop import EventPropConfig

__all__ = ["yinyang_net", "eprop_net", "eventprop_trainer", "eprop_trainer", "spikes_split", "analog_split",
           "EventPropConfig", "EPropConfig", "FeedForwardConfig", "RecurrentALIFConfig"]


def yinyang_net(cfg: FeedForwardConfig, seed: int = 0, n_in: int = 5, n_out: int = 3):
    """The feed-forward LIF network of the Yin-Yang task (5 inputs, 3 classes by default)."""
    return build_feedforward(cfg, DataShape(n_in, n_out, "spikes"), seed)


def eprop_net(cfg: RecurrentALIFConfig, n_in: int, n_out: int, seed: int = 0):
    """The recurrent ALIF network of e-prop with ``n_in`` analog inputs and ``n_out`` readouts."""
    return build_recurrent_alif(cfg, DataShape(n_in, n_out, "analog"), seed)


def eventprop_trainer(net, learn: EventPropConfig, *, machine, cores_per_population=None, replicas: int = 1,
                      backend: str = "local", timeout_s: float = 120.0, cluster=None, schedule: str = "lockstep"):
    cluster = replace(cluster or ClusterConfig(), round_timeout_s=timeout_s)
    return Trainer(net, rule("eventprop"), learn, machine=machine,
                   parallel=ParallelConfig(cores_per_population=cores_per_population, replicas=replicas,
                                           schedule=schedule),
                   backend=backend, cluster=cluster)


def eprop_trainer(net, learn: EPropConfig, *, machine, hidden_cores, backend: str = "local", timeout_s: float = 120.0,
                  batch_size: int | None = None, cluster=None):
    if batch_size is not None:
        learn = replace(learn, batch_size=batch_size)
    cluster = replace(cluster or ClusterConfig(), round_timeout_s=timeout_s)
    return Trainer(net, rule("eprop"), learn, machine=machine,
                   parallel=ParallelConfig(cores_per_population=hidden_cores), backend=backend, cluster=cluster)


def spikes_split(raster: np.ndarray, labels) -> RasterSplit:
    """A split of spike rasters held time-major, (steps, N, inputs)."""
    return RasterSplit(raster, np.asarray(labels))


def analog_split(x: np.ndarray, labels) -> ArraySplit:
    """A split of analog samples held sample-major, (N, steps, inputs)."""
    return ArraySplit(np.asarray(x, np.float32), np.asarray(labels))


def eventprop_learning(net, machine, **cfg):
    """The EventProp :class:`~spinnray.mapping.Learning` of ``net`` (every LIF population with inputs
    learns; the one without outputs computes the loss) with ``EventPropConfig(**cfg)``."""
    return rule("eventprop").learning(net, EventPropConfig(**cfg), machine)


def eprop_learning(net, machine, **cfg):
    """The e-prop :class:`~spinnray.mapping.Learning` of a recurrent ALIF ``net`` with ``EPropConfig(**cfg)``."""
    return rule("eprop").learning(net, EPropConfig(**cfg), machine)


def held_bytes(core) -> dict[str, int]:
    """Bytes by category of the arrays ``core`` really holds, summed here from the arrays
    themselves: the independent check of the memory models (spinnray.machine.core.forward_memory
    and the rules' specs).  The categories a core computes from its run's data (input events,
    spike records, layered error events) and the host-streamed ``input_buffer`` are taken from
    ``core.memory()``."""
    own = core.memory()
    mem = {"weights": sum(w.nbytes for w in core.weights),
           "delays": sum(d.nbytes for d in core.delays if d is not None),
           "neuron_state": sum(a.nbytes for a in core.state),
           "spike_history": sum(h.nbytes for h in core.hist.values()),
           "key_table": sum(a.nbytes for a in (core._src_prefix, core._src_pre, core._src_lo, core._src_n))}
    if core.inputs is not None:
        mem["input_spikes"] = core.inputs.nbytes
    for k in ("input_buffer", "input_events", "spike_records", "error_events"):
        if k in own:
            mem[k] = own[k]
    if not core.learns:
        return mem
    if core.stores is not None:
        mem["weights"] = sum(st.stored_bytes for st in core.stores)
        acc = sum(st.accumulator_bytes for st in core.stores)
        if acc:
            mem["weight_accumulator"] = acc
    mem["gradients"] = sum(g.nbytes for g in core.grads)
    mem["optimizer"] = sum(o.m.nbytes + o.v.nbytes for o in core.opts)
    masks = sum(m.nbytes for m in core.masks if m is not None)
    keys = sum(inc.error_keys.nbytes for inc in core.spec.incoming if inc.error_keys is not None)
    name = type(core).__name__
    if name == "EventPropCore":
        mem.update(masks=masks, error_keys=keys, adjoint=core.lam_v.nbytes + core.lam_i.nbytes + core.err_in.nbytes)
        return mem
    if masks:
        mem["masks"] = masks
    if keys:
        mem["error_keys"] = keys
    if name == "EPropHiddenCore":
        mem["traces"] = sum(a.nbytes for a in (core.eps_v, core.d, core.acc, core.psi, core.ereg, core.zcount))
        mem["learning_signal"] = core.signal.nbytes
        mem["scratch"] = core._tmp.nbytes
    elif name == "EPropReadoutCore":
        mem["traces"] = core.zbar.nbytes + core.acc_z.nbytes + core.ysum.nbytes
        if core.feedback is not None:
            mem["feedback"] = sum(f.nbytes for f in core.feedback)
    return mem
