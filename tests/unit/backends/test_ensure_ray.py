"""ensure_ray turns Ray's own reporting off for the embedded local Ray only, and never overrides a
variable the user set (Ray is not started: its init is replaced by a recorder)."""

import os

from spinnray.backends import ray as ray_backend


def test_the_embedded_ray_starts_quiet_and_a_cluster_keeps_its_settings(monkeypatch):
    seen = []
    monkeypatch.setattr(ray_backend.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_backend.ray, "init", lambda **kw: seen.append((kw.get("address"), dict(os.environ))))
    for key in ray_backend.QUIET_RAY:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_event_stats", "1")                  # the user's own setting
    ray_backend.ensure_ray("auto")                              # joining a cluster: untouched
    ray_backend.ensure_ray()                                    # the embedded local Ray
    (joined, env_join), (local, env_local) = seen
    assert joined == "auto" and not set(ray_backend.QUIET_RAY) - {"RAY_event_stats"} & set(env_join)
    assert local == "local" and env_local["RAY_event_stats"] == "1"
    assert all(env_local[k] == v for k, v in ray_backend.QUIET_RAY.items() if k != "RAY_event_stats")
