"""Recurrent EventProp with delays and voltage or TTFS losses on Ray: the gradient equals the dense
reference, and the local backend's bit for bit with the same counters (local against the reference
for every split: tests/oracle/test_eventprop_recurrent.py)."""

import numpy as np
import pytest

from oracle.eventprop_cases import Case, data, reference, relative_errors, run_machine


@pytest.mark.ray
@pytest.mark.parametrize("case, cores, replicas, k", [
    (Case(d_in=2, d_rec=(2, 3), d_out=2), 3, 2, 2),
    (Case(loss="wunderlich", d_in=2, d_rec=2, d_out=(2, 3)), 2, 3, 2),
    (Case(d_in=2, d_rec=2, d_out=2, reg=(0.002, 0.001, 2.0)), 3, 2, 2),     # the hidden spike-count regulariser
])
def test_ray_gradient_equals_reference_and_local(ray_session, case, cores, replicas, k):
    x, y = data()
    _, _, grads = reference(case, x, y)
    res, got, m, reps = run_machine(case, x, y, cores, replicas, k, backend="ray")
    _, local, m_local, reps_local = run_machine(case, x, y, cores, replicas, k)
    assert max(relative_errors(got, grads)) <= 1e-6
    assert all(np.array_equal(a, b) for a, b in zip(got, local))
    assert [r["counters"] for r in reps] == [r["counters"] for r in reps_local]
    assert m["traffic"]["error_events"] == m_local["traffic"]["error_events"] > 0
