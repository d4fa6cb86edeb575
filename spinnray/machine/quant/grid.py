"""Digital low-precision weights: the quantization grid and the accumulate-then-apply store.

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

Grids that widen (``growth > 1``, with the accumulator only)
--------------------------------------------------------------
Each column (the last axis: a post neuron's incoming weights) has its own step ``D_j = D 2**s_j``,
``s_j`` starting at 0.  When an apply would move one of the column's stored weights past ``+-L``,
the column's grid doubles first: ``k <- rint(k / 2)`` (ties to even), ``chi <- chi + (k_old - 2 k) D_j``,
``s_j <- s_j + 1``, so the high-precision weight ``k D_j + chi`` is unchanged, and the levels are
recomputed with the same random numbers.  This repeats up to ``s_j = log2(growth)``; past that,
saturation refuses the update as before (counted).  A column is a post neuron, whose incoming weights
one core holds whole, so the decision is the same whatever the split over cores, the number of
replicas (which apply identical updates) or the backend.  On a chip ``s_j`` is a per-neuron shift
of the fixed-point weights: one byte per post neuron.  Why widen rather than pick a wider grid:
a fixed range that holds the trained weights (recurrent ones grow 6-10x) leaves the small initial
weights below one level, so they round to 0 and their updates wait for whole levels, while a grid
that fits the initial weights saturates in training (bench/RESULTS.md, issue 26 part 4).
"""

from __future__ import annotations

import math

import numpy as np

from spinnray.checks import check_real
from spinnray.config import BITS, ROUNDINGS, TRANSFERS, check_growth
from spinnray.errors import ConfigError, DataError
from spinnray.machine.quant.streams import (
    Noise,
    finite_array,
    state_array,
    state_counters,
    state_dict,
    state_equal,
)

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

    def encode(self, w, rng: np.random.Generator | None = None, scale=None) -> np.ndarray:
        """Codes of ``w``: int8 (bits <= 8) or int16 (bits = 16) in ``[-L, L]``, same shape as ``w``.

        ``rng`` (stochastic rounding only) overrides the quantizer's own generator. ``scale``
        (broadcast against ``w``, None = 1) multiplies the step: a widened column's grid. For bits = 32
        the "codes" are ``w`` as float32. Raises DataError on NaN or infinite weights.
        """
        w = finite_array(w, "w")
        if self.passthrough:
            return w.astype(np.float32)
        step = self.step if scale is None else self.step * scale
        x = np.clip(w / step, -self.levels, self.levels)
        if self.rounding == "nearest":
            k = np.rint(x)
        else:
            u = (rng if rng is not None else self.rng).random(x.shape)
            # x <= L and u < 1, but L + u can round up to L + 1 in float64 when u is within ~2^-46 of 1
            k = np.minimum(np.floor(x + u), self.levels)
        return k.astype(self.code_dtype)

    def decode(self, codes, scale=None) -> np.ndarray:
        """Weights ``codes x D`` (x ``scale``, as in :meth:`encode`) as float32 (computed in float64,
        rounded once)."""
        c = np.asarray(codes)
        if self.passthrough:
            return c.astype(np.float32)
        step = self.step if scale is None else self.step * scale
        return (c.astype(np.float64) * step).astype(np.float32)

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
        st = state_dict(state, name, ("bits", "w_max", "rounding", "rng"))
        for key in ("bits", "w_max", "rounding"):
            state_equal(st, key, name, getattr(self, key))
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

    # a fixed grid; class-level so that a store unpickled from a format-1 checkpoint (before grids
    # widened) has them (spinnray.experiments.checkpoint.convert)
    growth, max_shift, _shift = 1.0, 0, None

    def __init__(self, w_init, quantizer: Quantizer, accumulate: bool = True, transfer: str = "round",
                 growth: float = 1.0):
        if not isinstance(quantizer, Quantizer):
            raise ConfigError(f"quantizer = {quantizer!r}: expected a Quantizer")
        if not isinstance(accumulate, bool):
            raise ConfigError(f"accumulate = {accumulate!r}: expected true or false")
        if transfer not in TRANSFERS:
            raise ConfigError(f"machine.transfer = {transfer!r}: expected one of {list(TRANSFERS)}")
        self.transfer = transfer
        self.q = quantizer
        w = finite_array(w_init, "w_init")
        self.shape = w.shape
        self.accumulate = accumulate and not quantizer.passthrough
        self.growth = check_growth(growth)
        widens = self.growth > 1 and not quantizer.passthrough
        if widens and not self.accumulate:
            raise ConfigError(f"machine.weight_range_growth = {growth!r} needs machine.accumulate = true (a grid "
                              "that widens keeps the part of a weight below its new step in the accumulator)")
        if widens and not w.ndim:
            raise ConfigError("machine.weight_range_growth: a grid that widens needs weights with a column axis")
        #: the largest shift of a column's step (log2 growth); 0 = a fixed grid
        self.max_shift = int(round(math.log2(self.growth))) if widens else 0
        #: per column, the power of 2 its step has grown by (None for a fixed grid)
        self._shift = np.zeros(self.shape[-1], np.int8) if self.max_shift else None
        self._codes = self._encode_fitting(w)  # int codes, or float32 weights for the passthrough
        self._acc = np.zeros(self.shape, np.float32) if self.accumulate else None
        self._cache = None
        self.counters = {"updates": 0, "levels_moved": 0, "dropped": 0.0, "dropped_abs": 0.0}
        if self._shift is not None:
            self.counters["widened"] = 0

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

    def at_limit(self) -> int:
        """Stored weights at the grid's limit, ``+-w_max`` (0 for the float32 passthrough): where an
        update further out is refused (``counters["dropped_abs"]``).  A grid that widens counts only
        the columns that cannot widen any more."""
        if self.q.passthrough:
            return 0
        at = np.abs(self._codes.astype(np.int16)) == self.q.levels
        if self._shift is not None:
            at &= self._shift == self.max_shift
        return int(np.count_nonzero(at))

    @property
    def accumulator_bytes(self) -> int:
        """Bytes of the float32 accumulator (0 without one)."""
        return 0 if self._acc is None else int(self._acc.nbytes)

    @property
    def shifts(self) -> np.ndarray | None:
        """A copy of each column's step growth as a power of 2 (int8), None for a fixed grid."""
        return None if self._shift is None else self._shift.copy()

    def growth_reached(self) -> float:
        """The largest factor any column's grid has widened by (1.0 for a fixed grid)."""
        return 1.0 if self._shift is None or not self._shift.size else float(2.0 ** int(self._shift.max()))

    def _scale(self):
        """Per column, the factor on the quantizer's step (None for a fixed grid)."""
        return None if self._shift is None else np.ldexp(1.0, self._shift.astype(np.int64))

    def _encode_fitting(self, w: np.ndarray) -> np.ndarray:
        """Codes of ``w``; a grid that widens first gets, per column, the smallest shift (up to
        ``max_shift``) whose range holds the column's largest |weight|."""
        if self._shift is not None and w.size:
            peak = np.abs(w).reshape(-1, self.shape[-1]).max(axis=0)
            # a weight within half a level past the limit rounds onto it: no reason to widen
            need = np.ceil(np.log2(np.maximum(peak / (self.q.w_max * (1 + 0.5 / self.q.levels)), 1.0)))
            self._shift = np.minimum(need, self.max_shift).astype(np.int8)
        return self.q.encode(w, scale=self._scale())

    def state(self) -> dict:
        """Plain data for a checkpoint (arrays copied): codes, accumulator (None without one),
        counters, the quantizer's settings and random streams (and for a grid that widens, its
        ``growth`` and the columns' ``shift``); :meth:`load_state` continues bit for bit."""
        out = {"kind": "mixed_precision", "shape": list(self.shape), "accumulate": self.accumulate,
               "transfer": self.transfer, "quantizer": self.q.state(), "codes": self._codes.copy(),
               "accumulator": None if self._acc is None else self._acc.copy(), "counters": dict(self.counters)}
        if self._shift is not None:
            out.update(growth=self.growth, shift=self._shift.copy())
        return out

    def load_state(self, state: dict, name: str = "store") -> None:
        """Continue from :meth:`state` of a store with the same shape and settings.

        Everything is checked before anything changes: DataError naming ``name`` and the entry
        for other settings, a wrong shape or dtype, non-finite values or codes off the grid."""
        widens = self._shift is not None
        st = state_dict(state, name, ("kind", "shape", "accumulate", "transfer", "quantizer", "codes",
                                       "accumulator", "counters") + (("growth", "shift") if widens else ()))
        state_equal(st, "kind", name, "mixed_precision")
        if widens:
            state_equal(st, "growth", name, self.growth)
            shift = state_array(st, "shift", name, np.int8, self._shift.shape)
            if shift.size and (int(shift.min()) < 0 or int(shift.max()) > self.max_shift):
                raise DataError(f"{name}.shift: shifts outside [0, {self.max_shift}]")
        state_equal(st, "shape", name, list(self.shape))
        state_equal(st, "accumulate", name, self.accumulate)
        state_equal(st, "transfer", name, self.transfer)
        codes = state_array(st, "codes", name, self.q.code_dtype, self.shape)
        if not self.q.passthrough and codes.size and int(np.abs(codes.astype(np.int64)).max()) > self.q.levels:
            raise DataError(f"{name}.codes: codes outside [-{self.q.levels}, {self.q.levels}]")
        if self._acc is None:
            if st["accumulator"] is not None:
                raise DataError(f"{name}.accumulator: present; this run's store has no accumulator")
            acc = None
        else:
            acc = state_array(st, "accumulator", name, np.float32, self.shape)
        counters = state_counters(st, name, self.counters)
        streams = self.q._check_state(st["quantizer"], f"{name}.quantizer")
        self.q.rng._set(streams)
        self._codes, self._acc, self.counters, self._cache = codes, acc, counters, None
        if widens:
            self._shift = shift

    def program(self, w, t_s: float | None = None) -> None:
        """Store ``w`` (shape ``self.shape``) afresh: encoded with the quantizer's rounding, the
        accumulator cleared. ``t_s`` is ignored. Raises DataError on a wrong shape or NaN."""
        w = finite_array(w, "w", self.shape)
        self._codes = self._encode_fitting(w)
        if self._acc is not None:
            self._acc[...] = 0.0
        self._cache = None

    def read(self, t_s: float | None = None) -> np.ndarray:
        """The stored weights as float32, read-only (copy before modifying). ``t_s`` is ignored."""
        if self._cache is None:
            self._cache = self.q.decode(self._codes, self._scale())
            self._cache.flags.writeable = False
        return self._cache

    def apply(self, delta, t_s: float | None = None) -> None:
        """Add the update ``delta`` (weight units, shape ``self.shape``); ``t_s`` is ignored."""
        d = finite_array(delta, "delta", self.shape)
        self._cache = None
        self.counters["updates"] += 1
        q = self.q
        if q.passthrough:
            self._codes = (self._codes + d.astype(np.float32)).astype(np.float32)
            return
        if self.accumulate:
            acc = self._acc + d.astype(np.float32)                  # float32 accumulation
            u = q.rng.random(acc.shape) if q.rounding == "stochastic" and self.transfer == "round" else None
            n, step = self._levels(acc, u)
            while self._shift is not None:
                over = (np.abs(self._codes.astype(np.int64) + n) > q.levels).reshape(-1, self.shape[-1]).any(axis=0)
                over &= self._shift < self.max_shift
                if not over.any():
                    break
                acc = self._widen(over, acc, step)
                n, step = self._levels(acc, u)
            self._acc = (acc - n * step).astype(np.float32)          # the remainder, |chi| < D
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
        if refused.any() and self._shift is None:
            self.counters["dropped"] += float(refused.sum()) * q.step
            self.counters["dropped_abs"] += float(np.abs(refused).sum()) * q.step
        elif refused.any():
            step = q.step * self._scale()
            self.counters["dropped"] += float((refused * step).sum())
            self.counters["dropped_abs"] += float((np.abs(refused) * step).sum())
        self.counters["levels_moved"] += int(np.abs(moved).sum())
        self._codes = new.astype(q.code_dtype)

    def _levels(self, acc: np.ndarray, u: np.ndarray | None):
        """Whole levels the transfer rule moves out of ``acc`` (int64 array) and the step(s) used:
        ``u`` holds stochastic rounding's numbers, drawn once per apply."""
        step = self.q.step if self._shift is None else self.q.step * self._scale()
        x = acc.astype(np.float64) / step
        if self.transfer == "threshold":
            n = np.trunc(x)                                         # whole levels reached
        elif u is None:
            n = np.rint(x)                                          # nearest to k D + chi
        else:
            n = np.floor(x + u)                                     # k D + chi in expectation
        return n.astype(np.int64), step

    def _widen(self, over: np.ndarray, acc: np.ndarray, step) -> np.ndarray:
        """Double the step of the columns ``over``: codes halved to the nearest (ties to even),
        what that moves goes to the accumulator, so ``k D + chi`` is unchanged.  Returns the new
        accumulator."""
        k = self._codes.astype(np.int64)
        half = np.rint(k / 2.0).astype(np.int64)
        cols = np.broadcast_to(over, k.shape)
        rest = np.where(cols, (k - 2 * half) * step, 0.0)
        self._codes = np.where(cols, half, k).astype(self.q.code_dtype)
        self._shift = (self._shift + over).astype(np.int8)
        self.counters["widened"] += int(over.sum())
        self._cache = None
        return (acc.astype(np.float64) + rest).astype(np.float32)

