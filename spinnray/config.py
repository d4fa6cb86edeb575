"""Typed configuration: what Hydra composes reaches library code as these objects.

Each section is a frozen dataclass whose fields carry a one-line ``help``,
and optionally ``choices``, ``min`` and ``max``.  :func:`from_dict` builds a
section from a plain mapping (an OmegaConf container), refusing unknown keys,
wrong types and out-of-range values with a :class:`ConfigError` that names the
dotted key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinnray.checks import check_real
from spinnray.errors import ConfigError

__all__ = ["MachineConfig", "ParallelConfig", "ClusterConfig", "RunConfig", "from_dict", "opt", "describe"]


#: the longest path, and path component, a ``path=True`` option accepts (Linux's PATH_MAX and NAME_MAX)
MAX_PATH, MAX_NAME = 4096, 255


def opt(default, help: str, *, choices=None, min=None, max=None, factory=None, path: bool = False):
    """A dataclass field with validation metadata (``path``: a file system path, refused when
    empty, too long or holding a NUL byte)."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "path": path}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


_NAMES = {type(None): "null", str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _type_name(tp) -> str:
    return _NAMES.get(tp, getattr(tp, "__name__", str(tp).replace("typing.", "")))


def _coerce(value, tp, key: str):
    """Check ``value`` against the annotation ``tp``; ints pass as floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            try:
                return _coerce(value, arm, key)
            except ConfigError as e:
                errors.append(e)
        allowed = " or ".join(_type_name(a) for a in typing.get_args(tp))
        raise ConfigError(f"{key} = {value!r}: expected {allowed}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key} = {value!r}: expected null")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} = {value!r}: expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} = {value!r}: expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise ConfigError(f"{key} = {value!r}: expected a finite number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} = {value!r}: expected a string")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} = {value!r}: expected a list")
        (arm, *_) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(v, arm, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} = {value!r}: expected a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")  # a programming error, named


def from_dict(cls, data, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping, validating every field."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__} = {data!r}: expected a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        near = difflib.get_close_matches(unknown[0], names, n=3, cutoff=0.6)
        raise ConfigError(f"{prefix + '.' if prefix else ''}{unknown[0]}: unknown key; "
                          + (f"did you mean {' or '.join(near)}? " if near else "") + f"allowed keys are {names}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = _coerce(data[f.name], hints[f.name], key)
        meta = f.metadata
        if meta.get("choices") is not None and value is not None and value not in meta["choices"]:
            raise ConfigError(f"{key} = {value!r}: expected one of {list(meta['choices'])}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if meta.get("min") is not None and value < meta["min"]:
                raise ConfigError(f"{key} = {value!r}: expected >= {meta['min']}")
            if meta.get("max") is not None and value > meta["max"]:
                raise ConfigError(f"{key} = {value!r}: expected <= {meta['max']}")
        if meta.get("path") and isinstance(value, str):
            check_path(key, value)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix}: {e}" if prefix else str(e)) from None


def check_path(key: str, value: str) -> str:
    """``value`` if it can name a file or directory; ConfigError naming ``key`` otherwise."""
    if not value.strip():
        raise ConfigError(f"{key} = {value!r}: expected a path, or null for the default")
    if "\x00" in value:
        raise ConfigError(f"{key}: the path holds a NUL byte")
    if len(value) > MAX_PATH or any(len(part) > MAX_NAME for part in value.split("/")):
        raise ConfigError(f"{key} = {value[:60]!r}... ({len(value)} characters): expected a path of at most "
                          f"{MAX_PATH} characters, each component at most {MAX_NAME}")
    return value


def check_projection_factors(key: str, value) -> None:
    """ConfigError naming ``key`` unless ``value`` is null or maps projection names to finite
    factors > 0 (``machine.weight_ranges``, ``learning.lr_scale``)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ConfigError(f"{key} = {value!r}: expected a mapping of projection name to factor")
    for name, f in value.items():
        if not isinstance(name, str) or isinstance(f, bool) or not isinstance(f, (int, float)) \
                or not math.isfinite(f) or f <= 0:
            raise ConfigError(f"{key}[{name!r}] = {f!r}: expected a projection name and a finite factor > 0")


def describe(cls) -> list[tuple[str, Any, str]]:
    """(name, default, help) of every field: used to document the options."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append((f.name, default, f.metadata.get("help", "")))
    return out


#: the weight options of the learning cores (:mod:`spinnray.machine.quant`)
BITS = (32, 16, 8, 4, 2)
ROUNDINGS = ("nearest", "stochastic")
#: the default range factor of a recurrent projection's digital grid (MachineConfig.weight_range_recurrent)
RECURRENT_HEADROOM = 7.0
TRANSFERS = ("round", "threshold")
#: the default of MachineConfig.weight_range_growth for digital grids with an accumulator
RANGE_GROWTH = 64.0
#: the default range factors (MachineConfig.weight_range) of a fixed grid or PCM, and of a grid that widens
FIXED_HEADROOM, WIDENING_HEADROOM = 2.0, 1.0
SYNAPSES = ("ideal", "pcm")
ROUTER_UNITS = ("chip", "node")     # what one router serves (ClusterConfig.router_per)

def check_growth(growth) -> float:
    """``machine.weight_range_growth`` as a float: a power of 2 from 1 to 2**7 (ConfigError otherwise)."""
    ok = isinstance(growth, (int, float)) and not isinstance(growth, bool) and math.isfinite(growth) \
        and 1 <= growth <= 128 and float(growth) == 2.0 ** round(math.log2(growth))
    if not ok:
        raise ConfigError(f"machine.weight_range_growth = {growth!r}: expected a power of 2 from 1 to 128 "
                          "(1 = a fixed grid)")
    return float(growth)


# g_max (uS) at which the program-and-verify polynomial was fitted (Joshi et al. 2020; aihwkit)
_PV_G_REF_US = 25.0


@dataclass(frozen=True)
class PCMParams:
    """Parameters of the PCM synapse model. Every default is sourced in its ``help``.

    Sources: [N18] Nandakumar et al., "A phase-change memory model for neuromorphic computing",
    J. Appl. Phys. 124, 152135 (2018), with constants as coded in Demirag et al.'s SRNN-PCM
    (github YigitDemirag/srnn-pcm, xbar.py). [D21] Demirag, Frenkel, Payvand, Indiveri 2021
    (arXiv 2108.01804), same code. [J20] Nandakumar et al. ICECS 2019 and Joshi et al.,
    Nat. Commun. 11:2473 (2020), the fits in IBM aihwkit's ``PCMLikeNoiseModel``.

    Raises:
        ConfigError: naming the field (``PCMParams.<field>``), its value and what is allowed.
    """

    g_max_us: float = opt(25.0, "largest conductance of one device, uS [J20: g_max = 25 uS]")
    g_reset_us: float = opt(0.1, "conductance after a RESET pulse (amorphous state), uS [N18/D21: G0 = 0.1 uS]",
                            min=0.0)
    g_reset_std_us: float = opt(0.01, "std of the RESET conductance, uS [N18/D21: 10 % of G0]", min=0.0)
    dg_pulse_us: float = opt(0.75, "mean conductance step of one SET pulse = device granularity, uS "
                             "[D21: 0.75 uS, 'minimum achievable conductance jump'; N18: 0.88 uS at low G]")
    prog_noise_pulse_us: float = opt(0.26, "std of one SET pulse's step, uS; n pulses: 0.26 sqrt(n) "
                                     "[N18: 0.26 uS at low G, the growth 0.091 uS/uS is not modeled]", min=0.0)
    prog_verify_coeffs: tuple[float, ...] = opt(
        None, "program-and-verify error std polynomial c0 + c1 x + c2 x^2 in x = g_T/g_max, uS at g_max = 25 uS "
        "(scaled by g_max/25) [J20: 0.26348, 1.9650, -1.1731]",
        factory=lambda: (0.26348, 1.9650, -1.1731))
    prog_noise_scale: float = opt(1.0, "factor on the program-and-verify error (0 = exact writes) [J20]", min=0.0)
    read_noise_rel: float = opt(0.03, "read noise std relative to G(t), per read [N18: 0.03]", min=0.0)
    read_noise_abs_us: float = opt(0.13, "read noise std floor, uS, per read [N18: 0.13 uS]", min=0.0)
    nu_mean: float = opt(0.05, "mean drift exponent [J20 fit: 0.049 at g_T >= 0.6 g_max, 0.06 at 0.1 g_max]",
                         min=0.0)
    nu_std: float = opt(0.01, "per-device spread of the drift exponent (nu clipped at 0) "
                        "[J20 fit: 0.008 to 0.023 over g_T in 0.1-1 g_max]", min=0.0)
    t0_s: float = opt(20.0, "drift reference time t0, s: G(t) = G(t_p) ((t - t_p + t0)/t0)^-nu "
                      "[J20: t0 = 20 s; N18 used 38.6 s]")
    refresh: bool = opt(True, "refresh a pair whose larger device has reached refresh_threshold g_max [D21]")
    refresh_threshold: float = opt(0.75, "refresh level as a fraction of g_max [D21: 9 uS of G_max 12 uS]",
                                   min=0.0, max=1.0)

    def __post_init__(self):
        def f(name):
            return f"PCMParams.{name}"

        check_real(f("g_max_us"), self.g_max_us, 0.0, strict=True)
        check_real(f("t0_s"), self.t0_s, 0.0, strict=True)
        check_real(f("dg_pulse_us"), self.dg_pulse_us, 0.0, strict=True)
        for name in ("g_reset_us", "g_reset_std_us", "prog_noise_pulse_us", "prog_noise_scale",
                     "read_noise_rel", "read_noise_abs_us", "nu_mean", "nu_std"):
            check_real(f(name), getattr(self, name), 0.0)
        if self.dg_pulse_us > self.g_max_us:
            raise ConfigError(f"{f('dg_pulse_us')} = {self.dg_pulse_us!r}: expected <= g_max_us = {self.g_max_us}")
        if self.g_reset_us >= self.g_max_us:
            raise ConfigError(f"{f('g_reset_us')} = {self.g_reset_us!r}: expected < g_max_us = {self.g_max_us}")
        if not isinstance(self.refresh, bool):
            raise ConfigError(f"{f('refresh')} = {self.refresh!r}: expected true or false")
        thr = self.refresh_threshold
        check_real(f("refresh_threshold"), thr, 0.0, strict=True)
        if thr > 1.0:
            raise ConfigError(f"{f('refresh_threshold')} = {thr!r}: expected a fraction of g_max in (0, 1]")
        if self.refresh and thr * self.g_max_us - self.dg_pulse_us <= self.g_reset_us:
            raise ConfigError(f"{f('refresh_threshold')} = {thr!r}: refresh_threshold * g_max_us - dg_pulse_us "
                              f"= {thr * self.g_max_us - self.dg_pulse_us:g} uS must exceed g_reset_us = "
                              f"{self.g_reset_us} uS, or a refresh frees no headroom")
        c = self.prog_verify_coeffs
        if not isinstance(c, (tuple, list)) or len(c) == 0 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in c):
            raise ConfigError(f"{f('prog_verify_coeffs')} = {c!r}: expected a non-empty list of finite numbers")
        object.__setattr__(self, "prog_verify_coeffs", tuple(float(v) for v in c))

    @classmethod
    def noise_free(cls, **overrides) -> PCMParams:
        """All stochastic effects off (programming, RESET spread, read noise, nu spread); drift with
        ``nu = nu_mean`` kept. Keyword overrides apply on top."""
        base = dict(g_reset_std_us=0.0, prog_noise_pulse_us=0.0, prog_noise_scale=0.0, read_noise_rel=0.0,
                    read_noise_abs_us=0.0, nu_std=0.0)
        base.update(overrides)
        return cls(**base)

    def replace(self, **changes) -> PCMParams:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def prog_verify_std_us(self, g_target_us) -> np.ndarray:
        """Program-and-verify error std (uS) for target conductances ``g_target_us`` (uS)."""
        x = np.asarray(g_target_us, np.float64) / self.g_max_us
        poly = np.zeros_like(x)
        for i, c in enumerate(self.prog_verify_coeffs):
            poly = poly + c * x ** i
        return self.prog_noise_scale * np.maximum(poly, 0.0) * (self.g_max_us / _PV_G_REF_US)

    def pulse_noise_std_us(self, dg_us) -> np.ndarray:
        """Programming noise std (uS) of a pulsed change of nominal size ``dg_us = n dg_pulse_us``:
        ``prog_noise_pulse_us sqrt(|dg_us| / dg_pulse_us)``."""
        return self.prog_noise_pulse_us * np.sqrt(np.abs(np.asarray(dg_us, np.float64)) / self.dg_pulse_us)



@dataclass(frozen=True)
class MachineConfig:
    """The emulated SpiNNaker2 machine."""

    name: str = opt("spinnaker2", "a label for reports")
    pes_per_chip: int = opt(152, "processing elements (ARM cores) per chip", min=1, max=4096)
    sram_per_pe_bytes: int = opt(131072, "local SRAM of one PE in bytes (128 KB on SpiNNaker2)", min=1, max=2**34)
    neurons_per_core: int = opt(256, "most neurons one PE may hold", min=1, max=65536)
    routing_entries_per_chip: int = opt(1024, "routing-table entries per chip router", min=1, max=2**24)
    chips: int = opt(64, "chips available to place slices on", min=1, max=2**20)
    dtype: str = opt("float32", "arithmetic of weights and state on the cores",
                     choices=("float32", "float64"))
    strict: bool = opt(True, "raise on any dropped or rejected packet (they are always counted)")
    weight_bits: int = opt(32, "bits per stored weight of the learning cores (e-prop and EventProp): 32 (float32, "
                               "unquantized) | 16 | 8 | 4 | 2", choices=BITS)
    rounding: str = opt("nearest", "rounding onto the weight grid: nearest | stochastic (unbiased)",
                        choices=ROUNDINGS)
    accumulate: bool = opt(True, "mixed precision: add updates to a float32 accumulator and move the stored "
                                 "weight only by whole levels (false: round every update)")
    transfer: str = opt("round", "with accumulate: round (the stored weight is the high-precision weight rounded "
                                 "onto the grid with machine.rounding) | threshold (a level moves only once the "
                                 "pending update reaches it, as device pulses do)", choices=TRANSFERS)
    weight_max: float | None = opt(None, "weight range +-weight_max of the grid / PCM pair; null = a factor x max "
                                         "|initial weight| (weight_range, weight_range_recurrent, weight_ranges; "
                                         "see weight_range_scope) (> 0)")
    weight_range: float | None = opt(None, "with weight_max null: the grid of a feed-forward projection starts at "
                                           "+-weight_range x max |initial weight| (see weight_range_scope); "
                                           "null = 1 for digital grids that widen (weight_range_growth), 2 for "
                                           "fixed grids and PCM (> 0)")
    weight_range_recurrent: float | None = opt(None, "with weight_max null: the same factor for recurrent projections "
                                                     "(pre is post), which start small and grow about 6-10x in "
                                                     "training (bench/RESULTS.md); null = 7 for fixed digital grids, "
                                                     "weight_range for grids that widen and for PCM (> 0)")
    weight_ranges: dict | None = opt(None, "with weight_max null: per-projection range factors replacing weight_range, keyed "
                                    "by projection name, pre->post or pre_to_post (e.g. {hidden_to_hidden: 6}: "
                                    "recurrent weights that grow far past their initial peak); null = none", factory=dict)
    weight_range_scope: str | None = opt(None, "with weight_max null, whose largest initial weight the factor "
                                               "multiplies: projection (each projection its own grid) | population "
                                               "(all projections into it: a core's input and recurrent weights "
                                               "share the larger peak); null = projection for digital weights, "
                                               "population for PCM", choices=("population", "projection"))
    weight_range_growth: float | None = opt(None, "how far each post neuron's digital grid may widen in training: its "
                                                  "step doubles whenever an update would move one of its weights "
                                                  "past the limit, up to this factor of the initial range (a power "
                                                  "of 2, 1 = a fixed grid; needs accumulate); null = 64 for digital "
                                                  "weights with accumulate, else 1")
    synapse: str = opt("ideal", "ideal (digital store of weight_bits) | pcm (differential PCM pairs: programming "
                                "and read noise, drift; needs weight_bits 32)", choices=SYNAPSES)
    pcm: PCMParams = opt(None, "PCM device parameters (machine.synapse = pcm)", factory=PCMParams)
    weight_seed: int = opt(0, "seed of stochastic rounding and PCM noise (per projection and neuron)", min=0,
                           max=2**63 - 1)

    def __post_init__(self):
        # the weight-storage options, also when built directly (from_dict checks the rest)
        if self.weight_bits not in BITS or isinstance(self.weight_bits, bool):
            raise ConfigError(f"machine.weight_bits = {self.weight_bits!r}: expected one of {list(BITS)}")
        if self.rounding not in ROUNDINGS:
            raise ConfigError(f"machine.rounding = {self.rounding!r}: expected one of {list(ROUNDINGS)}")
        if self.synapse not in SYNAPSES:
            raise ConfigError(f"machine.synapse = {self.synapse!r}: expected one of {list(SYNAPSES)}")
        if not isinstance(self.accumulate, bool):
            raise ConfigError(f"machine.accumulate = {self.accumulate!r}: expected true or false")
        if self.transfer not in TRANSFERS:
            raise ConfigError(f"machine.transfer = {self.transfer!r}: expected one of {list(TRANSFERS)}")
        if self.weight_range_scope not in ("population", "projection", None):
            raise ConfigError(f"machine.weight_range_scope = {self.weight_range_scope!r}: expected population, "
                              "projection or null")
        wm = self.weight_max
        if wm is not None and (isinstance(wm, bool) or not isinstance(wm, (int, float))
                               or not math.isfinite(wm) or wm <= 0):
            raise ConfigError(f"machine.weight_max = {wm!r}: expected a finite number > 0 or null")
        if self.weight_ranges is None:
            object.__setattr__(self, "weight_ranges", {})
        wr = self.weight_range
        if wr is not None and (isinstance(wr, bool) or not isinstance(wr, (int, float))
                               or not math.isfinite(wr) or wr <= 0):
            raise ConfigError(f"machine.weight_range = {wr!r}: expected a finite number > 0 or null")
        wrr = self.weight_range_recurrent
        if wrr is not None and (isinstance(wrr, bool) or not isinstance(wrr, (int, float))
                                or not math.isfinite(wrr) or wrr <= 0):
            raise ConfigError(f"machine.weight_range_recurrent = {wrr!r}: expected a finite number > 0 or null")
        check_projection_factors("machine.weight_ranges", self.weight_ranges)
        if self.weight_range_growth is not None:
            check_growth(self.weight_range_growth)
            if self.weight_range_growth > 1 and self.synapse == "pcm":
                raise ConfigError(f"machine.weight_range_growth = {self.weight_range_growth!r} with machine.synapse "
                                  "= pcm: expected 1 or null (a PCM pair's range is its devices' conductance)")
            if self.weight_range_growth > 1 and not self.accumulate:
                raise ConfigError(f"machine.weight_range_growth = {self.weight_range_growth!r} with "
                                  "machine.accumulate = false: expected 1 or null (a grid that widens keeps the "
                                  "part of a weight below its new step in the accumulator)")
        if self.synapse == "pcm" and self.weight_bits != 32:
            raise ConfigError(f"machine.weight_bits = {self.weight_bits} with machine.synapse = pcm: expected 32 "
                              "(the PCM pulse granularity, machine.pcm.dg_pulse_us, sets the resolution)")
        if isinstance(self.pcm, dict):
            object.__setattr__(self, "pcm", from_dict(PCMParams, self.pcm, "machine.pcm"))
        elif not isinstance(self.pcm, PCMParams):
            raise ConfigError(f"machine.pcm = {self.pcm!r}: expected a mapping of PCM parameters")
        if not isinstance(self.weight_seed, int) or isinstance(self.weight_seed, bool) or self.weight_seed < 0:
            raise ConfigError(f"machine.weight_seed = {self.weight_seed!r}: expected an integer >= 0")

    @property
    def float_weights(self) -> bool:
        """True when the learning cores keep plain float weights (32 bits, ideal synapses)."""
        return self.weight_bits == 32 and self.synapse == "ideal"

    def identity(self) -> dict:
        """The options as a dict for checkpoint fingerprints; options added later are left out while
        at their neutral value, so checkpoints written before them still resume."""
        d = dataclasses.asdict(self)
        if not d["weight_ranges"]:
            d.pop("weight_ranges")
        if d["weight_range_recurrent"] is None:
            d.pop("weight_range_recurrent")
        d.pop("weight_range_growth")
        if self.range_growth != 1:
            d["weight_range_growth"] = self.range_growth
        d["weight_range"] = self.range_factor
        if self.float_weights:      # no grid: the scope means nothing; written as before its default became null
            d["weight_range_scope"] = "population"
        elif d["weight_range_scope"] is None:
            d["weight_range_scope"] = self.range_scope
        return d

    @property
    def range_scope(self) -> str:
        """``weight_range_scope`` resolved: null = projection for digital weights, population for PCM."""
        if self.weight_range_scope is not None:
            return self.weight_range_scope
        return "population" if self.synapse == "pcm" else "projection"

    @property
    def range_factor(self) -> float:
        """``weight_range`` resolved: null = 1 for a digital grid that widens, 2 otherwise."""
        if self.weight_range is not None:
            return float(self.weight_range)
        return WIDENING_HEADROOM if self.range_growth > 1 else FIXED_HEADROOM

    @property
    def range_recurrent(self) -> float:
        """``weight_range_recurrent`` resolved: null = 7 for a fixed digital grid, ``range_factor`` for a
        grid that widens and for PCM."""
        if self.weight_range_recurrent is not None:
            return float(self.weight_range_recurrent)
        return self.range_factor if self.synapse == "pcm" or self.range_growth > 1 else RECURRENT_HEADROOM

    @property
    def range_growth(self) -> float:
        """``weight_range_growth`` resolved: 1 (a fixed grid) for float weights, PCM and without the
        accumulator; null = 64 for the other digital grids."""
        if self.float_weights or self.synapse == "pcm":
            return 1.0
        if self.weight_range_growth is None:
            return RANGE_GROWTH if self.accumulate else 1.0
        return float(self.weight_range_growth)

    @property
    def total_pes(self) -> int:
        return self.pes_per_chip * self.chips


@dataclass(frozen=True)
class ParallelConfig:
    """How the network is spread over emulated cores and replicas."""

    cores_per_population: int | dict | None = opt(
        None, "cores per non-source population (an int, or population -> cores); null = as few as the cap "
              "and budget allow", min=1)
    replicas: int = opt(1, "data-parallel copies of the network (EventProp, e-prop): each takes a share of the "
                           "mini-batch", min=1, max=65536)
    exchange_interval: int = opt(1, "K: steps between spike exchanges; must be <= the minimum delay", min=1, max=255)
    batch_size: int = opt(1, "samples run in lockstep on every core, one packet per round carries all (a packet "
                                  "indexes samples with 16 bits)", min=1, max=65535)
    schedule: str = opt("lockstep", "lockstep: rounds of K steps, every core stepping together; layered: one "
                                    "round per level of a feed-forward network (same results, far fewer rounds)",
                        choices=("lockstep", "layered"))
    copies: bool = opt(True, "backend=local: one core object steps every data-parallel copy of a slice (each "
                             "copy still sends, routes and counts its own packets; same results and counters, "
                             "faster); false: each copy apart, as backend=ray runs them")


@dataclass(frozen=True)
class ClusterConfig:
    """Where Ray runs, and how the emulated chips are spread over its nodes.

    The chips in use go onto nodes in contiguous blocks; the cores of a chip
    always share a node (:func:`spinnray.mapping.place.assign_nodes`).  Each
    chip has its own router (``router_per``), as the hardware has, or each
    node one for all its chips; routers exchange events over authenticated
    router-to-router streams, between chips of one node as between nodes.
    Both null: one node.
    ``chips_per_node = m``: chip c on node c // m.  ``nodes = N`` alone: the
    chips in N near-equal blocks.  Both: they must agree.
    """

    address: str | None = opt(None, "null = start an embedded local Ray; 'auto' or 'ray://host:port' = join a cluster")
    num_cpus: int | None = opt(None, "CPUs for the embedded local Ray instance (null = all)", min=1, max=4096)
    round_timeout_s: float = opt(120.0, "seconds a core or router waits for one exchange round before failing",
                                 min=0.001, max=86400.0)
    nodes: int | None = opt(None, "cluster nodes the chips are spread over (null = 1, or as chips_per_node "
                                  "implies)", min=1, max=65536)
    chips_per_node: int | None = opt(None, "chips on each node, in chip order (null = split the chips evenly "
                                           "over cluster.nodes)", min=1, max=2**20)
    router_per: str = opt("chip", "what one router serves: 'chip' (every chip its own router, as SpiNNaker2 "
                                  "has; inter-chip events go router to router) or 'node' (one router for all "
                                  "the chips of a node); identical results, different router traffic",
                          choices=ROUTER_UNITS)
    node_ids: tuple[str, ...] | None = opt(None, "Ray node ids (hex) of node 0, 1, ...; null = the alive nodes, "
                                                 "the driver's first, then by node id")
    placement_timeout_s: float = opt(120.0, "seconds to wait for the actors to start on their nodes before "
                                            "failing", min=0.001, max=86400.0)
    ship_code: bool = opt(False, "upload this checkout's spinnray package with the job (Ray runtime_env "
                                 "py_modules), so other nodes need only the dependencies")
    replace_lost_nodes: bool = opt(True, "when a restart from a checkpoint finds fewer alive nodes than the "
                                         "placement needs, spread the chips over the nodes left (false: fail)")


@dataclass(frozen=True)
class CheckpointConfig:
    """When training state is written (atomically) and how many files are kept."""

    every: int = opt(0, "write a checkpoint every N mini-batches (0 = never)", min=0, max=2**40)
    dir: str | None = opt(None, "where checkpoints go (null = RUN_DIR/checkpoints)", path=True)
    keep: int = opt(2, "checkpoints kept (older ones are deleted)", min=1, max=10000)
    max_restarts: int = opt(3, "after a core or node failure, rebuild the cores and continue from the last "
                               "checkpoint at most this many times (needs every > 0)", min=0, max=1000)


@dataclass(frozen=True)
class RunConfig:
    """One run of ``run.py``: the composed Hydra config, typed.

    ``network``, ``data`` and ``learning`` are typed by the registries that their ``name``
    and ``rule`` keys select (:func:`spinnray.experiments.setup.resolve`).
    """

    kind: str | None = opt(None, "what the run does; null = as learning.rule implies (none: forward, eventprop, "
                                 "eprop, bptt and tlbptt: bptt)", choices=("forward", "eventprop", "eprop", "bptt"))
    seed: int = opt(0, "master seed: weights, data order, input spikes", min=0, max=2**63 - 1)
    backend: str = opt("ray", "run cores in-process or as Ray actors", choices=("local", "ray"))
    machine: MachineConfig = opt(None, "the emulated machine", factory=MachineConfig)
    parallel: ParallelConfig = opt(None, "cores, replicas, exchange interval, batch", factory=ParallelConfig)
    cluster: ClusterConfig = opt(None, "where Ray runs", factory=ClusterConfig)
    network: dict = opt(None, "the network (scenario kind specific)", factory=dict)
    data: dict = opt(None, "the data (scenario kind specific)", factory=dict)
    learning: dict = opt(None, "the learning rule (scenario kind specific)", factory=dict)
    record: tuple[str, ...] = opt(("spikes",), "variables recorded on the cores: spikes, v",
                                  factory=lambda: ("spikes",))
    progress: bool = opt(True, "show a progress bar on long work")
    checkpoint: CheckpointConfig = opt(None, "training checkpoints", factory=CheckpointConfig)
    resume: str | None = opt(None, "continue a training run from this checkpoint file or directory", path=True)
    init_from: str | None = opt(None, path=True, help="start training from the weights of this checkpoint (file or directory: "
                                      "the newest) of the same network; optimizer, data order and schedule "
                                      "start fresh (fine-tuning, moving to another weight precision)")
    report: bool = opt(True, "after the run, write report.md, report.html and PNG plots (spinnray.report)")
    plan: bool = opt(False, "only map the run onto the chip and report its cores, copies, chips and every core's "
                            "memory against the budget (plan.json and the log); nothing runs, no Ray starts")
