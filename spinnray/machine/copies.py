"""The copies engine: one core object steps every data-parallel copy of a slice.

The copies of a slice (``parallel.replicas``) hold the same weights at every step and differ only
in their samples, keys and counters.  Stepping them one by one costs a Python pass per copy and
step; one object with the copies' samples as rows of one batch does the same arithmetic once
(every sum over samples of one copy is still taken per copy).  Each copy keeps its own face as a
PE (:class:`~spinnray.machine.core.Port`): it sends and receives its own packets through the
routers, with its own keys and sample indices, and counts them, so routers, counters and memory
reports are those of the copies run apart.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from spinnray.machine.core import CopySpec, CoreSpec

__all__ = ["fuse_copies", "join_rows", "split_rows"]


def fuse_copies(specs: list[CoreSpec]) -> list[CoreSpec]:
    """One spec per slice: the copies of a slice (same population and neurons, one per replica)
    become one spec stepping all of them, in replica order; a slice with one copy is unchanged."""
    groups: dict[tuple, list[CoreSpec]] = {}
    for s in specs:
        groups.setdefault((s.population, s.lo, s.hi), []).append(s)
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        group = sorted(group, key=lambda s: s.replica)
        out.append(replace(group[0], batch=sum(s.batch for s in group),
                           copies=tuple(CopySpec.of(s) for s in group)))
    return out


def join_rows(parts: list):
    """The copies' inputs of one run as the rows of one batch: label vectors along axis 0,
    ``(steps, batch, n)`` arrays along axis 1, dicts of them key by key (None stays None)."""
    if all(p is None for p in parts):
        return None
    first = next(p for p in parts if p is not None)
    if isinstance(first, dict):
        return {k: join_rows([p[k] for p in parts]) for k in first}
    arrays = [np.asarray(p) for p in parts]
    return np.concatenate(arrays, axis=0 if arrays[0].ndim == 1 else 1)


#: what a run records per step, ``(steps, batch, n)``; everything else is per sample, ``(batch, ...)``
PER_STEP = ("spikes", "v")


def split_rows(recorded: dict[str, np.ndarray], lo: int, n: int) -> dict[str, np.ndarray]:
    """One copy's part of what a run recorded: its rows of each array."""
    return {k: (v[:, lo:lo + n] if k in PER_STEP else v[lo:lo + n]) for k, v in recorded.items()}
