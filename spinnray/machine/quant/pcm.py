"""A phase-change-memory synapse store.

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
"""

from __future__ import annotations

import math

import numpy as np

from spinnray.checks import check_real
from spinnray.config import PCMParams
from spinnray.errors import ConfigError, DataError
from spinnray.machine.quant.streams import (
    Noise,
    finite_array,
    plain_params,
    seed_sequence,
    state_array,
    state_counters,
    state_dict,
    state_equal,
)

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
        nu_ss, prog_ss, read_ss = seed_sequence(seed).spawn(3)
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
                "params": plain_params(self.params), "g": self._g.copy(), "t_p": self._t.copy(),
                "nu": self.nu.copy(), "accumulator": self._acc.copy(), "t_last": self._t_last,
                "counters": dict(self.counters), "prog_rng": self._prog_rng.state(),
                "read_rng": self._read_rng.state()}

    def load_state(self, state: dict, name: str = "store") -> None:
        """Continue from :meth:`state` of a store with the same shape, range and device parameters.

        Everything is checked before anything changes: DataError naming ``name`` and the entry
        for other settings, a wrong shape or dtype, non-finite values or conductances outside
        ``[0, g_max]``."""
        st = state_dict(state, name, ("kind", "shape", "w_max", "params", "g", "t_p", "nu", "accumulator",
                                       "t_last", "counters", "prog_rng", "read_rng"))
        state_equal(st, "kind", name, "pcm")
        state_equal(st, "shape", name, list(self.shape))
        state_equal(st, "w_max", name, self.w_max)
        state_equal(st, "params", name, plain_params(self.params))
        dev = (2,) + self.shape
        g = state_array(st, "g", name, np.float32, dev)
        t_p = state_array(st, "t_p", name, np.float32, dev)
        nu = state_array(st, "nu", name, np.float32, dev)
        acc = state_array(st, "accumulator", name, np.float32, self.shape)
        if g.size and (g.min() < 0 or g.max() > self.params.g_max_us):
            raise DataError(f"{name}.g: conductances outside [0, {self.params.g_max_us}] uS")
        if nu.size and nu.min() < 0:
            raise DataError(f"{name}.nu: negative drift exponents")
        t_last = st["t_last"]
        if type(t_last) is not float or not math.isfinite(t_last):
            raise DataError(f"{name}.t_last = {t_last!r}: expected a finite time in seconds")
        counters = state_counters(st, name, self.counters)
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
        w = finite_array(w_target, "w_target", self.shape)
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
        d = finite_array(delta, "delta", self.shape)
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
