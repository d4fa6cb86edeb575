"""The one argument checker: values from configs, files and callers, refused with an error that
names the argument, the value and what was expected.

Every layer uses these (the base of the package: imports only :mod:`spinnray.errors`).  The
error class is the caller's: a configuration value is a :class:`ConfigError`, a neuron
parameter a :class:`NetworkError`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from spinnray.errors import ConfigError

__all__ = ["check_int", "check_real", "show"]


def show(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: values in messages may come from outside."""
    try:
        text = repr(value)
    except Exception:          # a hostile __repr__ must not replace the error we are raising
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None, *,
              error: type[Exception] = ConfigError) -> int:
    """``value`` as an int (numpy integers too, bools not); ``error`` unless in [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise error(f"{name} = {show(value)}: expected an integer")
    value = int(value)
    if minimum is not None and value < minimum:
        raise error(f"{name} = {value}: expected an integer >= {minimum}")
    if maximum is not None and value > maximum:
        raise error(f"{name} = {value}: expected an integer <= {maximum}")
    return value


def check_real(name: str, value, minimum: float | None = None, maximum: float | None = None, *,
               strict: bool = False, error: type[Exception] = ConfigError) -> float:
    """``value`` as a finite float; ``error`` unless ``>= minimum`` (``> minimum`` if ``strict``)
    and ``<= maximum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise error(f"{name} = {show(value)}: expected a finite number")
    given, value = value, float(value)
    low = minimum is not None and (value < minimum or (strict and value == minimum))
    if not math.isfinite(value) or low or (maximum is not None and value > maximum):
        want = "a finite number"
        if minimum is not None:
            want += f" {'>' if strict else '>='} {minimum:g}"
        if maximum is not None:
            want += f"{' and' if minimum is not None else ''} <= {maximum:g}"
        raise error(f"{name} = {show(given)}: expected {want}")
    return value
