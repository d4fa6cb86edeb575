"""Refactors change nothing: every golden case (tests/golden.py) gives exactly the recorded results."""

import json

import pytest

import golden

TABLE = json.loads(golden.TABLE.read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("golden")


def _check(name, work):
    got = golden.fingerprint(golden.run_case(name, work))
    want = TABLE[name]
    assert sorted(got) == sorted(want), f"{name}: keys differ"
    for key in want:
        assert got[key] == want[key], f"{name}: {key} differs from the golden table"


@pytest.mark.parametrize("name", [n for n, c in golden.CASES.items() if c[2] == "local"])
def test_local_case_unchanged(name, work):
    _check(name, work)


@pytest.mark.ray
@pytest.mark.parametrize("name", [n for n, c in golden.CASES.items() if c[2] == "ray"])
def test_ray_case_unchanged(name, work, ray_session):
    _check(name, work)
