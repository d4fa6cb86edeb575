"""Low-precision weight storage and a phase-change-memory (PCM) synapse model (numpy only).

Three stores for one projection's weights (shape ``(n_pre, n_post)`` or any shape). A learning
core uses them all through the same calls:

    w = store.read(t_s)          # effective weights, float32, shape ``store.shape``
    store.apply(delta, t_s)      # add a weight update (an e-prop / EventProp step)
    store.stored_bytes, store.accumulator_bytes

``t_s`` is emulated time in seconds (steps so far x dt). Only the PCM store uses it (drift); the
digital stores ignore it.

Quantization grid (:class:`Quantizer`)
--------------------------------------
For ``bits = b`` in {16, 8, 4, 2}: ``L = 2**(b-1) - 1`` levels per sign, step ``D = w_max / L``.
The representable weights are ``k D`` for the integers ``k`` in ``[-L, L]``. That makes
``2L + 1`` values: 65535, 255, 15 and 3 (ternary). The grid is symmetric and 0 is exact. The
code ``k`` is stored as a b-bit two's-complement integer; the code ``-2**(b-1)`` is never used.
Weights saturate at ``+-w_max``. ``bits = 32`` means float32 passthrough: no grid and no
saturation, so it is the unquantized baseline.

* nearest:    ``k = rint(clip(w / D, -L, L))`` (ties to even); ``|w_q - w| <= D / 2`` inside the range.
* stochastic: ``k = floor(clip(w / D, -L, L) + u)`` with ``u ~ U[0, 1)``, so that
  ``E[k D] = clip(w, -w_max, w_max)`` exactly (unbiased).

Mixed precision (:class:`MixedPrecisionWeights`)
------------------------------------------------
This is the accumulate-then-apply scheme of Nandakumar et al. 2020 ("Mixed-precision deep learning
based on computational memory", Front. Neurosci. 14:406). It is also the scheme that let Demirag et
al. 2021 (arXiv 2108.01804) train spiking RNNs with e-prop on PCM. A float32 accumulator ``chi``
holds the pending updates. Only whole levels move to the stored low-precision weights::

    chi <- chi + delta;  n = R(chi / D);  k <- clip(k + n, -L, L);  chi <- chi - n D

So ``sum(delta) = D (k_T - k_0) + chi_T + dropped``. Here ``dropped`` is what saturation refused,
and it is counted. An update smaller than one level is never lost: it waits in ``chi``.
The transfer ``R`` (``transfer=``):

* ``round`` (default): the quantizer's rounding. With nearest, ``n = rint(chi / D)``: the stored
  weight is the grid point nearest to the high-precision weight ``k D + chi`` (``|chi| <= D/2``).
  With stochastic, ``n = floor(chi / D + u)``: the stored weight equals it in expectation.
* ``threshold``: ``n = trunc(chi / D)``, a level moves only once the pending update reaches a
  whole level (``|chi| < D``), as with device pulses. The stored weight then trails the
  high-precision one by half a level on average, against the direction of learning: on the
  keyword task at 4 bits this slowed learning markedly (bench/RESULTS.md, issue 8).

PCM synapses (:class:`PCMParams`, :class:`PCMWeights`)
------------------------------------------------------
Each weight is a differential pair of devices, ``w = (G+ - G-) w_max / g_max``. Each conductance
lies in ``[0, g_max]``. Every device has its own conductance ``G`` (uS), the time ``t_p`` of its
last programming (s), and its own drift exponent ``nu ~ max(N(nu_mean, nu_std), 0)``, drawn once
when the store is built.

* Drift: ``G(t) = G(t_p) ((t - t_p + t0) / t0)^(-nu)``. A device drifts from its last
  programming. Programming it again first materializes the drift up to now, then restarts the
  clock.
* Read noise: each read returns ``G(t) + (read_noise_rel G(t) + read_noise_abs_us) z`` with
  ``z ~ N(0, 1)``, drawn fresh on every read, after Nandakumar et al. 2018. The read value is
  not clipped: the absolute term is the measurement floor, and a clip at 0 would bias weights
  near 0.
* Incremental programming: ``apply(delta)`` runs the mixed-precision rule above with granularity
  ``eps = dg_pulse_us w_max / g_max``. ``n > 0`` sends n SET pulses to ``G+`` and ``n < 0``
  sends ``|n|`` pulses to ``G-`` (PCM can only be potentiated gradually). n pulses change G by
  ``n dg_pulse_us + sigma_prog z``, with the programming noise as a function of the nominal
  change ``dG = n dg_pulse_us``::

      sigma_prog(dG) = prog_noise_pulse_us sqrt(dG / dg_pulse_us)      (independent noise per pulse)

  The result is clipped to ``[0, g_max]``; each clip at ``g_max`` is counted in
  ``counters["saturated"]``.
* Refresh (``params.refresh``): a pair whose larger device has reached
  ``refresh_threshold g_max`` gets refreshed, provided the weight still leaves one pulse of
  headroom below that threshold (``|G+ - G-| <= refresh_threshold g_max - dg_pulse_us``). The
  refresh reads the weight back (noise-free), RESETs both devices, and writes
  ``rint(|G+ - G-| / dg_pulse_us)`` pulses onto one device. The remainder goes into the
  accumulator, so the weight is kept. (After Demirag et al.'s code; the noise-free read-back is
  a simplification.)
* Full programming: ``program(w)`` RESETs both devices and writes ``|w|`` onto one of them by
  iterative program-and-verify. The error is ``N(0, sigma_pv(g_T))`` with
  ``sigma_pv(g_T) = prog_noise_scale max(c0 + c1 x + c2 x^2, 0) g_max / 25 uS`` and
  ``x = g_T / g_max`` (Nandakumar et al. ICECS 2019; Joshi et al. Nat. Commun. 2020; the fit
  used by IBM's aihwkit ``PCMLikeNoiseModel``).

Not modeled: the fall of the mean pulse increment as G grows (Nandakumar 2018: -0.084 uS per uS)
and the growth of its spread (+0.091 uS per uS), the dependence of nu on the target conductance,
the slow rise of 1/f read noise with time since programming, and drift compensation.

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

from spinnray.checks import check_real
from spinnray.config import BITS, ROUNDINGS, SYNAPSES, TRANSFERS, PCMParams
from spinnray.errors import ConfigError, DataError

__all__ = ["BITS", "ROUNDINGS", "SYNAPSES", "TRANSFERS", "Noise", "Quantizer", "MixedPrecisionWeights", "PCMParams",
           "PCMWeights", "make_weight_store"]




def _seed_sequence(seed, name: str = "seed") -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return np.random.SeedSequence(int(seed))
    raise ConfigError(f"{name} = {seed!r}: expected an integer >= 0 or a numpy SeedSequence")


# ---------------------------------------------------------------------------------------------
# Plain-data state (checkpoints): numbers, strings, lists, dicts and numpy arrays, no objects
# ---------------------------------------------------------------------------------------------

_U64 = (1 << 64) - 1


def _pack_pcg64(gens) -> np.ndarray:
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


def _unpack_pcg64(row) -> dict:
    hi, lo, ihi, ilo, has, u = (int(v) for v in row)
    return {"bit_generator": "PCG64", "state": {"state": (hi << 64) | lo, "inc": (ihi << 64) | ilo},
            "has_uint32": has, "uinteger": u}


def _state_dict(state, name: str, keys) -> dict:
    """``state`` checked to be a dict holding exactly ``keys``; DataError naming ``name`` otherwise."""
    if not isinstance(state, dict):
        raise DataError(f"{name}: expected a dict of the store's state, got {type(state).__name__}")
    got, want = set(state), set(keys)
    if got != want:
        extra, missing = sorted(map(str, got - want)), sorted(map(str, want - got))
        raise DataError(f"{name}: {'missing ' + ', '.join(missing) if missing else ''}"
                        f"{'; ' if missing and extra else ''}{'unexpected ' + ', '.join(extra) if extra else ''}")
    return state


def _state_array(state: dict, key: str, name: str, dtype, shape, finite: bool = True) -> np.ndarray:
    """``state[key]`` checked to be an array of ``dtype`` and ``shape`` (finite if asked); a copy."""
    a = state[key]
    if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype) or a.shape != tuple(shape):
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise DataError(f"{name}.{key}: {got}; expected {np.dtype(dtype)} {tuple(shape)}")
    if finite and a.dtype.kind in "fc" and not np.isfinite(a).all():
        raise DataError(f"{name}.{key}: holds NaN or infinite values")
    return a.copy()


def _state_equal(state: dict, key: str, name: str, want) -> None:
    """``state[key]`` must equal this object's ``want`` (a setting of the run, not state)."""
    got = state[key]
    norm = (lambda v: list(v) if isinstance(v, tuple) else v)
    if isinstance(want, dict) and isinstance(got, dict):
        same = {k: norm(v) for k, v in got.items()} == {k: norm(v) for k, v in want.items()}
    else:
        same = type(got) is type(want) and got == want
    if not same:
        raise DataError(f"{name}.{key} = {got!r}; this run's store has {want!r}")


def _plain_params(params) -> dict:
    """A dataclass's fields as a dict of numbers, bools and lists (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}


def _state_counters(state: dict, name: str, want: dict) -> dict:
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
        ss = _seed_sequence(seed)
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
        and ``pcg64`` (uint64 ``(streams, 6)``, see :func:`_pack_pcg64`)."""
        gens = [self._gen] if self.columns is None else self._gens
        return {"columns": None if self.columns is None else np.array(self.columns, np.int64),
                "pcg64": _pack_pcg64(gens)}

    def load_state(self, state: dict, name: str = "noise") -> None:
        """Continue from :meth:`state` of a Noise with the same columns (DataError naming ``name`` otherwise)."""
        self._set(self._check_state(state, name))

    def _set(self, states: list) -> None:
        for g, s in zip([self._gen] if self.columns is None else self._gens, states):
            g.bit_generator.state = s

    def _check_state(self, state: dict, name: str) -> list:
        """The generator states of ``state``, checked against this Noise's columns; changes nothing."""
        st = _state_dict(state, name, ("columns", "pcg64"))
        cols = st["columns"]
        if self.columns is None:
            if cols is not None:
                raise DataError(f"{name}.columns: per-column streams; this run's store has one stream")
        elif not (isinstance(cols, np.ndarray) and cols.dtype == np.int64 and cols.shape == (len(self.columns),)
                  and tuple(int(c) for c in cols) == self.columns):
            raise DataError(f"{name}.columns: not this store's columns {self.columns[:8]}"
                            f"{'...' if len(self.columns) > 8 else ''}")
        gens = [self._gen] if self.columns is None else self._gens
        rows = _state_array(st, "pcg64", name, np.uint64, (len(gens), 6))
        if (rows[:, 4] > 1).any() or (rows[:, 5] > 0xFFFFFFFF).any():
            raise DataError(f"{name}.pcg64: not PCG64 states (has_uint32 > 1 or uinteger > 2**32 - 1)")
        return [_unpack_pcg64(r) for r in rows]

    def random(self, shape) -> np.ndarray:
        """U[0, 1) of ``shape`` (float64)."""
        return self._draw("random", shape)

    def standard_normal(self, shape) -> np.ndarray:
        """N(0, 1) of ``shape`` (float64)."""
        return self._draw("standard_normal", shape)

    def normal(self, loc: float, scale: float, shape) -> np.ndarray:
        """N(loc, scale^2) of ``shape`` (float64)."""
        return self._draw("normal", shape, loc, scale)


def _finite_array(x, name: str, shape=None, dtype=np.float64) -> np.ndarray:
    a = np.asarray(x, dtype=dtype)
    if shape is not None and a.shape != tuple(shape):
        raise DataError(f"{name} has shape {a.shape}: expected {tuple(shape)}")
    if not np.isfinite(a).all():
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise DataError(f"{name} holds {bad} NaN or infinite values: expected finite numbers")
    return a


# ---------------------------------------------------------------------------------------------
# Uniform symmetric quantization
# ---------------------------------------------------------------------------------------------

class Quantizer:
    """Symmetric uniform quantizer onto ``k w_max / L`` for ``k`` in ``[-L, L]``, ``L = 2**(bits-1) - 1``.

    Args:
        bits: 32 (float32 passthrough), 16, 8, 4 or 2.
        w_max: saturation limit in weight units, finite and > 0 (not used when ``bits = 32``).
        rounding: ``"nearest"`` (ties to even) or ``"stochastic"`` (unbiased).
        seed: seeds the generator that stochastic rounding uses when no ``rng`` is passed.
        columns: global ids of the last axis of the arrays this quantizer rounds stochastically:
            one random stream per column (:class:`Noise`); None = one stream.

    Raises:
        ConfigError: naming ``bits``, ``w_max``, ``rounding``, ``seed`` or ``columns`` when one is invalid.
    """

    def __init__(self, bits: int = 32, w_max: float = 1.0, rounding: str = "nearest", seed=0, columns=None):
        if bits not in BITS or isinstance(bits, bool):
            raise ConfigError(f"bits = {bits!r}: expected one of {list(BITS)}")
        if rounding not in ROUNDINGS:
            raise ConfigError(f"rounding = {rounding!r}: expected one of {list(ROUNDINGS)}")
        self.bits = int(bits)
        self.w_max = check_real("w_max", w_max, 0.0, strict=True)
        self.rounding = rounding
        #: the random numbers of stochastic rounding (a :class:`Noise`)
        self.rng = Noise(seed, columns)
        self.passthrough = self.bits == 32
        #: levels per sign L (None for the float32 passthrough)
        self.levels = None if self.passthrough else 2 ** (self.bits - 1) - 1
        #: grid step D = w_max / L in weight units (None for the passthrough)
        self.step = None if self.passthrough else self.w_max / self.levels
        #: dtype of the integer codes (float32 for the passthrough)
        self.code_dtype = np.dtype(np.float32 if self.passthrough else
                                   (np.int8 if self.bits <= 8 else np.int16))

    def __repr__(self) -> str:
        return f"Quantizer(bits={self.bits}, w_max={self.w_max}, rounding={self.rounding!r})"

    def grid(self) -> np.ndarray:
        """All representable values, ascending, float32, ``(2L + 1,)``. Raises ConfigError for bits=32."""
        if self.passthrough:
            raise ConfigError("bits = 32 is a float32 passthrough and has no grid")
        return self.decode(np.arange(-self.levels, self.levels + 1))

    def encode(self, w, rng: np.random.Generator | None = None) -> np.ndarray:
        """Codes of ``w``: int8 (bits <= 8) or int16 (bits = 16) in ``[-L, L]``, same shape as ``w``.

        ``rng`` (stochastic rounding only) overrides the quantizer's own generator. For bits = 32
        the "codes" are ``w`` as float32. Raises DataError on NaN or infinite weights.
        """
        w = _finite_array(w, "w")
        if self.passthrough:
            return w.astype(np.float32)
        x = np.clip(w / self.step, -self.levels, self.levels)
        if self.rounding == "nearest":
            k = np.rint(x)
        else:
            u = (rng if rng is not None else self.rng).random(x.shape)
            # x <= L and u < 1, but L + u can round up to L + 1 in float64 when u is within ~2^-46 of 1
            k = np.minimum(np.floor(x + u), self.levels)
        return k.astype(self.code_dtype)

    def decode(self, codes) -> np.ndarray:
        """Weights ``codes x D`` as float32 (computed in float64, rounded once)."""
        c = np.asarray(codes)
        if self.passthrough:
            return c.astype(np.float32)
        return (c.astype(np.float64) * self.step).astype(np.float32)

    def quantize(self, w, rng: np.random.Generator | None = None) -> np.ndarray:
        """``decode(encode(w, rng))``: ``w`` on the grid, saturated at ``+-w_max``, float32."""
        return self.decode(self.encode(w, rng))

    def state(self) -> dict:
        """Plain data: the settings (checked on load) and the stochastic-rounding streams."""
        return {"bits": self.bits, "w_max": self.w_max, "rounding": self.rounding, "rng": self.rng.state()}

    def load_state(self, state: dict, name: str = "quantizer") -> None:
        """Continue from :meth:`state` of a quantizer with the same settings (DataError otherwise)."""
        self.rng._set(self._check_state(state, name))

    def _check_state(self, state: dict, name: str) -> list:
        st = _state_dict(state, name, ("bits", "w_max", "rounding", "rng"))
        for key in ("bits", "w_max", "rounding"):
            _state_equal(st, key, name, getattr(self, key))
        return self.rng._check_state(st["rng"], f"{name}.rng")

    def stored_bytes(self, shape) -> int:
        """Bytes to store an array of ``shape`` at ``bits`` per weight, packed (two 4-bit codes
        per byte, four 2-bit codes per byte), rounded up to a whole byte."""
        n = int(np.prod(shape, dtype=np.int64))
        return -(-n * self.bits // 8)


# ---------------------------------------------------------------------------------------------
# Accumulate-then-apply digital store
# ---------------------------------------------------------------------------------------------

class MixedPrecisionWeights:
    """Low-precision stored weights plus a float32 accumulator of pending updates.

    With ``accumulate=True`` (the default), ``apply`` adds each update to the accumulator ``chi``
    and moves whole levels into the stored codes by the ``transfer`` rule (module docstring).
    After every apply ``|chi| < D`` (``<= D/2`` for ``round`` with nearest rounding), and
    ``sum(delta) = D (k_now - k_0) + chi + dropped``. ``dropped`` is signed, in weight units:
    the levels saturation refused. ``counters["dropped_abs"]`` sums their magnitudes.

    With ``accumulate=False`` there is no accumulator: each update is rounded to whole levels by
    the quantizer's rounding. Nearest rounding then loses every update below D / 2; stochastic
    rounding keeps them in expectation. With ``bits = 32`` the weights are float32 and updates
    are added in float32.

    Args:
        w_init: initial weights, any shape, quantized with the quantizer's rounding.
        quantizer: the grid, range and rounding.
        accumulate: keep the accumulator (mixed precision) or round every update directly.
        transfer: with ``accumulate``, how levels move from the accumulator: ``round`` or
            ``threshold`` (module docstring).

    Raises:
        DataError: ``w_init`` or a ``delta`` is not finite, or a ``delta`` has the wrong shape.
    """

    def __init__(self, w_init, quantizer: Quantizer, accumulate: bool = True, transfer: str = "round"):
        if not isinstance(quantizer, Quantizer):
            raise ConfigError(f"quantizer = {quantizer!r}: expected a Quantizer")
        if not isinstance(accumulate, bool):
            raise ConfigError(f"accumulate = {accumulate!r}: expected true or false")
        if transfer not in TRANSFERS:
            raise ConfigError(f"machine.transfer = {transfer!r}: expected one of {list(TRANSFERS)}")
        self.transfer = transfer
        self.q = quantizer
        w = _finite_array(w_init, "w_init")
        self.shape = w.shape
        self.accumulate = accumulate and not quantizer.passthrough
        self._codes = quantizer.encode(w)  # int codes, or float32 weights for the passthrough
        self._acc = np.zeros(self.shape, np.float32) if self.accumulate else None
        self._cache = None
        self.counters = {"updates": 0, "levels_moved": 0, "dropped": 0.0, "dropped_abs": 0.0}

    @property
    def granularity(self) -> float:
        """One level D in weight units (0.0 for the float32 passthrough)."""
        return 0.0 if self.q.passthrough else self.q.step

    @property
    def codes(self) -> np.ndarray:
        """A copy of the stored codes (int8/int16; float32 weights for bits = 32)."""
        return self._codes.copy()

    @property
    def accumulator(self) -> np.ndarray:
        """A copy of the pending updates chi (float32, weight units); zeros when there is none."""
        return self._acc.copy() if self._acc is not None else np.zeros(self.shape, np.float32)

    @property
    def stored_bytes(self) -> int:
        """Packed bytes of the stored weights (``Quantizer.stored_bytes``)."""
        return self.q.stored_bytes(self.shape)

    @property
    def accumulator_bytes(self) -> int:
        """Bytes of the float32 accumulator (0 without one)."""
        return 0 if self._acc is None else int(self._acc.nbytes)

    def state(self) -> dict:
        """Plain data for a checkpoint (arrays copied): codes, accumulator (None without one),
        counters, the quantizer's settings and random streams; :meth:`load_state` continues bit for bit."""
        return {"kind": "mixed_precision", "shape": list(self.shape), "accumulate": self.accumulate,
                "transfer": self.transfer, "quantizer": self.q.state(), "codes": self._codes.copy(),
                "accumulator": None if self._acc is None else self._acc.copy(), "counters": dict(self.counters)}

    def load_state(self, state: dict, name: str = "store") -> None:
        """Continue from :meth:`state` of a store with the same shape and settings.

        Everything is checked before anything changes: DataError naming ``name`` and the entry
        for other settings, a wrong shape or dtype, non-finite values or codes off the grid."""
        st = _state_dict(state, name, ("kind", "shape", "accumulate", "transfer", "quantizer", "codes",
                                       "accumulator", "counters"))
        _state_equal(st, "kind", name, "mixed_precision")
        _state_equal(st, "shape", name, list(self.shape))
        _state_equal(st, "accumulate", name, self.accumulate)
        _state_equal(st, "transfer", name, self.transfer)
        codes = _state_array(st, "codes", name, self.q.code_dtype, self.shape)
        if not self.q.passthrough and codes.size and int(np.abs(codes.astype(np.int64)).max()) > self.q.levels:
            raise DataError(f"{name}.codes: codes outside [-{self.q.levels}, {self.q.levels}]")
        if self._acc is None:
            if st["accumulator"] is not None:
                raise DataError(f"{name}.accumulator: present; this run's store has no accumulator")
            acc = None
        else:
            acc = _state_array(st, "accumulator", name, np.float32, self.shape)
        counters = _state_counters(st, name, self.counters)
        streams = self.q._check_state(st["quantizer"], f"{name}.quantizer")
        self.q.rng._set(streams)
        self._codes, self._acc, self.counters, self._cache = codes, acc, counters, None

    def program(self, w, t_s: float | None = None) -> None:
        """Store ``w`` (shape ``self.shape``) afresh: encoded with the quantizer's rounding, the
        accumulator cleared. ``t_s`` is ignored. Raises DataError on a wrong shape or NaN."""
        w = _finite_array(w, "w", self.shape)
        self._codes = self.q.encode(w)
        if self._acc is not None:
            self._acc[...] = 0.0
        self._cache = None

    def read(self, t_s: float | None = None) -> np.ndarray:
        """The stored weights as float32, read-only (copy before modifying). ``t_s`` is ignored."""
        if self._cache is None:
            self._cache = self.q.decode(self._codes)
            self._cache.flags.writeable = False
        return self._cache

    def apply(self, delta, t_s: float | None = None) -> None:
        """Add the update ``delta`` (weight units, shape ``self.shape``); ``t_s`` is ignored."""
        d = _finite_array(delta, "delta", self.shape)
        self._cache = None
        self.counters["updates"] += 1
        q = self.q
        if q.passthrough:
            self._codes = (self._codes + d.astype(np.float32)).astype(np.float32)
            return
        if self.accumulate:
            acc = self._acc + d.astype(np.float32)                  # float32 accumulation
            x = acc.astype(np.float64) / q.step
            if self.transfer == "threshold":
                n = np.trunc(x)                                     # whole levels reached
            elif q.rounding == "nearest":
                n = np.rint(x)                                      # nearest to k D + chi
            else:
                n = np.floor(x + q.rng.random(x.shape))             # k D + chi in expectation
            self._acc = (acc - n * q.step).astype(np.float32)       # the remainder, |chi| < D
        else:
            x = np.clip(d / q.step, -2 * q.levels, 2 * q.levels)          # no update moves more than 2L
            if q.rounding == "nearest":
                n = np.rint(x)
            else:
                n = np.floor(x + q.rng.random(x.shape))
        if not n.any():                                             # the usual case for small updates
            return
        n = n.astype(np.int64)
        new = np.clip(self._codes.astype(np.int64) + n, -q.levels, q.levels)
        moved = new - self._codes
        refused = n - moved
        if refused.any():
            self.counters["dropped"] += float(refused.sum()) * q.step
            self.counters["dropped_abs"] += float(np.abs(refused).sum()) * q.step
        self.counters["levels_moved"] += int(np.abs(moved).sum())
        self._codes = new.astype(q.code_dtype)


# ---------------------------------------------------------------------------------------------
# PCM devices
# ---------------------------------------------------------------------------------------------

class PCMWeights:
    """Weights stored on differential PCM pairs: drift, read noise, pulsed programming, refresh.

    State (see the module docstring for the equations):

    * ``G``: (2, *shape) float32, uS, the conductance after the last programming of each device
      (index 0 = G+, 1 = G-);
    * ``t_p``: (2, *shape) float32, s, the time of that programming (float32: a resolution of
      1 ms up to 4.6 hours of emulated time, 8 ms at 28 hours; drift is computed in float64);
    * ``nu``: (2, *shape) float32, drift exponents, fixed per device;
    * ``chi``: (*shape) float32, weight units, updates not yet worth a pulse.

    Args:
        shape: weight array shape.
        params: device parameters (default ``PCMParams()``).
        seed: int >= 0 or SeedSequence.
        w_max: the weight that maps to a full device, ``w = (G+ - G-) w_max / g_max`` (> 0).
        w_init: if given, ``program(w_init, t_s)`` runs at construction; otherwise every device
            starts RESET.
        t_s: construction time, s.
        columns: global ids of the last axis (the post neurons): one random stream per column
            (:class:`Noise`), so a split of the columns over stores draws the same numbers.

    Every random draw covers the whole array, whether or not an entry needs it (a weight with no
    pulse still consumes its programming-noise number), so the numbers a column gets never depend
    on the values in other columns.

    Time must not run backwards: programming at, or reading at, a time before the last
    programming raises DataError. Wrong shapes and non-finite arrays also raise DataError.
    """

    def __init__(self, shape, params: PCMParams | None = None, seed=0, *, w_max: float = 1.0,
                 w_init=None, t_s: float = 0.0, columns=None):
        self.params = PCMParams() if params is None else params
        if not isinstance(self.params, PCMParams):
            raise ConfigError(f"params = {params!r}: expected a PCMParams")
        try:
            self.shape = tuple(int(s) for s in np.atleast_1d(np.asarray(shape, dtype=np.int64)))
        except (TypeError, ValueError):
            raise ConfigError(f"shape = {shape!r}: expected a tuple of integers >= 0") from None
        if any(s < 0 for s in self.shape) or np.ndim(shape) > 1:
            raise ConfigError(f"shape = {shape!r}: expected a tuple of integers >= 0")
        self.w_max = check_real("w_max", w_max, 0.0, strict=True)
        p = self.params
        self._scale = self.w_max / p.g_max_us            # weight units per uS
        #: one pulse in weight units: the granularity of apply()
        self.granularity = p.dg_pulse_us * self._scale
        nu_ss, prog_ss, read_ss = _seed_sequence(seed).spawn(3)
        dev_shape = (2,) + self.shape
        if columns is not None and (not self.shape or len(np.atleast_1d(columns)) != self.shape[-1]):
            raise ConfigError(f"columns: {len(np.atleast_1d(columns))} ids for a store of shape {self.shape}; "
                              "expected one per entry of the last axis")
        self.nu = np.maximum(Noise(nu_ss, columns).normal(p.nu_mean, p.nu_std, dev_shape), 0.0
                             ).astype(np.float32)
        self._prog_rng = Noise(prog_ss, columns)
        self._read_rng = Noise(read_ss, columns)
        t_s = self._time(t_s)
        self._g = np.empty(dev_shape, np.float32)
        self._t = np.full(dev_shape, t_s, np.float32)
        self._acc = np.zeros(self.shape, np.float32)
        self._t_last = t_s
        self._version = 0
        self._cache = None  # (t_s, version, conductances)
        self.counters = {"set_pulses": 0, "resets": 0, "refreshes": 0, "verify_writes": 0, "saturated": 0,
                         "reads": 0}
        self._reset(np.ones(self.shape, bool), t_s)
        if w_init is not None:
            self.program(w_init, t_s)

    # -- accounting ---------------------------------------------------------------------------
    @property
    def devices(self) -> int:
        """Number of PCM devices (two per weight)."""
        return int(self._g.size)

    @property
    def stored_bytes(self) -> int:
        """Bytes of the per-device state this model holds (G, t_p and nu, float32 each:
        12 bytes per device, 24 per weight). On hardware the conductances sit in the crossbar,
        not in SRAM; this is what the emulator holds."""
        return int(self._g.nbytes + self._t.nbytes + self.nu.nbytes)

    @property
    def accumulator_bytes(self) -> int:
        """Bytes of the float32 accumulator of pending updates (digital memory on hardware too)."""
        return int(self._acc.nbytes)

    @property
    def accumulator(self) -> np.ndarray:
        """A copy of the pending updates chi (float32, weight units)."""
        return self._acc.copy()

    # -- checkpoint state ---------------------------------------------------------------------
    def state(self) -> dict:
        """Plain data for a checkpoint (arrays copied): the devices (``g``, ``t_p``, ``nu``), the
        accumulator, the time of the last programming, the counters, the programming and read
        noise streams, and the settings (checked on load); :meth:`load_state` continues bit for bit."""
        return {"kind": "pcm", "shape": list(self.shape), "w_max": self.w_max,
                "params": _plain_params(self.params), "g": self._g.copy(), "t_p": self._t.copy(),
                "nu": self.nu.copy(), "accumulator": self._acc.copy(), "t_last": self._t_last,
                "counters": dict(self.counters), "prog_rng": self._prog_rng.state(),
                "read_rng": self._read_rng.state()}

    def load_state(self, state: dict, name: str = "store") -> None:
        """Continue from :meth:`state` of a store with the same shape, range and device parameters.

        Everything is checked before anything changes: DataError naming ``name`` and the entry
        for other settings, a wrong shape or dtype, non-finite values or conductances outside
        ``[0, g_max]``."""
        st = _state_dict(state, name, ("kind", "shape", "w_max", "params", "g", "t_p", "nu", "accumulator",
                                       "t_last", "counters", "prog_rng", "read_rng"))
        _state_equal(st, "kind", name, "pcm")
        _state_equal(st, "shape", name, list(self.shape))
        _state_equal(st, "w_max", name, self.w_max)
        _state_equal(st, "params", name, _plain_params(self.params))
        dev = (2,) + self.shape
        g = _state_array(st, "g", name, np.float32, dev)
        t_p = _state_array(st, "t_p", name, np.float32, dev)
        nu = _state_array(st, "nu", name, np.float32, dev)
        acc = _state_array(st, "accumulator", name, np.float32, self.shape)
        if g.size and (g.min() < 0 or g.max() > self.params.g_max_us):
            raise DataError(f"{name}.g: conductances outside [0, {self.params.g_max_us}] uS")
        if nu.size and nu.min() < 0:
            raise DataError(f"{name}.nu: negative drift exponents")
        t_last = st["t_last"]
        if type(t_last) is not float or not math.isfinite(t_last):
            raise DataError(f"{name}.t_last = {t_last!r}: expected a finite time in seconds")
        counters = _state_counters(st, name, self.counters)
        prog = self._prog_rng._check_state(st["prog_rng"], f"{name}.prog_rng")
        read = self._read_rng._check_state(st["read_rng"], f"{name}.read_rng")
        self._prog_rng._set(prog)
        self._read_rng._set(read)
        self._g, self._t, self.nu, self._acc = g, t_p, nu, acc
        self._t_last, self.counters = t_last, counters
        self._version += 1
        self._cache = None

    # -- checks -------------------------------------------------------------------------------
    @staticmethod
    def _time(t_s) -> float:
        if isinstance(t_s, bool) or not isinstance(t_s, (int, float, np.integer, np.floating)) \
                or not math.isfinite(t_s):
            raise DataError(f"t_s = {t_s!r}: expected a finite time in seconds")
        return float(t_s)

    def _check_time(self, t_s) -> float:
        t = self._time(t_s)
        if t < self._t_last:
            raise DataError(f"t_s = {t!r} s precedes the last programming at {self._t_last!r} s; "
                            f"expected t_s >= {self._t_last!r}")
        return t

    # -- device physics -----------------------------------------------------------------------
    def _drift(self, g, t_p, nu, t):
        """G(t) = G(t_p) ((t - t_p + t0)/t0)^-nu, float64."""
        t0 = self.params.t0_s
        return g.astype(np.float64) * ((t - t_p.astype(np.float64) + t0) / t0) ** (-nu.astype(np.float64))

    def conductances(self, t_s: float) -> np.ndarray:
        """Noise-free drifted conductances at ``t_s``, (2, *shape) float64 uS, read-only."""
        t = self._time(t_s)
        if t < self._t_last:
            raise DataError(f"t_s = {t!r} s precedes the last programming at {self._t_last!r} s; "
                            f"expected t_s >= {self._t_last!r}")
        if self._cache is not None and self._cache[0] == t and self._cache[1] == self._version:
            return self._cache[2]
        g = self._drift(self._g, self._t, self.nu, t)
        g.flags.writeable = False
        self._cache = (t, self._version, g)
        return g

    def _reset(self, mask, t: float) -> None:
        """RESET both devices of the pairs in ``mask``: G = g_reset + N(0, g_reset_std), clipped."""
        p = self.params
        k = int(mask.sum())
        for d in (0, 1):
            g = np.full(self.shape, p.g_reset_us)
            if p.g_reset_std_us > 0:                  # drawn for every pair (see the class docstring)
                g = g + p.g_reset_std_us * self._prog_rng.standard_normal(self.shape)
            if k:
                self._g[d][mask] = np.clip(g[mask], 0.0, p.g_max_us)
                self._t[d][mask] = t
        if k:
            self.counters["resets"] += 2 * k
            self._version += 1

    def _pulse(self, d: int, n: np.ndarray, t: float) -> None:
        """``n`` (>= 0, per weight) SET pulses on device ``d`` of each pair at time ``t``."""
        m = n > 0
        p = self.params
        # one number per weight, drawn whether or not it gets a pulse (see the class docstring)
        z = self._prog_rng.standard_normal(self.shape) if p.prog_noise_pulse_us > 0 else None
        if not m.any():
            return
        cnt = n[m].astype(np.float64)
        g_now = self._drift(self._g[d][m], self._t[d][m], self.nu[d][m], t)   # drift up to now
        dg = cnt * p.dg_pulse_us
        g_new = g_now + dg
        if z is not None:
            g_new = g_new + p.pulse_noise_std_us(dg) * z[m]
        self.counters["saturated"] += int((g_new > p.g_max_us).sum())
        self._g[d][m] = np.clip(g_new, 0.0, p.g_max_us)
        self._t[d][m] = t
        self.counters["set_pulses"] += int(cnt.sum())
        self._version += 1

    # -- public operations --------------------------------------------------------------------
    def program(self, w_target, t_s: float) -> None:
        """Write ``w_target`` (weight units, shape ``self.shape``) from scratch at ``t_s``.

        Both devices of every pair are RESET. The device of the weight's sign is then written by
        program-and-verify to ``g_T = min(|w| g_max / w_max + g_reset, g_max)``. The ``+ g_reset``
        balances the RESET partner, so that ``G+ - G-`` hits the target. The write error is
        ``N(0, sigma_pv(g_T))``, clipped to ``[0, g_max]``. Weights with ``|w| > w_max`` saturate
        and are counted in ``counters["saturated"]``. The accumulator is cleared.
        """
        w = _finite_array(w_target, "w_target", self.shape)
        t = self._check_time(t_s)
        p = self.params
        self._reset(np.ones(self.shape, bool), t)
        self.counters["saturated"] += int((np.abs(w) > self.w_max).sum())
        g_t = np.minimum(np.abs(w) / self._scale + p.g_reset_us, p.g_max_us)
        for d, m in ((0, w > 0), (1, w < 0)):
            z = self._prog_rng.standard_normal(self.shape) if p.prog_noise_scale > 0 else None
            k = int(m.sum())
            if k == 0:
                continue
            g = g_t[m]
            if z is not None:
                g = g + p.prog_verify_std_us(g) * z[m]
            self._g[d][m] = np.clip(g, 0.0, p.g_max_us)
            self.counters["verify_writes"] += k
        self._acc[...] = 0.0
        self._t_last = t
        self._version += 1

    def refresh(self, t_s: float) -> int:
        """Refresh the saturated pairs (rule in the module docstring). Returns how many pairs."""
        t = self._check_time(t_s)
        p = self.params
        g = self.conductances(t)
        thr = p.refresh_threshold * p.g_max_us
        diff = g[0] - g[1]                                                     # uS
        m = (np.maximum(g[0], g[1]) >= thr) & (np.abs(diff) <= thr - p.dg_pulse_us)
        k = int(m.sum())
        n = np.rint(np.abs(diff) / p.dg_pulse_us)                              # pulses to rewrite |diff|
        # RESET and pulses run (and draw their noise) even when no pair is due: see the class docstring
        self._reset(m, t)
        self._pulse(0, np.where(m & (diff > 0), n, 0), t)
        self._pulse(1, np.where(m & (diff < 0), n, 0), t)
        if k:
            rest = np.where(m, diff - np.sign(diff) * n * p.dg_pulse_us, 0.0)  # uS left over
            self._acc = (self._acc + rest * self._scale).astype(np.float32)
            self.counters["refreshes"] += k
            self._t_last = t
        return k

    def apply(self, delta, t_s: float) -> None:
        """Add ``delta`` (weight units, shape ``self.shape``) by accumulate-then-apply SET pulses at ``t_s``.

        If ``params.refresh`` is on, saturated pairs are refreshed first. Then
        ``chi <- chi + delta``, ``n = trunc(chi / eps)``, and ``chi <- chi - n eps``. Each weight
        gets ``n`` pulses on G+ (n > 0) or ``-n`` pulses on G- (n < 0).
        """
        d = _finite_array(delta, "delta", self.shape)
        t = self._check_time(t_s)
        if self.params.refresh:
            self.refresh(t)
        acc = self._acc + d.astype(np.float32)                                 # float32 accumulator
        n = np.trunc(acc.astype(np.float64) / self.granularity)
        self._acc = (acc - n * self.granularity).astype(np.float32)
        self._pulse(0, np.maximum(n, 0.0), t)
        self._pulse(1, np.maximum(-n, 0.0), t)
        self._t_last = t

    def read(self, t_s: float, noise: bool = True) -> np.ndarray:
        """Effective weights ``(G+ - G-) w_max / g_max`` at ``t_s``, float32, shape ``self.shape``.

        With ``noise`` each device gets fresh read noise ``(read_noise_rel G + read_noise_abs_us) z``
        from the read stream. ``noise=False`` is the noise-free drifted weight and draws nothing.
        """
        g = self.conductances(t_s)
        p = self.params
        self.counters["reads"] += 1
        if noise and (p.read_noise_rel > 0 or p.read_noise_abs_us > 0):
            g = g + (p.read_noise_rel * g + p.read_noise_abs_us) * self._read_rng.standard_normal(g.shape)
        return ((g[0] - g[1]) * self._scale).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Factory for the cores
# ---------------------------------------------------------------------------------------------

def make_weight_store(w_init, *, weight_bits: int = 32, rounding: str = "nearest", synapse: str = "ideal",
                      w_max: float | None = None, headroom: float = 2.0, accumulate: bool = True,
                      transfer: str = "round", pcm: PCMParams | None = None, seed=0, t_s: float = 0.0, columns=None):
    """Build a projection's weight store from the machine options.

    Args:
        w_init: initial weights (any shape).
        weight_bits, rounding: ``machine.weight_bits`` and ``machine.rounding`` (synapse ideal).
        synapse: ``"ideal"`` gives a :class:`MixedPrecisionWeights`; ``"pcm"`` gives a
            :class:`PCMWeights` (which needs ``weight_bits = 32``: the device granularity sets
            the resolution).
        w_max: weight range; None = ``headroom x max|w_init|`` (1.0 if w_init is all 0).
        accumulate: mixed-precision accumulator (ideal synapse with bits < 32).
        transfer: ``machine.transfer``, how the accumulator moves levels (ideal synapse).
        pcm: device parameters (default ``PCMParams()``).
        seed: stochastic rounding / device noise seed.
        t_s: time of the initial programming (PCM).
        columns: global ids of the last axis: one random stream per column (:class:`Noise`), so
            that splitting a projection's columns over cores draws the same numbers per column.

    Returns an object with ``read(t_s)``, ``apply(delta, t_s)``, ``stored_bytes``,
    ``accumulator_bytes``, ``granularity``, ``counters`` and ``shape``.

    Raises:
        ConfigError: naming the ``machine.*`` option that is wrong.
    """
    if synapse not in SYNAPSES:
        raise ConfigError(f"machine.synapse = {synapse!r}: expected one of {list(SYNAPSES)}")
    if weight_bits not in BITS or isinstance(weight_bits, bool):
        raise ConfigError(f"machine.weight_bits = {weight_bits!r}: expected one of {list(BITS)}")
    if rounding not in ROUNDINGS:
        raise ConfigError(f"machine.rounding = {rounding!r}: expected one of {list(ROUNDINGS)}")
    w = _finite_array(w_init, "w_init")
    if w_max is None:
        check_real("headroom", headroom, 0.0, strict=True)
        peak = float(np.abs(w).max()) if w.size else 0.0
        w_max = headroom * peak if peak > 0 else 1.0
    else:
        try:
            check_real("w_max", w_max, 0.0, strict=True)
        except ConfigError:
            raise ConfigError(f"machine.weight_max = {w_max!r}: expected a finite number > 0 or null") from None
    if synapse == "pcm":
        if weight_bits != 32:
            raise ConfigError(f"machine.weight_bits = {weight_bits!r} has no meaning with machine.synapse = pcm "
                              "(the device granularity machine.pcm.dg_pulse_us sets the resolution); expected 32")
        return PCMWeights(w.shape, pcm, seed, w_max=w_max, w_init=w, t_s=t_s, columns=columns)
    return MixedPrecisionWeights(w, Quantizer(weight_bits, w_max, rounding, seed, columns), accumulate=accumulate,
                                 transfer=transfer)
