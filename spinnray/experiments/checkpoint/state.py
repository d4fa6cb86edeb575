"""What a checkpoint must agree with: the run's settings and their fingerprint, the shapes and dtypes
of every core's state (:func:`validate_state`), the position in the data; and warm starts from
another run's weights."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict

import numpy as np

from spinnray.errors import DataError

log = logging.getLogger("spinnray")


_POSITION_INTS = ("epoch", "first", "correct", "samples", "batches")
_POSITION_FLOATS = ("lr", "train_s")


def settings(**sections) -> dict:
    """The settings that must match between a run and its resume, flat: ``{"learning.lr": 0.01,
    ...}`` (nested mappings become dotted keys; other values are kept as plain data)."""
    out: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for k in sorted(value, key=str):
                walk(f"{prefix}.{k}", value[k])
        else:
            out[prefix] = list(value) if isinstance(value, tuple) else value

    for name, value in sections.items():
        walk(name, value)
    return out


def config_fingerprint(values: dict) -> str:
    """A short hash of the :func:`settings` that must match between a run and its resume."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def setting_differences(saved: dict, now: dict) -> list[str]:
    """``"key: A in the checkpoint, B now"`` for every setting that differs (or exists on one side only)."""
    out = []
    for key in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(key, "(unset)"), now.get(key, "(unset)")
        if a != b:
            out.append(f"{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def trajectory(learn) -> dict:
    """The learning options that shape the training up to any point: all but ``epochs``.

    A run resumed with a larger ``learning.epochs`` continues exactly as an uninterrupted run of
    that many epochs would (the epoch orders come from the checkpointed RNG), so training can be
    extended from a checkpoint.
    """
    out = {k: v for k, v in asdict(learn).items() if k != "epochs"}
    if not out.get("lr_scale", True):
        out.pop("lr_scale")         # added later: while unset, checkpoints written before it still resume
    return out


def training_data(data) -> dict:
    """The data options that shape the training: all but the test and validation sets' sizes and
    seeds.  A finished run resumed with another test set trains nothing more and tests its final
    weights on that set (``resume=RUN data.test_size=2000 data.test_seed=2``)."""
    return {k: v for k, v in asdict(data).items() if k not in ("test_size", "test_seed", "val_size", "val_seed")}


# ------------------------------------------------------------------------------------------------ checks
def describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape} {x.dtype}"
    return f"a {type(x).__name__}" if not isinstance(x, (int, float, str)) or isinstance(x, bool) else \
        f"{x!r} ({type(x).__name__})"


def _holds_array(x) -> bool:
    if isinstance(x, np.ndarray):
        return True
    if isinstance(x, dict):
        return any(_holds_array(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return any(_holds_array(v) for v in x)
    return False


def _fits(want, got, where: str, key: str) -> None:
    """DataError unless ``got`` has the structure, array shapes and dtypes of ``want`` (module docstring)."""
    at = key or "the state"
    if isinstance(want, np.ndarray):
        if not isinstance(got, np.ndarray) or got.dtype != want.dtype or got.shape != want.shape:
            raise DataError(f"{where}: {at} is {describe(got)}; this run's core holds {describe(want)}")
        if got.dtype.kind in "fc" and not np.isfinite(got).all():
            bad = int(got.size - np.count_nonzero(np.isfinite(got)))
            raise DataError(f"{where}: {at} holds {bad} NaN or infinite values")
        return
    if isinstance(want, dict):
        if not isinstance(got, dict):
            raise DataError(f"{where}: {at} is {describe(got)}; expected a dict")
        extra = [k for k in got if k not in want]
        if extra:
            raise DataError(f"{where}: {key + '.' if key else ''}{extra[0]} is not part of this run's core state")
        for k, v in want.items():
            sub = f"{key}.{k}" if key else str(k)
            if k in got:
                _fits(v, got[k], where, sub)
            elif _holds_array(v):
                raise DataError(f"{where}: {sub} is missing; this run's core holds {describe(v)}"
                                if isinstance(v, np.ndarray) else f"{where}: {sub} is missing")
        return
    if isinstance(want, (list, tuple)):
        if type(got) is not type(want) or len(got) != len(want):
            raise DataError(f"{where}: {at} is {describe(got)}"
                            f"{f' of {len(got)}' if isinstance(got, (list, tuple)) else ''}; this run's core "
                            f"holds a {type(want).__name__} of {len(want)}")
        for i, (w, g) in enumerate(zip(want, got)):
            _fits(w, g, where, f"{key}[{i}]")
        return
    if want is None or isinstance(want, (bool, str, bytes)):
        if type(got) is not type(want):
            raise DataError(f"{where}: {at} is {describe(got)}; expected {describe(want)}")
        return
    if isinstance(want, (int, float)):
        ok = type(got) is int if isinstance(want, int) else type(got) in (int, float)
        if not ok or (isinstance(got, float) and not math.isfinite(got)):
            raise DataError(f"{where}: {at} is {describe(got)}; expected a finite {type(want).__name__}")
        return
    if type(got) is not type(want):
        raise DataError(f"{where}: {at} is {describe(got)}; expected {describe(want)}")


def validate_state(expected: dict, got, where: str = "checkpoint", labels: dict | None = None) -> None:
    """Check core states ``got`` (``{core id: learning state}`` from a checkpoint) against ``expected``
    (the same from the live cores, :meth:`trainer.state`) before they are loaded.

    The same cores; per core the same entries, every array of the same shape and dtype and, if
    floating, finite (weights, Adam moments, accumulators, device states); numbers of the same kind
    (an int stays an int).  A live entry that is not an array and is absent from the checkpoint keeps
    its value.  Raises DataError naming ``where``, the core (``labels[core id]`` when given) and
    the entry.
    """
    labels = labels or {}

    def name(cid):
        return f"core {labels.get(cid, cid)}"

    if not isinstance(got, dict):
        raise DataError(f"{where}: the checkpoint holds no core states")
    missing = [c for c in expected if c not in got]
    if missing:
        raise DataError(f"{where}: no state for {name(missing[0])}; this run's cores are {sorted(expected)} and the "
                        f"checkpoint's {sorted(got, key=str)}: the checkpoint's network and mapping must match this run's")
    extra = [c for c in got if c not in expected]
    if extra:
        raise DataError(f"{where}: a state for core {extra[0]!r}, which this run does not have (its cores are "
                        f"{sorted(expected)}): the checkpoint's network and mapping must match this run's")
    for cid in sorted(expected):
        _fits(expected[cid], got[cid], f"{where}: {name(cid)}", "")


def check_position(st: dict, where: str) -> None:
    """The loop position of a checkpoint: counts >= 0, a finite learning rate, the epoch order a permutation."""
    for k in _POSITION_INTS:
        if type(st.get(k)) is not int or st[k] < 0:
            raise DataError(f"{where}: {k} = {st.get(k)!r}; expected an integer >= 0")
    for k in _POSITION_FLOATS:
        if type(st.get(k)) not in (int, float) or not math.isfinite(st[k]):
            raise DataError(f"{where}: {k} = {st.get(k)!r}; expected a finite number")
    order = st.get("order", ())
    if order is not None:
        if not isinstance(order, np.ndarray) or order.ndim != 1 or order.dtype.kind not in "iu" \
                or not np.array_equal(np.sort(order), np.arange(order.size)):
            raise DataError(f"{where}: order is {describe(order)}; expected None or a permutation of the "
                            "training samples")
        if st["first"] > order.size:
            raise DataError(f"{where}: first = {st['first']} is past the epoch's {order.size} samples")
    for k, typ in (("history", list), ("losses", list)):
        if type(st.get(k)) is not typ:
            raise DataError(f"{where}: {k} is {describe(st.get(k))}; expected a {typ.__name__}")
    if not all(type(h) is dict for h in st["history"]) or \
            not all(type(v) in (int, float) for v in st["losses"]):
        raise DataError(f"{where}: history must be a list of dicts and losses a list of numbers")
