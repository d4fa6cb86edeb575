"""spinnray.model.neurons: parameters are validated naming the value; the step functions equal a scalar,
hand-written transcription of the equations in the module docstring; the state the models declare."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinnray.errors import NetworkError
from spinnray.model.neurons import (
    ALIF,
    LI,
    LIF,
    ALIFState,
    LIFState,
    LIState,
    SpikeSource,
    model_from_dict,
)

from helpers import raises_naming


@pytest.mark.parametrize("build, text", [
    (lambda: LIF(tau_mem_ms=0), "LIF.tau_mem_ms = 0"),
    (lambda: LIF(tau_mem_ms=-5.0), "LIF.tau_mem_ms = -5.0"),
    (lambda: LIF(tau_mem_ms=float("nan")), "LIF.tau_mem_ms = nan"),
    (lambda: LIF(tau_mem_ms=float("inf")), "LIF.tau_mem_ms = inf"),
    (lambda: LIF(tau_mem_ms="20"), "LIF.tau_mem_ms = '20'"),
    (lambda: LIF(tau_mem_ms=True), "LIF.tau_mem_ms = True"),
    (lambda: LIF(tau_syn_ms=-1), "LIF.tau_syn_ms = -1"),
    (lambda: LIF(reset="hard"), "LIF.reset = 'hard'"),
    (lambda: ALIF(tau_mem_ms=0), "ALIF.tau_mem_ms = 0"),
    (lambda: ALIF(tau_adapt_ms=0), "ALIF.tau_adapt_ms = 0"),
    (lambda: ALIF(v_th=0), "ALIF.v_th = 0"),
    (lambda: ALIF(beta=-0.1), "ALIF.beta = -0.1"),
    (lambda: ALIF(refractory_steps=-1), "ALIF.refractory_steps = -1"),
    (lambda: ALIF(refractory_steps=1.5), "ALIF.refractory_steps = 1.5"),
    (lambda: LI(tau_mem_ms=0), "LI.tau_mem_ms = 0"),
    (lambda: LI(tau_syn_ms=float("-inf")), "LI.tau_syn_ms = -inf"),
])
def test_model_parameters_are_validated(build, text):
    with raises_naming(NetworkError, text):
        build()


def test_valid_models():
    assert LIF(tau_syn_ms=0).tau_syn_ms == 0 and ALIF(beta=0).beta == 0 and LI(tau_syn_ms=3).tau_syn_ms == 3
    assert [m.spiking for m in (LIF(), ALIF(), LI(), SpikeSource())] == [True, True, False, True]


def test_model_from_dict():
    assert model_from_dict({"model": "lif", "tau_mem_ms": 10.0, "reset": "subtract"}) == \
        LIF(tau_mem_ms=10.0, reset="subtract")
    assert model_from_dict({"model": "alif", "refractory_steps": 3}) == ALIF(refractory_steps=3)
    assert model_from_dict({"model": "li"}) == LI()
    assert model_from_dict({"model": "source"}) == SpikeSource()
    d = {"model": "lif", "v_th": 2.0}
    model_from_dict(d)
    assert d == {"model": "lif", "v_th": 2.0}            # the caller's dict is left alone


@pytest.mark.parametrize("d, texts", [
    ({"model": "izhikevich"}, ["net.hidden.model = 'izhikevich'", "['alif', 'analog', 'li', 'lif', 'source']"]),
    ({"tau_mem_ms": 3}, ["net.hidden.model = None"]),
    ({"model": "lif", "tau": 3, "beta": 1}, ["net.hidden", "['beta', 'tau']", "'lif'", "tau_mem_ms"]),
    ({"model": "source", "v_th": 1}, ["['v_th']", "'source'"]),
    ({"model": "alif", "tau_adapt_ms": -1}, ["ALIF.tau_adapt_ms = -1"]),
])
def test_model_from_dict_errors(d, texts):
    with raises_naming(NetworkError, *texts):
        model_from_dict(d, where="net.hidden")


def ref_lif(model: LIF, dt: float, x: np.ndarray):
    """Scalar transcription of the LIF equations: returns s, I, V (after reset), V_pre, each (T, B, N)."""
    T, B, N = x.shape
    a = math.exp(-dt / model.tau_syn_ms) if model.tau_syn_ms else None
    b = math.exp(-dt / model.tau_mem_ms)
    s, I_, V_, P_ = (np.zeros(x.shape, bool), np.zeros(x.shape), np.zeros(x.shape), np.zeros(x.shape))
    for bi in range(B):
        for ni in range(N):
            i = v = 0.0
            for t in range(T):
                xin = float(x[t, bi, ni])
                i = xin if a is None else a * i + xin
                v = b * v + (1 - b) * i
                P_[t, bi, ni] = v
                if v > model.v_th:
                    s[t, bi, ni] = True
                    v = model.v_reset if model.reset == "zero" else v - model.v_th
                I_[t, bi, ni], V_[t, bi, ni] = i, v
    return s, I_, V_, P_


def ref_alif(model: ALIF, dt: float, x: np.ndarray):
    """Scalar transcription of the ALIF equations; a neuron that spiked at t
    cannot spike at t+1 .. t+refractory_steps.  Returns z, v, a, r, each (T, B, N)."""
    T, B, N = x.shape
    alpha, rho = math.exp(-dt / model.tau_mem_ms), math.exp(-dt / model.tau_adapt_ms)
    Z, Vs, As, Rs = np.zeros(x.shape, bool), np.zeros(x.shape), np.zeros(x.shape), np.zeros(x.shape, int)
    for bi in range(B):
        for ni in range(N):
            v = a = 0.0
            z = False
            last = None
            for t in range(T):
                a = rho * a + (1 - rho) * (1.0 if z else 0.0)
                A = model.v_th + model.beta * a
                v = alpha * v + (1 - alpha) * float(x[t, bi, ni]) - (A if z else 0.0)
                z = v > A and (last is None or t - last > model.refractory_steps)
                if z:
                    last = t
                Z[t, bi, ni], Vs[t, bi, ni], As[t, bi, ni] = z, v, a
                Rs[t, bi, ni] = 0 if last is None else max(0, model.refractory_steps - (t - last))
    return Z, Vs, As, Rs


def ref_li(model: LI, dt: float, x: np.ndarray):
    a = math.exp(-dt / model.tau_syn_ms) if model.tau_syn_ms else None
    b = math.exp(-dt / model.tau_mem_ms)
    I_, V_ = np.zeros(x.shape), np.zeros(x.shape)
    for idx in np.ndindex(x.shape[1:]):
        i = v = 0.0
        for t in range(x.shape[0]):
            i = float(x[(t, *idx)]) if a is None else a * i + float(x[(t, *idx)])
            v = b * v + (1 - b) * i
            I_[(t, *idx)], V_[(t, *idx)] = i, v
    return I_, V_


def run_steps(model, dt, x, dtype=np.float64):
    """Drive ``step`` over x (T, B, N); returns the spikes and the list of states."""
    T, B, N = x.shape
    state = model.init_state(B, N, dtype)
    c = model.consts(dt)
    spikes, states = [], []
    for t in range(T):
        s, state = model.step(x[t].astype(dtype), state, c)
        spikes.append(s)
        states.append(state)
    return spikes, states


T_STEPS, B, N = 50, 3, 4


@pytest.mark.parametrize("model, scale", [
    (LIF(tau_mem_ms=10.0, tau_syn_ms=5.0, v_th=1.0, v_reset=-0.2, reset="zero"), 0.6),
    (LIF(tau_mem_ms=10.0, tau_syn_ms=5.0, v_th=0.8, reset="subtract"), 0.6),
    (LIF(tau_mem_ms=4.0, tau_syn_ms=0.0, v_th=1.0, v_reset=0.1, reset="zero"), 2.5),
    (LIF(tau_mem_ms=4.0, tau_syn_ms=0.0, v_th=1.0, reset="subtract"), 2.5),
], ids=["zero-syn", "subtract-syn", "zero-nosyn", "subtract-nosyn"])
@pytest.mark.parametrize("dt", [1.0, 0.5])
def test_lif_step_equals_reference(model, scale, dt):
    rng = np.random.default_rng(int(scale * 10) + int(dt * 100))
    x = rng.exponential(scale, (T_STEPS, B, N)) * (rng.random((T_STEPS, B, N)) < 0.7)
    s_ref, i_ref, v_ref, p_ref = ref_lif(model, dt, x)
    spikes, states = run_steps(model, dt, x)
    assert np.array_equal(np.stack(spikes), s_ref)
    assert all(isinstance(st, LIFState) for st in states)
    assert np.array_equal(np.stack([st.i for st in states]), i_ref)
    assert np.array_equal(np.stack([st.v for st in states]), v_ref)
    assert np.array_equal(np.stack([st.v_pre for st in states]), p_ref)
    assert 5 < s_ref.sum() < 0.6 * s_ref.size              # the threshold and reset are exercised


@pytest.mark.parametrize("model", [
    ALIF(tau_mem_ms=10.0, tau_adapt_ms=30.0, beta=0.5, v_th=1.0, refractory_steps=0),
    ALIF(tau_mem_ms=10.0, tau_adapt_ms=30.0, beta=0.5, v_th=1.0, refractory_steps=3),
    ALIF(tau_mem_ms=20.0, tau_adapt_ms=200.0, beta=0.0, v_th=0.5, refractory_steps=1),
], ids=["no-refractory", "refractory-3", "beta0-refractory-1"])
def test_alif_step_equals_reference(model):
    rng = np.random.default_rng(model.refractory_steps)
    x = rng.exponential(3.0, (T_STEPS, B, N))
    z_ref, v_ref, a_ref, r_ref = ref_alif(model, 1.0, x)
    spikes, states = run_steps(model, 1.0, x)
    assert np.array_equal(np.stack(spikes), z_ref)
    assert all(isinstance(st, ALIFState) for st in states)
    assert np.array_equal(np.stack([st.v for st in states]), v_ref)
    assert np.array_equal(np.stack([st.a for st in states]), a_ref)
    assert np.array_equal(np.stack([st.z for st in states]), z_ref.astype(float))
    assert np.array_equal(np.stack([st.r for st in states]), r_ref)
    assert states[-1].r.dtype == np.int32
    assert 5 < z_ref.sum() < 0.7 * z_ref.size
    if model.refractory_steps:
        # Without the refractory rule some neuron would have spiked again sooner.
        free, _, _, _ = ref_alif(ALIF(model.tau_mem_ms, model.tau_adapt_ms, model.beta, model.v_th, 0), 1.0, x)
        assert free.sum() > z_ref.sum()
        t_idx = [np.nonzero(z_ref[:, b, n])[0] for b in range(B) for n in range(N)]
        assert all(np.all(np.diff(ts) > model.refractory_steps) for ts in t_idx)


@pytest.mark.parametrize("tau_syn", [0.0, 5.0])
def test_li_step_equals_reference(tau_syn):
    model = LI(tau_mem_ms=8.0, tau_syn_ms=tau_syn)
    x = np.random.default_rng(7).standard_normal((T_STEPS, B, N))
    i_ref, v_ref = ref_li(model, 1.0, x)
    spikes, states = run_steps(model, 1.0, x)
    assert all(s is None for s in spikes)
    assert all(isinstance(st, LIState) for st in states)
    assert np.array_equal(np.stack([st.i for st in states]), i_ref)
    assert np.array_equal(np.stack([st.v for st in states]), v_ref)


@pytest.mark.parametrize("model", [LIF(), ALIF(refractory_steps=2), LI(tau_syn_ms=2.0)])
def test_step_keeps_float32(model):
    x = np.random.default_rng(0).exponential(3.0, (20, 2, 3))
    spikes, states = run_steps(model, 1.0, x, np.float32)
    for st in states:
        for f, arr in zip(st._fields, st):
            assert arr.dtype == (np.int32 if f == "r" else np.float32), f
    # float32 stays close to the float64 reference of the same input.
    ref = {LIF: lambda: ref_lif(model, 1.0, x.astype(np.float32).astype(float))[2],
           ALIF: lambda: ref_alif(model, 1.0, x.astype(np.float32).astype(float))[1],
           LI: lambda: ref_li(model, 1.0, x.astype(np.float32).astype(float))[1]}[type(model)]()
    np.testing.assert_allclose(np.stack([st.v for st in states]), ref, rtol=1e-4, atol=1e-5)


def test_decays_and_init_state():
    assert LIF(tau_mem_ms=20.0, tau_syn_ms=5.0).consts(0.5) == {"a": math.exp(-0.1), "b": math.exp(-0.025)}
    assert LIF(tau_syn_ms=0.0).consts(1.0)["a"] == 0.0
    assert ALIF(tau_mem_ms=10.0, tau_adapt_ms=100.0).consts(2.0) == {"alpha": math.exp(-0.2),
                                                                      "rho": math.exp(-0.02)}
    assert SpikeSource().consts(1.0) == {}
    st = ALIF().init_state(2, 5, np.float32)
    assert [a.shape for a in st] == [(2, 5)] * 4 and [a.dtype for a in st][-1] == np.int32
    assert all(not a.any() for a in st)
    assert SpikeSource().init_state(2, 5, np.float64) == ()
    with raises_naming(NetworkError, "SpikeSource"):
        SpikeSource().step(np.zeros((1, 1)), (), {})


@pytest.mark.parametrize("model", [LIF(), ALIF(refractory_steps=2), LI(), SpikeSource()],
                         ids=["LIF", "ALIF", "LI", "SpikeSource"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_bytes_are_the_bytes_of_the_initial_state(model, dtype):
    """What the memory model charges per neuron and sample (state_bytes) is what init_state holds."""
    batch, n = 3, 7
    state = model.init_state(batch, n, dtype)
    held = sum(np.asarray(a).nbytes for a in state)
    assert model.state_bytes(np.dtype(dtype).itemsize) * batch * n == held
    assert (held > 0) == (not isinstance(model, SpikeSource))
