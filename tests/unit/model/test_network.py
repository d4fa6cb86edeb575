"""spinnray.model.network: validation errors name the offending value; levels of feed-forward networks."""

from __future__ import annotations

import numpy as np
import pytest

from spinnray.errors import NetworkError
from spinnray.model.network import MAX_DELAY_STEPS, Network
from spinnray.model.neurons import (
    ALIF,
    LI,
    LIF,
    AnalogSource,
    SpikeSource,
)

from helpers import raises_naming


def two_pops(pre_model=None, post_model=None, n_pre=3, n_post=4):
    net = Network()
    a = net.population("a", n_pre, pre_model or SpikeSource())
    b = net.population("b", n_post, post_model or LIF())
    return net, a, b


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


def test_levels_follow_the_longest_spike_path():
    """Skip connections do not lower a level; analog input does not raise one."""
    w = np.ones
    net = Network()
    net.population("input", 4, SpikeSource())
    net.population("hidden1", 3, LIF())
    net.population("hidden2", 3, LIF())
    net.population("output", 2, LI())
    net.population("side", 2, LIF())
    net.population("analog", 2, AnalogSource())
    net.population("fed", 2, LIF())
    # added out of order on purpose: the skips first
    net.connect("hidden1", "output", w((3, 2)))
    net.connect("input", "hidden2", w((4, 3)))
    net.connect("hidden2", "output", w((3, 2)))
    net.connect("hidden1", "hidden2", w((3, 3)))
    net.connect("input", "hidden1", w((4, 3)))
    net.connect("input", "side", w((4, 2)))
    net.connect("analog", "fed", w((2, 2)))          # host-written input: no spike path
    net.connect("analog", "hidden2", w((2, 3)))
    assert net.levels() == {"input": 0, "hidden1": 1, "hidden2": 2, "output": 3, "side": 1, "analog": 0, "fed": 0}
    net.connect("fed", "side", w((2, 2)))
    assert net.levels()["side"] == 1 and net.levels()["fed"] == 0
    net.connect("side", "hidden1", w((2, 3)))   # input -> side -> hidden1: one deeper
    assert net.levels() == {"input": 0, "hidden1": 2, "hidden2": 3, "output": 4, "side": 1, "analog": 0, "fed": 0}


def test_levels_of_a_recurrent_network_name_the_projection():
    net = Network()
    net.population("input", 4, SpikeSource())
    net.population("hidden", 3, LIF())
    net.connect("input", "hidden", np.ones((4, 3)))
    net.connect("hidden", "hidden", np.ones((3, 3)), name="rec")
    with pytest.raises(NetworkError, match=r"projection 'rec' closes a cycle \('hidden' reaches itself\)"):
        net.levels()

    net = Network()
    net.population("input", 4, SpikeSource())
    net.population("a", 3, LIF())
    net.population("b", 3, LIF())
    net.population("c", 3, LIF())
    net.connect("input", "a", np.ones((4, 3)))
    net.connect("a", "b", np.ones((3, 3)))
    net.connect("b", "c", np.ones((3, 3)))
    net.connect("c", "a", np.ones((3, 3)))           # a -> b -> c -> a
    with pytest.raises(NetworkError, match="recurrent") as err:
        net.levels()
    named = [p.name for p in net.projections if f"projection {p.name!r}" in str(err.value)]
    assert len(named) == 1 and named[0] in ("a->b", "b->c", "c->a"), str(err.value)
