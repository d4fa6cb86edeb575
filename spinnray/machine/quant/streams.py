"""Random streams and plain-data state shared by the weight stores.

Determinism: the drift exponents, the programming noise and the read noise come from three
independent streams spawned from ``seed``. The same seed and the same sequence of calls give the
same weights bit for bit. Reading never changes the programmed state.

Per-column streams (``columns=``): a projection split over cores gives each core a slice of the
columns (post-synaptic neurons) of the weight matrix. With ``columns`` = the global indices of the
store's last axis, every random draw of a store (stochastic rounding, drift exponents, programming
and read noise) is made column by column, column ``c`` from its own generator seeded by
``SeedSequence(seed.entropy, spawn_key=seed.spawn_key + (c,))``. Every draw is over the whole
array (entries that do not need a number still consume one), so column ``c`` sees the same numbers
whatever other columns sit in the same store: a split into 1, 3 or 12 cores gives bit-identical
weights. Without ``columns`` one generator fills each array in C order (faster for big stores).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from spinnray.errors import ConfigError, DataError


def seed_sequence(seed, name: str = "seed") -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return np.random.SeedSequence(int(seed))
    raise ConfigError(f"{name} = {seed!r}: expected an integer >= 0 or a numpy SeedSequence")


# ---------------------------------------------------------------------------------------------
# Plain-data state (checkpoints): numbers, strings, lists, dicts and numpy arrays, no objects
# ---------------------------------------------------------------------------------------------

_U64 = (1 << 64) - 1


def pack_pcg64(gens) -> np.ndarray:
    """The PCG64 states of ``gens`` as a ``(len(gens), 6)`` uint64 array: the 128-bit state and
    increment as (high, low) words, ``has_uint32`` and ``uinteger``."""
    out = np.zeros((len(gens), 6), np.uint64)
    for i, g in enumerate(gens):
        s = g.bit_generator.state
        if s.get("bit_generator") != "PCG64":
            raise TypeError(f"a {s.get('bit_generator')!r} generator: only PCG64 states are saved")
        st, inc = int(s["state"]["state"]), int(s["state"]["inc"])
        out[i] = (st >> 64, st & _U64, inc >> 64, inc & _U64, int(s["has_uint32"]), int(s["uinteger"]))
    return out


def unpack_pcg64(row) -> dict:
    hi, lo, ihi, ilo, has, u = (int(v) for v in row)
    return {"bit_generator": "PCG64", "state": {"state": (hi << 64) | lo, "inc": (ihi << 64) | ilo},
            "has_uint32": has, "uinteger": u}


def state_dict(state, name: str, keys) -> dict:
    """``state`` checked to be a dict holding exactly ``keys``; DataError naming ``name`` otherwise."""
    if not isinstance(state, dict):
        raise DataError(f"{name}: expected a dict of the store's state, got {type(state).__name__}")
    got, want = set(state), set(keys)
    if got != want:
        extra, missing = sorted(map(str, got - want)), sorted(map(str, want - got))
        raise DataError(f"{name}: {'missing ' + ', '.join(missing) if missing else ''}"
                        f"{'; ' if missing and extra else ''}{'unexpected ' + ', '.join(extra) if extra else ''}")
    return state


def state_array(state: dict, key: str, name: str, dtype, shape, finite: bool = True) -> np.ndarray:
    """``state[key]`` checked to be an array of ``dtype`` and ``shape`` (finite if asked); a copy."""
    a = state[key]
    if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype) or a.shape != tuple(shape):
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise DataError(f"{name}.{key}: {got}; expected {np.dtype(dtype)} {tuple(shape)}")
    if finite and a.dtype.kind in "fc" and not np.isfinite(a).all():
        raise DataError(f"{name}.{key}: holds NaN or infinite values")
    return a.copy()


def state_equal(state: dict, key: str, name: str, want) -> None:
    """``state[key]`` must equal this object's ``want`` (a setting of the run, not state)."""
    got = state[key]
    norm = (lambda v: list(v) if isinstance(v, tuple) else v)
    if isinstance(want, dict) and isinstance(got, dict):
        same = {k: norm(v) for k, v in got.items()} == {k: norm(v) for k, v in want.items()}
    else:
        same = type(got) is type(want) and got == want
    if not same:
        raise DataError(f"{name}.{key} = {got!r}; this run's store has {want!r}")


def plain_params(params) -> dict:
    """A dataclass's fields as a dict of numbers, bools and lists (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}


def state_counters(state: dict, name: str, want: dict) -> dict:
    got = state["counters"]
    if not isinstance(got, dict) or set(got) != set(want) or not all(
            type(got[k]) is type(v) and (not isinstance(v, float) or math.isfinite(got[k])) for k, v in want.items()):
        raise DataError(f"{name}.counters = {got!r}: expected the counters {sorted(want)} "
                        f"of types {[type(want[k]).__name__ for k in sorted(want)]}")
    return dict(got)


class Noise:
    """Random numbers for arrays whose last axis holds columns: one stream, or one per column.

    ``Noise(seed)`` wraps one ``np.random.Generator`` (draws fill an array in C order).
    ``Noise(seed, columns=ids)`` keeps one generator per column, column ``ids[j]`` seeded by
    ``SeedSequence(seed.entropy, spawn_key=seed.spawn_key + (ids[j],))``; a draw of shape
    ``(..., len(ids))`` takes ``shape[:-1]`` numbers from each column's generator. So the numbers of
    a column depend only on the seed, the column id and the shapes drawn before, never on the other
    columns held with it.

    Raises:
        ConfigError: a bad seed or column ids that are not distinct integers >= 0.
        DataError: a per-column draw whose last axis is not ``len(columns)``.
    """

    def __init__(self, seed=0, columns=None):
        ss = seed_sequence(seed)
        if columns is None:
            self.columns = None
            self._gen = np.random.default_rng(ss)
            return
        cols = np.asarray(columns)
        if cols.ndim != 1 or not np.issubdtype(cols.dtype, np.integer) or (cols.size and cols.min() < 0) \
                or len(np.unique(cols)) != len(cols):
            raise ConfigError(f"columns = {columns!r}: expected distinct integers >= 0 (global column ids)")
        self.columns = tuple(int(c) for c in cols)
        self._gens = [np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (c,)))
                      for c in self.columns]

    def _draw(self, method: str, shape, *args) -> np.ndarray:
        shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
        if self.columns is None:
            return getattr(self._gen, method)(*args, size=shape)
        if not shape or shape[-1] != len(self.columns):
            raise DataError(f"a per-column draw of shape {shape}: expected the last axis to hold the "
                            f"{len(self.columns)} columns")
        out = np.empty(shape, np.float64)
        for j, g in enumerate(self._gens):
            out[..., j] = getattr(g, method)(*args, size=shape[:-1])
        return out

    def state(self) -> dict:
        """The streams' positions as plain data: ``columns`` (int64 array, or None for one stream)
        and ``pcg64`` (uint64 ``(streams, 6)``, see :func:`pack_pcg64`)."""
        gens = [self._gen] if self.columns is None else self._gens
        return {"columns": None if self.columns is None else np.array(self.columns, np.int64),
                "pcg64": pack_pcg64(gens)}

    def load_state(self, state: dict, name: str = "noise") -> None:
        """Continue from :meth:`state` of a Noise with the same columns (DataError naming ``name`` otherwise)."""
        self._set(self._check_state(state, name))

    def _set(self, states: list) -> None:
        for g, s in zip([self._gen] if self.columns is None else self._gens, states):
            g.bit_generator.state = s

    def _check_state(self, state: dict, name: str) -> list:
        """The generator states of ``state``, checked against this Noise's columns; changes nothing."""
        st = state_dict(state, name, ("columns", "pcg64"))
        cols = st["columns"]
        if self.columns is None:
            if cols is not None:
                raise DataError(f"{name}.columns: per-column streams; this run's store has one stream")
        elif not (isinstance(cols, np.ndarray) and cols.dtype == np.int64 and cols.shape == (len(self.columns),)
                  and tuple(int(c) for c in cols) == self.columns):
            raise DataError(f"{name}.columns: not this store's columns {self.columns[:8]}"
                            f"{'...' if len(self.columns) > 8 else ''}")
        gens = [self._gen] if self.columns is None else self._gens
        rows = state_array(st, "pcg64", name, np.uint64, (len(gens), 6))
        if (rows[:, 4] > 1).any() or (rows[:, 5] > 0xFFFFFFFF).any():
            raise DataError(f"{name}.pcg64: not PCG64 states (has_uint32 > 1 or uinteger > 2**32 - 1)")
        return [unpack_pcg64(r) for r in rows]

    def random(self, shape) -> np.ndarray:
        """U[0, 1) of ``shape`` (float64)."""
        return self._draw("random", shape)

    def standard_normal(self, shape) -> np.ndarray:
        """N(0, 1) of ``shape`` (float64)."""
        return self._draw("standard_normal", shape)

    def normal(self, loc: float, scale: float, shape) -> np.ndarray:
        """N(loc, scale^2) of ``shape`` (float64)."""
        return self._draw("normal", shape, loc, scale)


def finite_array(x, name: str, shape=None, dtype=np.float64) -> np.ndarray:
    a = np.asarray(x, dtype=dtype)
    if shape is not None and a.shape != tuple(shape):
        raise DataError(f"{name} has shape {a.shape}: expected {tuple(shape)}")
    if not np.isfinite(a).all():
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise DataError(f"{name} holds {bad} NaN or infinite values: expected finite numbers")
    return a
