"""Low-precision weight storage and a phase-change-memory (PCM) synapse model (numpy only).

Three stores for one projection's weights (shape ``(n_pre, n_post)`` or any shape). A learning
core uses them all through the same calls:

    w = store.read(t_s)          # effective weights, float32, shape ``store.shape``
    store.apply(delta, t_s)      # add a weight update (an e-prop / EventProp step)
    store.stored_bytes, store.accumulator_bytes

``t_s`` is emulated time in seconds (steps so far x dt). Only the PCM store uses it (drift); the
digital stores ignore it.

Modules: ``grid`` (the quantization grid, mixed precision), ``pcm`` (PCM devices), ``streams``
(per-column random streams, plain-data state); :func:`make_weight_store` picks one for the machine
options.
"""

from __future__ import annotations

import numpy as np

from spinnray.checks import check_real
from spinnray.config import BITS, ROUNDINGS, SYNAPSES, TRANSFERS, PCMParams
from spinnray.errors import ConfigError
from spinnray.machine.quant.grid import MixedPrecisionWeights, Quantizer
from spinnray.machine.quant.pcm import PCMWeights
from spinnray.machine.quant.streams import Noise, finite_array

__all__ = ["BITS", "ROUNDINGS", "SYNAPSES", "TRANSFERS", "Noise", "Quantizer", "MixedPrecisionWeights", "PCMParams",
           "PCMWeights", "make_weight_store"]


# ---------------------------------------------------------------------------------------------
# Factory for the cores
# ---------------------------------------------------------------------------------------------

def make_weight_store(w_init, *, weight_bits: int = 32, rounding: str = "nearest", synapse: str = "ideal",
                      w_max: float | None = None, headroom: float = 2.0, accumulate: bool = True,
                      transfer: str = "round", pcm: PCMParams | None = None, seed=0, t_s: float = 0.0, columns=None,
                      growth: float = 1.0):
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
        growth: ``machine.weight_range_growth`` resolved: how far each column's grid may widen
            (ideal synapse with an accumulator; 1 = a fixed grid).

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
    w = finite_array(w_init, "w_init")
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
                                 transfer=transfer, growth=growth)
