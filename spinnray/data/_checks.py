"""Argument checks shared by the data generators and loaders: a ConfigError
that names the argument, the value and what was expected."""

from __future__ import annotations

import math
import numbers

import numpy as np

from spinnray.errors import ConfigError


def check_int(name: str, value, minimum: int | None = None) -> int:
    """``value`` as an int; ConfigError for a non-integer (bools included) or one below ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name}={value!r}: expected an integer, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value}: expected an integer >= {minimum}")
    return value


def check_real(name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float; ConfigError unless finite and ``>= minimum`` (``> minimum`` if ``strict``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name}={value!r}: expected a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise ConfigError(f"{name}={value!r}: expected a finite number {'>' if strict else '>='} {minimum:g}")
    return value
