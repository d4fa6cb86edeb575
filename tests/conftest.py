"""Shared fixtures and the rules of the three tiers.

* ``tests/unit/`` mirrors ``spinnray/``: no Ray, nothing slow (``python -m pytest -q tests/unit``);
* ``tests/oracle/``: the independent references and the tests that hold the machine against them;
* ``tests/integration/``: everything that starts Ray, whole runs, training that must learn,
  checkpoint/resume, the golden table.

Every test that uses Ray carries ``@pytest.mark.ray`` (and lives under ``tests/integration/``).
That is enforced here: a test that requests the Ray fixtures without the marker, or is marked but
lives in another tier, is a collection error; and a test without the marker fails if it calls
``ray.init``, builds a ``RayBackend`` or leaves Ray running.  (A subprocess that starts Ray,
such as ``run.py`` with its default backend, cannot be seen from here: mark it by hand.)

The tiers run in the order unit, oracle, integration, so a plain ``python -m pytest -q`` reports
the quick failures first.

``tests/`` is put on ``sys.path``: test modules import ``helpers``, ``golden`` and the references
as ``oracle.bptt_reference`` (the test directories are packages: ``unit.machine.test_core``).
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

os.environ.setdefault("RAY_DEDUP_LOGS", "0")

TIERS = ("unit", "oracle", "integration")
#: the fixtures that start Ray; a test that requests one (directly or through another fixture) is a Ray test
RAY_FIXTURES = frozenset({"ray_session", "ray_module", "_ray_instance"})


def tier(item) -> str | None:
    """``unit``, ``oracle`` or ``integration``: the directory under tests/ that holds ``item``."""
    try:
        first = Path(str(item.path)).resolve().relative_to(TESTS).parts[0]
    except ValueError:
        return None
    return first if first in TIERS else None


def _not_marked(nodeid: str, what: str) -> str:
    return (f"{nodeid} {what} but is not marked @pytest.mark.ray: mark it (multi-node tests also "
            "@pytest.mark.multinode) and keep it under tests/integration/")


def pytest_collection_modifyitems(config, items):
    problems = []
    for item in items:
        marked = item.get_closest_marker("ray") is not None
        uses = sorted(RAY_FIXTURES & set(item.fixturenames))
        if uses and not marked:
            problems.append(_not_marked(item.nodeid, f"uses the Ray fixture(s) {uses}"))
        if marked and tier(item) != "integration":
            problems.append(f"{item.nodeid} is marked ray: it belongs under tests/integration/ (the unit and "
                            "oracle tiers run without Ray)")
    if problems:
        raise pytest.UsageError("Ray tests out of place:\n  " + "\n  ".join(problems))
    order = {name: i for i, name in enumerate(TIERS)}
    items.sort(key=lambda it: order.get(tier(it), len(TIERS)))          # stable: files keep their order


@pytest.fixture(autouse=True)
def _no_ray_unless_marked(request, monkeypatch):
    """A test without the ``ray`` marker may not start Ray nor build a Ray backend."""
    if request.node.get_closest_marker("ray") is not None:
        yield
        return
    ray = sys.modules.get("ray")
    was_running = ray is not None and ray.is_initialized()

    def refusal(what):
        def refuse(*args, **kwargs):
            raise RuntimeError(_not_marked(request.node.nodeid, what))
        return refuse

    if ray is not None:
        monkeypatch.setattr(ray, "init", refusal("starts Ray"))
    backend = sys.modules.get("spinnray.backends.ray")
    if backend is not None:                 # Ray already up (an earlier Ray test): the backend would use it
        monkeypatch.setattr(backend.RayBackend, "__init__", refusal("builds a RayBackend"))
    yield
    ray = sys.modules.get("ray")
    if ray is not None and not was_running and ray.is_initialized():
        pytest.fail(_not_marked(request.node.nodeid, "left Ray running"))


@pytest.fixture(scope="session")
def _ray_instance():
    """Ray, started once for the whole session (3-4 s), 2 CPUs; actors use num_cpus=0."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
    yield ray


def _require_ray_marker(request, fixture: str) -> None:
    if request.node.get_closest_marker("ray") is None:
        pytest.fail(_not_marked(request.node.nodeid, f"uses the {fixture} fixture"), pytrace=False)


@pytest.fixture
def ray_session(request):
    """The session-wide Ray instance, for a test marked ``@pytest.mark.ray`` (fails otherwise)."""
    _require_ray_marker(request, "ray_session")
    return request.getfixturevalue("_ray_instance")


@pytest.fixture(scope="module")
def ray_module(request):
    """The same for module-scoped fixtures: the module must be marked (``pytestmark = pytest.mark.ray``)."""
    _require_ray_marker(request, "ray_module")
    return request.getfixturevalue("_ray_instance")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
