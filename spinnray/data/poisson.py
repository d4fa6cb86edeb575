"""Poisson input trials of a forward run (``data.name=poisson``): every spike-source population
fires at its ``rate_hz`` (set in the network), one seeded generator per trial, so the trials do
not depend on how they are batched.  The run generates them itself (no loader)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinnray.config import opt
from spinnray.data.base import register_config

__all__ = ["PoissonConfig", "poisson_spikes", "poisson_trials"]


@dataclass(frozen=True)
class PoissonConfig:
    """Poisson input trials."""

    name: str = opt("poisson", "input generator", choices=("poisson",))
    trials: int = opt(4, "input trials (samples) per epoch", min=1, max=10_000_000)
    limit: int | None = opt(None, "use only the first N trials (null = all)", min=1, max=10_000_000)


register_config("poisson", PoissonConfig)


def poisson_spikes(rate_hz: float, steps: int, batch: int, n: int, dt_ms: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Bernoulli approximation of Poisson spike trains: (steps, batch, n) bool."""
    return rng.random((steps, batch, n)) < rate_hz * dt_ms / 1000.0


def poisson_trials(rates: dict[str, float], sizes: dict[str, int], steps: int, dt_ms: float, seed: int,
                   epoch: int, first: int, count: int) -> dict[str, np.ndarray]:
    """Trials ``first .. first+count-1`` of ``epoch``: ``{population: (steps, count, n) bool}``."""
    gens = [np.random.default_rng([seed, 2, epoch, first + j]) for j in range(count)]
    return {name: np.concatenate([poisson_spikes(rate, steps, 1, sizes[name], dt_ms, g) for g in gens], axis=1)
            for name, rate in rates.items()}
