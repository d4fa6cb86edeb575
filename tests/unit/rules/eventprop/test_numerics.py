"""spinnray.rules.eventprop.numerics: the adjoint's guard, the TTFS loss and its derivative, silent times."""

import numpy as np
import pytest

from spinnray.rules.eventprop.numerics import adjoint_step


def test_adjoint_guard_caps_grazing_spikes():
    lam_v = np.array([[0.5, 0.5]])
    lam_i = np.zeros((1, 2))
    spiked = np.array([[True, True]])
    denom = np.array([[1e-9, 0.5]])         # a grazing crossing and a clean one
    err = np.array([[1.0, 1.0]])
    v, i, guarded = adjoint_step(lam_v, lam_i, spiked, denom, err, 0.8, 0.9, 1e-3)
    assert guarded == 1
    assert v[0, 0] == pytest.approx(0.9 * 0.5 + 1.5 / 1e-3)   # divided by the guard, not by 1e-9
    assert v[0, 1] == pytest.approx(0.9 * 0.5 + 1.5 / 0.5)    # untouched where the denominator is fine
    assert np.all(np.isfinite(v)) and i[0, 0] == pytest.approx(0.2 * 0.5)


@pytest.mark.parametrize("kind", ["wunderlich", "bena"])
def test_ttfs_loss_derivative_matches_finite_differences(kind):
    from spinnray.rules.eventprop.numerics import TTFSLoss, predict, ttfs_loss

    rng = np.random.default_rng(5)
    t = rng.uniform(2.0, 20.0, (6, 3))
    labels = rng.integers(0, 3, 6)
    fired = np.ones((6, 3), bool)
    loss = TTFSLoss(kind=kind)
    value, grad = ttfs_loss(t, fired, labels, loss, dt_ms=0.5)
    h = 1e-6
    for k in range(3):
        tp, tm = t.copy(), t.copy()
        tp[:, k] += h
        tm[:, k] -= h
        fd = (ttfs_loss(tp, fired, labels, loss, 0.5)[0] - ttfs_loss(tm, fired, labels, loss, 0.5)[0]) / (2 * h)
        np.testing.assert_allclose(grad[:, k], fd, rtol=1e-5, atol=1e-8)
    assert np.all(value > 0)
    # A neuron that did not fire gets no gradient; the earliest spike wins, ties and silence give -1.
    fired[0, 1] = False
    assert ttfs_loss(t, fired, labels, loss, 0.5)[1][0, 1] == 0.0
    assert predict(np.array([[3.0, 1.0, 2.0], [1.0, 1.0, 5.0], [9.0, 9.0, 9.0]]),
                   np.array([[True] * 3, [True] * 3, [False] * 3])).tolist() == [1, -1, -1]


def test_silent_times_by_hand():
    from spinnray.errors import ConfigError
    from spinnray.rules.eventprop.numerics import silent_times

    t = np.array([[3.0, 40.0, 40.0]])
    fired = np.array([[True, False, False]])
    v_max = np.array([[1.4, 0.75, -0.5]])
    got = silent_times(t, fired, v_max, steps=80, dt_ms=0.5, silent_ms=20.0)
    assert got.tolist() == [[3.0, 40.0 + 20.0 * 0.25, 40.0 + 20.0 * 1.5]]
    assert silent_times(t, fired, v_max, 80, 0.5, 0.0).tolist() == [[3.0, 40.0, 40.0]]
    with pytest.raises(ConfigError, match="silent_ms"):
        silent_times(t, fired, v_max, 80, 0.5, -1.0)


@pytest.mark.parametrize("kind", ["mean_voltage", "sum_voltage", "max_voltage"])
def test_voltage_loss_derivative_matches_finite_differences(kind):
    """dL/dV[t] of each voltage loss: central differences of the loss of a voltage trace."""
    from spinnray.rules.eventprop.numerics import VoltageLoss, voltage_logits, voltage_loss

    rng = np.random.default_rng(2)
    steps, v = 7, rng.normal(0.0, 1.0, (7, 4, 3))
    labels = np.array([0, 2, 1, 2])
    loss = VoltageLoss(kind)

    def value(v):
        logits = voltage_logits(loss, v.sum(axis=0), v.max(axis=0), steps)
        return voltage_loss(loss, logits, labels, steps)[0]

    logits = voltage_logits(loss, v.sum(axis=0), v.max(axis=0), steps)
    _, grad = voltage_loss(loss, logits, labels, steps)
    peak = v.argmax(axis=0)
    h = 1e-6
    for t, b, k in np.ndindex(v.shape):
        vp, vm = v.copy(), v.copy()
        vp[t, b, k] += h
        vm[t, b, k] -= h
        fd = (value(vp)[b] - value(vm)[b]) / (2 * h)
        expect = grad[b, k] if kind != "max_voltage" or peak[b, k] == t else 0.0     # the same at every step
        assert fd == pytest.approx(expect, rel=1e-5, abs=1e-8), (t, b, k)


def test_voltage_loss_refuses_unknown_kind_and_reset_jump():
    from spinnray.errors import ConfigError
    from spinnray.rules.eventprop.numerics import VoltageLoss, reset_jump

    with pytest.raises(ConfigError, match="learning.loss = 'avg'.*mean_voltage"):
        VoltageLoss("avg")
    assert reset_jump(1.0, 0.0, "zero") == 1.0 and reset_jump(0.8, -0.2, "zero") == pytest.approx(1.0)
    assert reset_jump(1.5, 0.7, "subtract") == 1.5


def test_adjoint_jump_scales_lam_v_only():
    """The reset's size D multiplies lamV in the jump, not the error; D = 1 is the plain step."""
    lam_v, lam_i = np.array([[0.5, 0.5]]), np.zeros((1, 2))
    spiked, denom, err = np.array([[True, False]]), np.array([[0.5, 0.5]]), np.array([[1.0, 1.0]])
    v1, _, _ = adjoint_step(lam_v, lam_i, spiked, denom, err, 0.8, 0.9, 1e-3)
    v2, _, _ = adjoint_step(lam_v, lam_i, spiked, denom, err, 0.8, 0.9, 1e-3, jump=2.0)
    assert v1[0, 0] == pytest.approx(0.9 * 0.5 + (0.5 + 1.0) / 0.5)
    assert v2[0, 0] == pytest.approx(0.9 * 0.5 + (2.0 * 0.5 + 1.0) / 0.5)
    assert v1[0, 1] == v2[0, 1] == pytest.approx(0.45)
