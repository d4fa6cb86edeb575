"""Refactors change nothing: every golden case (tests/golden.py) gives exactly the recorded results.

Every recorded key must be present with the recorded value (recursively); keys a later version
adds (new metrics) are allowed."""

import json

import pytest

import golden

TABLE = json.loads(golden.TABLE.read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("golden")


def differences(want, got, where=""):
    """Paths at which ``got`` lacks or changes a value of ``want``."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for k, v in want.items():
            out += [f"{where}.{k}: missing"] if k not in got else differences(v, got[k], f"{where}.{k}")
        return out
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [d for i, (a, b) in enumerate(zip(want, got)) for d in differences(a, b, f"{where}[{i}]")]
    return [] if want == got else [f"{where}: {str(want)[:80]} -> {str(got)[:80]}"]


def _check(name, work):
    got = golden.fingerprint(golden.run_case(name, work))
    diff = differences(TABLE[name], got)
    assert not diff, f"{name} differs from the golden table: " + "; ".join(diff[:8])


@pytest.mark.parametrize("name", [n for n, c in golden.CASES.items() if c[2] == "local"])
def test_local_case_unchanged(name, work):
    _check(name, work)


@pytest.mark.ray
@pytest.mark.parametrize("name", [n for n, c in golden.CASES.items() if c[2] == "ray"])
def test_ray_case_unchanged(name, work, ray_session):
    _check(name, work)
