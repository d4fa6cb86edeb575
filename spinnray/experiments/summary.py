"""What every run writes besides its own figures: JSON files, progress bars, the per-layer
traffic of ``metrics.json`` (documented key by key in :mod:`spinnray.experiments.metrics_doc`)."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spinnray.model.network import Network
from spinnray.model.neurons import ALIF

__all__ = ["write_json", "events_rate", "progress", "peak_rss_bytes", "layer_traffic"]


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (set, tuple)):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def events_rate(events: int, since: float) -> str:
    """Events per second since ``since`` (a ``time.perf_counter()`` value), for progress bars
    and log lines: ``"1.23e+05"``."""
    elapsed = time.perf_counter() - since
    return f"{events / elapsed:.3g}" if elapsed > 0 else "-"


def progress(total: int, desc: str, enabled: bool, unit: str = "trial"):
    """A progress bar (tqdm) over ``total`` items, off when ``enabled`` is false."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, leave=False)


def peak_rss_bytes() -> int:
    """Peak resident memory of this (driver) process; with backend=ray the cores'
    own processes are not included (their SRAM-model bytes are in ``memory``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def layer_traffic(cores: list[dict], net: Network, steps: int, forward_samples: int, train_samples: int,
                  about_received: bool = False) -> dict:
    """Per population with cores: forward spike events per sample (training and test) against
    dense (T x neurons), error events sent per training sample, the learning signals an ALIF
    population received, and the error events sent *about* a population's spikes by the cores
    above it (at most one per spike per core).  ``about_received``: every error event goes to the
    one core owning the neuron it is about (EventProp's), so the events a population's cores
    received are exactly those about it, from every population it projects to (its own through
    a recurrent projection included); otherwise the count is what the population it projects to
    sent (exact when that one sends errors about no other)."""
    out = {}
    for name, pop in net.populations.items():
        rows = [c["counters"] for c in cores if c["population"] == name]
        if not rows:
            continue                 # host-written input: no core, no events
        spikes = sum(r["spike_events_sent"] for r in rows)
        out[name] = {"spike_events_per_sample": spikes / forward_samples if forward_samples else 0.0,
                     "dense_per_sample": steps * pop.size,
                     "spike_sparsity": spikes / (forward_samples * steps * pop.size) if forward_samples else 0.0,
                     "error_events_sent_per_sample":
                         sum(r["error_events_sent"] for r in rows) / train_samples if train_samples else 0.0}
        if isinstance(pop.model, ALIF):
            out[name]["learning_signals_per_sample"] = \
                sum(r["error_events_received"] for r in rows) / train_samples if train_samples else 0.0
    for proj in net.projections:
        if proj.pre.name in out and proj.post.name in out:
            if about_received:
                received = sum(c["counters"]["error_events_received"] for c in cores
                               if c["population"] == proj.pre.name)
                about = received / train_samples if train_samples else 0.0
            else:
                about = out[proj.post.name]["error_events_sent_per_sample"]
            out[proj.pre.name]["error_events_about_per_sample"] = about
    return out
