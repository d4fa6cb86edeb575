"""A mapping whose core actors would not fit the memory Ray reports is refused before any actor
starts, with the numbers (no Ray needed: the node's memory is given)."""

import pytest

from spinnray.backends import ray as ray_backend
from spinnray.errors import MappingError


def test_too_many_actors_for_a_node_are_refused_with_the_numbers(monkeypatch):
    gb = 2**30
    monkeypatch.setattr(ray_backend, "_node_memory", lambda node_id: {"a" * 40: 4 * gb, "b" * 40: 64 * gb}[node_id])
    per = ray_backend.ACTOR_BYTES
    fit = int(4 * gb // per) - 1                          # cores that fit beside the router
    ray_backend.admit({i: 0 for i in range(fit)}, ["a" * 40])
    with pytest.raises(MappingError) as e:
        ray_backend.admit({**{i: 0 for i in range(fit + 1)}, **{10_000 + i: 1 for i in range(5)}},
                          ["a" * 40, "b" * 40])
    msg = str(e.value)
    assert f"{fit + 1} core actors and a router on node 0" in msg and "Ray reports 4.0 GB" in msg
    assert f"about {fit} cores fit" in msg and "parallel.cores_per_population" in msg
    monkeypatch.setattr(ray_backend, "_node_memory", lambda node_id: None)    # unknown: not refused
    ray_backend.admit({i: 0 for i in range(10_000)}, ["a" * 40])
