"""Shared fixtures: one Ray instance per test session, small networks."""

import os

import numpy as np
import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    """Start Ray once for the whole session (3-4 s), 2 CPUs; actors use num_cpus=0."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
    yield ray


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
