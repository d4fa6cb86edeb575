"""Tests of the network description (spinnray.model.network) and the neuron models
(spinnray.model.neurons), without Ray.

Validation errors must name the offending value; the step functions must equal
a scalar, hand-written transcription of the equations in neuron.py's module
docstring; ``accumulate_events`` must equal a plain sequential loop bit for bit
and not depend on which columns or samples are computed beside a column.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinnray.errors import NetworkError
from spinnray.model.network import MAX_DELAY_STEPS, Network
from spinnray.machine.synapses import accumulate_events
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

# ------------------------------------------------------------------ helpers


def raises_naming(exc, *texts):
    """Context manager: ``exc`` is raised and its message contains every text."""

    class _Ctx:
        def __enter__(self):
            self._cm = pytest.raises(exc)
            self.info = self._cm.__enter__()
            return self.info

        def __exit__(self, *a):
            handled = self._cm.__exit__(*a)
            msg = str(self.info.value)
            for t in texts:
                assert t in msg, f"{t!r} not in {msg!r}"
            return handled

    return _Ctx()


def two_pops(pre_model=None, post_model=None, n_pre=3, n_post=4):
    net = Network()
    a = net.population("a", n_pre, pre_model or SpikeSource())
    b = net.population("b", n_post, post_model or LIF())
    return net, a, b


# -------------------------------------------------------------- populations


@pytest.mark.parametrize("bad", [0, -3, 2.5, "3", None])
def test_population_size_must_be_positive_int(bad):
    net = Network()
    with raises_naming(NetworkError, "'p'", f"size = {bad!r}"):
        net.population("p", bad, LIF())
    assert net.populations == {}


@pytest.mark.parametrize("bad", ["1abc", "a b", "", "x-y", 7])
def test_population_name_must_be_identifier(bad):
    with raises_naming(NetworkError, repr(bad)):
        Network().population(bad, 3, LIF())


def test_population_accepts_numpy_ints_and_indexes_in_order():
    net = Network()
    a = net.population("a", np.int64(5), SpikeSource())
    b = net.population("b", 2, LI())
    assert type(a.size) is int and a.size == 5
    assert (a.index, b.index) == (0, 1)
    assert net["a"] is a and net[b] is b


def test_duplicate_population_name():
    net = Network()
    net.population("a", 3, LIF())
    with raises_naming(NetworkError, "'a'", "exists already"):
        net.population("a", 4, ALIF())
    assert net.populations["a"].size == 3


def test_unknown_and_foreign_populations():
    net, a, _ = two_pops()
    other = Network()
    foreign = other.population("a", 3, SpikeSource())
    with raises_naming(NetworkError, "'zz'", "['a', 'b']"):
        net.connect("zz", "b", np.zeros((3, 4)))
    with raises_naming(NetworkError, "'a'", "does not belong"):
        net.connect(foreign, "b", np.zeros((3, 4)))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "1"])
def test_network_dt_must_be_positive(bad):
    with raises_naming(NetworkError, f"dt_ms = {bad!r}"):
        Network(dt_ms=bad)


@pytest.mark.parametrize("build", [
    lambda: Network().population("p", True, LIF()),
    lambda: Network(dt_ms=True),
    lambda: ALIF(refractory_steps=True),
], ids=["population-size", "dt_ms", "refractory_steps"])
def test_bools_are_not_numbers(build):
    with pytest.raises(NetworkError):
        build()


@pytest.mark.parametrize("build", [
    lambda: LIF(v_th=float("nan")),
    lambda: LIF(v_reset=float("inf")),
    lambda: Network(dt_ms=float("inf")),
], ids=["lif-v_th-nan", "lif-v_reset-inf", "dt_ms-inf"])
def test_non_finite_parameters_are_refused(build):
    with pytest.raises(NetworkError):
        build()


# -------------------------------------------------------------- projections


@pytest.mark.parametrize("w, texts", [
    (np.zeros((4, 3)), ["(4, 3)", "(3, 4)"]),
    (np.zeros(12), ["(12,)", "(3, 4)"]),
    (np.zeros((3, 4), bool), ["dtype bool"]),
    (np.zeros((3, 4), complex), ["dtype complex128"]),
    (np.full((3, 4), "x"), ["<U1"]),
])
def test_weights_shape_and_dtype(w, texts):
    net, a, b = two_pops()
    with raises_naming(NetworkError, "'a->b'", *texts):
        net.connect(a, b, w)
    assert net.projections == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(bad):
    net, a, b = two_pops()
    w = np.ones((3, 4))
    w[1, 2] = bad
    with raises_naming(NetworkError, "'a->b'", "non-finite"):
        net.connect(a, b, w)


def test_non_finite_weights_error_names_the_value():
    net, a, b = two_pops()
    w = np.ones((3, 4))
    w[1, 2] = np.nan
    with raises_naming(NetworkError, "nan", "(1, 2)"):
        net.connect(a, b, w)


@pytest.mark.parametrize("bad, text", [
    (0, "delay = 0"), (MAX_DELAY_STEPS + 1, "delay = 256"), (-1, "delay = -1"), (1.0, "delay = 1.0"),
    (True, "delay = True"), ("2", "delay = '2'"), (np.array(0), "delay = 0"),
])
def test_scalar_delays(bad, text):
    net, a, b = two_pops()
    with raises_naming(NetworkError, "'a->b'", text, "[1, 255]"):
        net.connect(a, b, np.ones((3, 4)), delays=bad)


@pytest.mark.parametrize("lo, hi", [(0, 3), (1, 256), (-2, 4)])
def test_per_synapse_delays_out_of_range(lo, hi):
    net, a, b = two_pops()
    d = np.full((3, 4), 2)
    d[0, 0], d[2, 3] = lo, hi
    with raises_naming(NetworkError, "'a->b'", f"[{lo}, {hi}]", "[1, 255]"):
        net.connect(a, b, np.ones((3, 4)), delays=d)


@pytest.mark.parametrize("d, texts", [
    (np.ones((3, 4)), ["dtype float64"]), (np.ones((4, 3), int), ["(4, 3)"]), (np.ones((3,), int), ["(3,)"]),
])
def test_per_synapse_delays_shape_and_dtype(d, texts):
    net, a, b = two_pops()
    with raises_naming(NetworkError, "'a->b'", *texts):
        net.connect(a, b, np.ones((3, 4)), delays=d)


def test_delays_accepted_and_stored():
    net, a, b = two_pops()
    p1 = net.connect(a, b, np.ones((3, 4), int), delays=np.int32(255))
    d = np.arange(12).reshape(3, 4) % 5 + 1
    p2 = net.connect(a, b, np.ones((3, 4)), delays=d)
    assert p1.delays == 255 and type(p1.delays) is int and p1.weights.dtype == np.float64
    assert p2.delays.dtype == np.uint8 and np.array_equal(p2.delays, d)
    assert (p2.min_delay, p2.max_delay) == (1, 5)
    assert p2.delay_values().tolist() == [1, 2, 3, 4, 5]
    assert net.min_delay == 1 and Network().min_delay == MAX_DELAY_STEPS
    assert [p.name for p in net.projections] == ["a->b", "a->b#1"]


@pytest.mark.parametrize("mask, texts", [
    (np.ones((3, 4), int), ["dtype int64"]), (np.ones((3, 4), float), ["dtype float64"]),
    (np.ones((4, 3), bool), ["(4, 3)"]),
])
def test_mask_shape_and_dtype(mask, texts):
    net, a, b = two_pops()
    with raises_naming(NetworkError, "'a->b'", *texts, "bool"):
        net.connect(a, b, np.ones((3, 4)), mask=mask)


def test_mask_zeroes_absent_synapses():
    net, a, b = two_pops()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4))
    m = rng.random((3, 4)) < 0.5
    d = rng.integers(1, 9, (3, 4))
    p = net.connect(a, b, w, delays=d, mask=m)
    assert np.array_equal(p.weights, np.where(m, w, 0.0))
    assert p.delay_values().tolist() == sorted(set(d[m].tolist()))


def test_duplicate_projection_name():
    net, a, b = two_pops()
    net.connect(a, b, np.ones((3, 4)), name="syn")
    with raises_naming(NetworkError, "'syn'", "exists already"):
        net.connect(a, b, np.ones((3, 4)), name="syn")
    assert len(net.projections) == 1


def test_no_projection_into_a_spike_source():
    net, a, b = two_pops()
    with raises_naming(NetworkError, "'b->a'", "'a'", "SpikeSource"):
        net.connect(b, a, np.ones((4, 3)))


def test_no_projection_from_an_li_readout():
    net, a, b = two_pops(post_model=LI())
    c = net.population("c", 2, LIF())
    with raises_naming(NetworkError, "'b->c'", "'b'", "LI"):
        net.connect(b, c, np.ones((4, 2)))
    net.connect(a, b, np.ones((3, 4)))           # into an LI is fine


def test_incoming_and_outgoing():
    net, a, b = two_pops()
    p1 = net.connect(a, b, np.ones((3, 4)))
    p2 = net.connect(b, b, np.ones((4, 4)))
    assert net.incoming(b) == [p1, p2] and net.outgoing(a) == [p1] and net.outgoing(b) == [p2]
    assert net.incoming(a) == []


# ------------------------------------------------------------ neuron models


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


# ----------------------------------------------------- step vs scalar reference


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


# -------------------------------------------------------- accumulate_events


def ref_accumulate(n_batch, b, rows):
    out = np.zeros((n_batch, rows.shape[1]), rows.dtype)
    for e in range(len(b)):
        for j in range(rows.shape[1]):
            out[b[e], j] += rows[e, j]
    return out


def random_events(rng, n_batch, n_events, n, dtype):
    b = rng.integers(0, n_batch, n_events)
    # Mixed magnitudes, so that a different summation order gives different bits.
    rows = (rng.standard_normal((n_events, n)) * 10.0 ** rng.integers(-3, 6, (n_events, n))).astype(dtype)
    return b, rows


def test_accumulate_is_sequential_in_event_order():
    rows = np.array([[1.0], [1e8], [-1e8]], np.float32)
    b = np.zeros(3, np.int64)
    assert accumulate_events(1, b, rows).tolist() == [[0.0]]              # (1 + 1e8) - 1e8 in float32
    assert accumulate_events(1, b, rows[[1, 2, 0]]).tolist() == [[1.0]]   # (1e8 - 1e8) + 1
    # Interleaved with another sample's events, each sample keeps its own order.
    rows2 = np.array([[1.0], [5.0], [1e8], [-1e8], [7.0]], np.float32)
    b2 = np.array([0, 1, 0, 0, 1])
    assert accumulate_events(2, b2, rows2).tolist() == [[0.0], [12.0]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_batch", [1, 2, 5])
@pytest.mark.parametrize("seed", range(4))
def test_accumulate_equals_sequential_loop(seed, n_batch, dtype):
    rng = np.random.default_rng(seed)
    n_events = int(rng.integers(9 * n_batch, 40 * n_batch))      # more than 8 events per sample on average
    n = int(rng.integers(1, 12))
    b, rows = random_events(rng, n_batch, n_events, n, dtype)
    if n_batch > 1:
        assert np.bincount(b, minlength=n_batch).max() > 8
    got = accumulate_events(n_batch, b, rows)
    ref = ref_accumulate(n_batch, b, rows)
    assert got.shape == (n_batch, n) and got.dtype == rows.dtype
    assert np.array_equal(got, ref)


def test_accumulate_sample_without_events_is_zero():
    b = np.array([0, 2, 0, 2])
    rows = np.arange(8, dtype=np.float64).reshape(4, 2)
    assert accumulate_events(4, b, rows).tolist() == [[4.0, 6.0], [0.0, 0.0], [8.0, 10.0], [0.0, 0.0]]
    empty = accumulate_events(3, np.zeros(0, int), np.zeros((0, 5), np.float32))
    assert empty.shape == (3, 5) and empty.dtype == np.float32 and not empty.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_batch", [1, 3])
def test_accumulate_partition_invariance(n_batch, dtype):
    rng = np.random.default_rng(n_batch)
    n = 13
    b, rows = random_events(rng, n_batch, 30 * n_batch, n, dtype)
    full = accumulate_events(n_batch, b, rows)
    subsets = [[j] for j in range(n)]                               # single-column slices
    subsets += [list(range(lo, hi)) for lo, hi in ((0, 4), (4, 9), (9, 13), (0, 12), (3, 5))]
    subsets += [sorted(rng.choice(n, k, replace=False).tolist()) for k in (2, 5, 7)]
    for cols in subsets:
        part = accumulate_events(n_batch, b, np.ascontiguousarray(rows[:, cols]))
        assert np.array_equal(part, full[:, cols]), cols
    # Nor on which samples are computed beside it.
    if n_batch > 1:
        keep = b != 1
        sub = accumulate_events(n_batch, b[keep], rows[keep])
        assert np.array_equal(sub[[0, 2]], full[[0, 2]]) and not sub[1].any()
        only = accumulate_events(1, np.zeros(int((b == 2).sum()), int), rows[b == 2])
        assert np.array_equal(only[0], full[2])


@pytest.mark.parametrize("n_batch, n_events, n", [(1, 800, 100), (1, 1000, 256), (1, 50, 2), (32, 700, 120),
                                                  (32, 900, 2), (2, 300, 257), (7, 200, 1)])
def test_accumulate_sequential_on_core_sized_shapes(n_batch, n_events, n):
    """The fast reduce path stays strictly sequential on the shapes cores really use."""
    rng = np.random.default_rng(n_events + n)
    for dtype in (np.float32, np.float64):
        b, rows = random_events(rng, n_batch, n_events, n, dtype)
        assert np.array_equal(accumulate_events(n_batch, b, rows), ref_accumulate(n_batch, b, rows))
