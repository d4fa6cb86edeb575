"""spinnray.model.nirgraph: a Network to and from a NIR graph.

* round trip spinnray -> NIR file -> spinnray: the same network, the same spikes and potentials;
* each convention's parameter mapping against hand computations, and its dynamics against an
  independent step loop written here from the frameworks' own code (snnTorch's ``Synaptic``,
  Norse's ``LIBox`` + ``LIFBox``, the NIR paper's ``nir_reference_impl.py``);
* the known differences between the conventions;
* what is refused, with the node (or population) and its type named.
"""

import math

import numpy as np
import pytest

nir = pytest.importorskip("nir")

from spinnray import ALIF, LI, LIF, AnalogSource, MachineConfig, Network, Simulator, SpikeSource  # noqa: E402
from spinnray.errors import ConfigError, DataError, NetworkError  # noqa: E402
from spinnray.model import nirgraph  # noqa: E402
from spinnray.model.nirgraph import from_nir, read_nir, to_nir, write_nir  # noqa: E402

from helpers import raises_naming  # noqa: E402

F64 = MachineConfig(dtype="float64")


def _run(net, inputs, steps, machine=F64, record=("spikes", "v")):
    batch = next(iter(inputs.values())).shape[1]
    with Simulator(net, machine, backend="local", batch_size=batch) as sim:
        return sim.run(steps, inputs, record=record)


def _full(n, v):
    return np.full(n, float(v))


# ---------------------------------------------------------------------------------------- round trip
def _mixed_network(seed=0):
    """Sources, recurrence, a skip path, per-synapse delays, masks, both resets, v_reset, LIF
    without a synaptic filter, LI readouts with and without one, two projections between a pair."""
    rng = np.random.default_rng(seed)
    net = Network(dt_ms=1.0)
    net.population("inp", 12, SpikeSource())
    net.population("hid", 15, LIF(tau_mem_ms=10.0, tau_syn_ms=4.0, v_th=0.5, v_reset=-0.1))
    net.population("sub", 7, LIF(tau_mem_ms=12.0, tau_syn_ms=0.0, v_th=0.7, reset="subtract"))
    net.population("out", 4, LI(tau_mem_ms=12.0, tau_syn_ms=3.0))
    net.population("ro", 2, LI(tau_mem_ms=7.0))
    net.connect("inp", "hid", rng.normal(0.4, 0.4, (12, 15)), delays=rng.integers(1, 4, (12, 15)))
    net.connect("hid", "hid", rng.normal(-0.05, 0.3, (15, 15)), delays=2, mask=rng.random((15, 15)) < 0.4)
    net.connect("inp", "sub", rng.normal(0.5, 0.3, (12, 7)), delays=1)
    net.connect("sub", "hid", rng.normal(0.2, 0.2, (7, 15)), delays=rng.integers(1, 3, (7, 15)))
    net.connect("hid", "out", rng.normal(0.3, 0.2, (15, 4)), delays=1)
    net.connect("hid", "out", rng.normal(0.1, 0.1, (15, 4)), delays=3, name="slow")
    net.connect("sub", "ro", rng.normal(0.3, 0.2, (7, 2)), delays=1)
    return net


def test_round_trip_through_a_file_gives_the_same_network_and_the_same_spikes(tmp_path):
    net = _mixed_network()
    write_nir(to_nir(net), tmp_path / "net.nir")
    imp = from_nir(read_nir(tmp_path / "net.nir"))
    back = imp.network
    assert list(back.populations) == list(net.populations) and back.dt_ms == net.dt_ms
    assert [p.model for p in back.populations.values()] == [p.model for p in net.populations.values()]
    assert [(q.name, q.pre.name, q.post.name) for q in back.projections] == \
        [(q.name, q.pre.name, q.post.name) for q in net.projections]
    for a, b in zip(net.projections, back.projections):
        np.testing.assert_array_equal(a.weights, b.weights)
        np.testing.assert_array_equal(np.broadcast_to(a.delays, a.weights.shape)[a.mask if a.mask is not None else ...],
                                      np.broadcast_to(b.delays, b.weights.shape)[a.mask if a.mask is not None else ...])
        assert (a.mask is None) == (b.mask is None)
        if a.mask is not None:
            np.testing.assert_array_equal(a.mask, b.mask)
    assert imp.outputs == ("out", "ro")
    x = {"inp": np.random.default_rng(1).random((120, 2, 12)) < 0.08}
    machine = MachineConfig()                                  # float32, as runs compute
    want, got = _run(net, x, 120, machine), _run(back, x, 120, machine)
    for name in want.spikes:
        assert want.spikes[name].any() or name == "inp"
        np.testing.assert_array_equal(want.spikes[name], got.spikes[name])
    for name in want.v:
        np.testing.assert_array_equal(want.v[name], got.v[name])


@pytest.mark.parametrize("convention", ["snntorch", "norse", "nir"])
def test_a_network_written_for_a_framework_and_read_back_as_that_framework_reads_it_spikes_the_same(convention):
    """Export for snnTorch, Norse or the NIR reference code, import under the same convention: the
    decays come back through dt / (1 - exp(-dt/tau)) and -dt / ln(1 - dt/tau), the weights through
    the convention's gains -- and the spikes and potentials are the same (float32, as runs compute)."""
    reset = "subtract" if convention == "nir" else "zero"
    rng = np.random.default_rng(0)
    net = Network(dt_ms=1.0)
    net.population("inp", 12, SpikeSource())
    net.population("hid", 15, LIF(tau_mem_ms=10.0, tau_syn_ms=4.0, v_th=0.5, reset=reset))
    net.population("sub", 7, LIF(tau_mem_ms=12.0, tau_syn_ms=0.0, v_th=0.7, reset=reset))
    net.population("out", 4, LI(tau_mem_ms=12.0, tau_syn_ms=3.0))
    net.connect("inp", "hid", rng.normal(0.4, 0.4, (12, 15)), delays=rng.integers(1, 4, (12, 15)))
    net.connect("hid", "hid", rng.normal(-0.05, 0.3, (15, 15)), delays=2, mask=rng.random((15, 15)) < 0.4)
    net.connect("inp", "sub", rng.normal(0.5, 0.3, (12, 7)), delays=1)
    net.connect("sub", "hid", rng.normal(0.2, 0.2, (7, 15)), delays=rng.integers(1, 3, (7, 15)))
    net.connect("hid", "out", rng.normal(0.3, 0.2, (15, 4)), delays=1)
    back = from_nir(to_nir(net, convention=convention), convention=convention).network
    x = {"inp": rng.random((150, 3, 12)) < 0.08}
    want, got = _run(net, x, 150, MachineConfig()), _run(back, x, 150, MachineConfig())
    assert want.spikes["hid"].sum() > 100 and want.spikes["sub"].sum() > 10
    for name in want.spikes:
        np.testing.assert_array_equal(want.spikes[name], got.spikes[name])
    np.testing.assert_array_equal(want.v["out"], got.v["out"])


def test_export_writes_delay_nodes_only_beyond_the_offsets_and_records_them():
    """hid is reached from inp in 1 step (offset 1); sub -> hid then needs its delays of 1-2 steps
    as Delay nodes (sub's offset is 1 too), one Linear + Delay pair per distinct delay."""
    g = to_nir(_mixed_network())
    m = g.metadata
    assert (m["spinnray_convention"], m["spinnray_dt"], m["spinnray_time_unit"]) == ("spinnray", 1.0, "ms")
    assert {k: v for k, v in m.items() if k.startswith("spinnray_offset.")} == \
        {"spinnray_offset.inp": 0, "spinnray_offset.hid": 1, "spinnray_offset.sub": 1, "spinnray_offset.out": 2,
         "spinnray_offset.ro": 2}
    delays = {name: float(node.delay[0]) for name, node in g.nodes.items() if isinstance(node, nir.Delay)}
    assert delays == {"inp_to_hid_d1_delay": 1.0, "inp_to_hid_d2_delay": 2.0, "hid_to_hid_delay": 1.0,
                      "sub_to_hid_d1_delay": 1.0, "sub_to_hid_d2_delay": 2.0, "hid_to_out_1_delay": 2.0}
    node = g.nodes["hid"]
    assert isinstance(node, nir.CubaLIF) and node.metadata["spinnray_reset"] == "value"
    np.testing.assert_array_equal(node.w_in, node.tau_syn)          # a spike of weight W: I jumps by W
    np.testing.assert_array_equal(node.r, 1.0)
    assert isinstance(g.nodes["sub"], nir.LIF) and g.nodes["sub"].metadata["spinnray_reset"] == "subtract"
    assert isinstance(g.nodes["out"], nir.CubaLI) and isinstance(g.nodes["ro"], nir.LI)
    assert isinstance(g.nodes["out_out"], nir.Output) and isinstance(g.nodes["inp"], nir.Input)


def test_an_analog_input_round_trips_and_enters_in_its_own_step(tmp_path):
    rng = np.random.default_rng(3)
    net = Network(dt_ms=0.5)
    net.population("x", 3, AnalogSource())
    net.population("h", 5, LIF(tau_mem_ms=4.0, tau_syn_ms=2.0))
    net.population("y", 2, LI(tau_mem_ms=3.0))
    net.connect("x", "h", rng.normal(1.0, 0.5, (3, 5)))
    net.connect("h", "y", rng.normal(0.5, 0.2, (5, 2)))
    write_nir(to_nir(net), tmp_path / "a.nir")
    imp = from_nir(read_nir(tmp_path / "a.nir"))
    assert isinstance(imp.network["x"].model, AnalogSource) and imp.offsets == {"x": 0, "h": 0, "y": 1}
    x = {"x": rng.random((60, 2, 3)) * 2.0}
    want, got = _run(net, x, 60), _run(imp.network, x, 60)
    np.testing.assert_array_equal(want.spikes["h"], got.spikes["h"])
    np.testing.assert_array_equal(want.v["y"], got.v["y"])


# ------------------------------------------------------------------------------- parameter mapping by hand
W1 = np.array([[0.5, -1.0], [2.0, 0.25], [1.5, 1.0]])          # NIR (out, in): 2 inputs -> 3 neurons
R, W_IN = np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 2.0])


def _one_layer(tau_syn=2e-3, tau_mem=5e-3, v_th=0.8, metadata=None):
    return nir.NIRGraph(nodes={
        "in": nir.Input(input_type={"input": np.array([2])}),
        "w": nir.Linear(weight=W1),
        "lif": nir.CubaLIF(tau_syn=_full(3, tau_syn), tau_mem=_full(3, tau_mem), r=R, v_leak=_full(3, 0),
                           v_threshold=_full(3, v_th), w_in=W_IN),
        "out": nir.Output(output_type={"output": np.array([3])})},
        edges=[("in", "w"), ("w", "lif"), ("lif", "out")], metadata=metadata or {}, type_check=False)


@pytest.mark.parametrize("convention", ["snntorch", "norse"])
def test_euler_conventions_map_parameters_as_computed_by_hand(convention):
    """dt = 1 ms, tau_syn = 2 ms, tau_mem = 5 ms: decays 1 - 1/2 = 0.5 and 1 - 1/5 = 0.8, so
    spinnray's tau = -1 ms / ln(decay); each input weight times w_in dt/tau_syn * r."""
    imp = from_nir(_one_layer(), convention=convention, dt=1e-3)
    lif = imp.network["lif"].model
    assert imp.network.dt_ms == pytest.approx(1.0)
    assert lif.tau_syn_ms == pytest.approx(-1.0 / math.log(0.5)) and lif.tau_mem_ms == pytest.approx(-1.0 / math.log(0.8))
    assert math.exp(-1.0 / lif.tau_syn_ms) == pytest.approx(0.5) and math.exp(-1.0 / lif.tau_mem_ms) == pytest.approx(0.8)
    assert (lif.v_th, lif.v_reset, lif.reset) == (0.8, 0.0, "zero")
    (q,) = imp.network.projections
    np.testing.assert_allclose(q.weights, W1.T * (W_IN * 0.5 * R)[None, :])
    assert q.delays == 1 and imp.offsets == {"in": 0, "lif": 1}


def test_the_spinnray_convention_maps_parameters_as_computed_by_hand():
    """Exact for I: a spike of weight W makes I jump by w_in W / tau_syn; V's gain (1 - b) r folds
    into the weights as r; tau in seconds becomes ms."""
    imp = from_nir(_one_layer(), convention="spinnray", dt=1e-3, time_unit="s")
    lif = imp.network["lif"].model
    assert (lif.tau_syn_ms, lif.tau_mem_ms) == pytest.approx((2.0, 5.0))
    np.testing.assert_allclose(imp.network.projections[0].weights, W1.T * (W_IN / 2e-3 * R)[None, :])


def test_the_nir_convention_adds_the_one_step_lag_and_subtracts():
    imp = from_nir(_one_layer(), convention="nir", dt=1e-3, time_unit="s")
    lif = imp.network["lif"].model
    assert lif.reset == "subtract"
    q = imp.network.projections[0]
    # the previous step's I: the input of step t moves V at t + 1, as a spinnray projection of one step
    # does, so the population keeps the graph's own timing (offset 0, where the other conventions have 1)
    assert q.delays == 1 and imp.offsets["lif"] == 0


def test_unit_threshold_scales_weights_and_reset_by_the_threshold():
    g = _one_layer()
    g.nodes["lif"].v_reset = _full(3, 0.2)
    plain = from_nir(g, convention="spinnray", dt=1e-3, time_unit="s")
    unit = from_nir(g, convention="spinnray", dt=1e-3, time_unit="s", unit_threshold=True)
    a, b = plain.network["lif"].model, unit.network["lif"].model
    assert (a.v_th, a.v_reset, b.v_th, b.v_reset) == pytest.approx((0.8, 0.2, 1.0, 0.25))
    np.testing.assert_allclose(unit.network.projections[0].weights, plain.network.projections[0].weights / 0.8)


def test_snntorch_and_norse_read_alike_at_one_step_and_differ_in_their_default_step():
    """The two importers compute the same Euler update; only snnTorch's hard-coded 1e-4 s against
    Norse's default 1e-3 s sets them apart (a graph from snnTorch must be read at 1e-4 s)."""
    g = _one_layer(tau_syn=2e-3, tau_mem=5e-3)
    a, b = (from_nir(g, convention=c, dt=1e-4) for c in ("snntorch", "norse"))
    assert a.network["lif"].model == b.network["lif"].model
    np.testing.assert_array_equal(a.network.projections[0].weights, b.network.projections[0].weights)
    sn, no = from_nir(g, convention="snntorch"), from_nir(g, convention="norse")
    assert (sn.network.dt_ms, no.network.dt_ms) == pytest.approx((0.1, 1.0))
    assert sn.network["lif"].model.tau_syn_ms == pytest.approx(-0.1 / math.log(1 - 1e-4 / 2e-3))
    assert no.network["lif"].model.tau_syn_ms == pytest.approx(-1.0 / math.log(1 - 1e-3 / 2e-3))


def test_the_spinnray_convention_decays_exactly_where_euler_approximates():
    """Read at the same step, spinnray's convention decays by exp(-dt/tau) and the Euler ones by
    1 - dt/tau: with dt = tau_syn / 2, 0.6065 against 0.5."""
    g = _one_layer()
    ex = from_nir(g, convention="spinnray", dt=1e-3, time_unit="s").network["lif"].model
    eu = from_nir(g, convention="norse", dt=1e-3).network["lif"].model
    assert math.exp(-1.0 / ex.tau_syn_ms) == pytest.approx(math.exp(-0.5))
    assert math.exp(-1.0 / eu.tau_syn_ms) == pytest.approx(0.5)


# ---------------------------------------------------------------------- dynamics against the frameworks' code
N_IN, N_H, N_O, STEPS = 4, 6, 3, 90


def _two_layers(rng, *, tau_syn, tau_mem, r, w_in, v_th, recurrent=False):
    """Input -> Linear -> CubaLIF -> Linear -> CubaLIF (-> Linear back to the first: recurrent)."""
    w1 = rng.normal(1.2, 0.8, (N_H, N_IN))
    w2 = rng.normal(0.9, 0.6, (N_O, N_H))
    wr = rng.normal(0.0, 0.5, (N_H, N_H)) if recurrent else None

    def cuba(n, k):
        per = lambda v: np.broadcast_to(np.asarray(v, float), (n,)).copy()     # noqa: E731
        return nir.CubaLIF(tau_syn=_full(n, tau_syn[k]), tau_mem=_full(n, tau_mem[k]), r=per(r[k]),
                           v_leak=_full(n, 0), v_threshold=_full(n, v_th[k]), w_in=per(w_in[k]))

    nodes = {"in": nir.Input(input_type={"input": np.array([N_IN])}), "w1": nir.Linear(weight=w1), "h": cuba(N_H, 0),
             "w2": nir.Linear(weight=w2), "o": cuba(N_O, 1), "out": nir.Output(output_type={"output": np.array([N_O])})}
    edges = [("in", "w1"), ("w1", "h"), ("h", "w2"), ("w2", "o"), ("o", "out")]
    if recurrent:
        nodes["wr"] = nir.Linear(weight=wr)
        edges += [("h", "wr"), ("wr", "h")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), (w1, w2, wr)


def _reference(kind, graph, weights, x, dt):
    """The graph run step by step, in zero-delay time-stepped order (a layer sees the previous
    layer's spikes of the same step; the recurrent weights the previous step's), with the update of
    ``kind`` as each framework writes it."""
    w1, w2, wr = weights
    layers = [graph.nodes["h"], graph.nodes["o"]]
    state = [dict(i=np.zeros((x.shape[1], n.tau_syn.size)), v=np.zeros((x.shape[1], n.tau_syn.size)),
                  z=np.zeros((x.shape[1], n.tau_syn.size), bool)) for n in layers]
    out = [[], []]
    for t in range(x.shape[0]):
        inp = x[t].astype(float)
        for k, (node, w) in enumerate(zip(layers, (w1, w2))):
            u = inp @ w.T
            if k == 0 and wr is not None:
                u = u + state[0]["z"].astype(float) @ wr.T
            st = state[k]
            ts, tm, r, win, th = node.tau_syn, node.tau_mem, node.r, node.w_in, node.v_threshold
            if kind == "snntorch":                    # snnTorch Synaptic as its importer builds it
                alpha, beta = 1 - dt / ts, 1 - dt / tm
                w_scale = win * dt / ts                   # the importer rescales the threshold by it
                assert np.allclose(r, tm / dt)
                st["i"] = alpha * st["i"] + u
                st["v"] = beta * st["v"] + st["i"]
                z = st["v"] > th / w_scale
                st["v"] = np.where(z, 0.0, st["v"])
            elif kind == "norse":                     # Norse: w_in -> LIBoxCell(tau_syn) -> r -> LIFBoxCell
                st["i"] = st["i"] + dt / ts * (-st["i"] + win * u)
                st["v"] = st["v"] + dt / tm * (r * st["i"] - st["v"])
                z = st["v"] > th
                st["v"] = np.where(z, 0.0, st["v"])
            elif kind == "nir":                       # nir_reference_impl.py: CubaLIFImplementation.forward
                i_last = st["i"].copy()
                st["i"] = i_last + dt / ts * (-i_last + win * u)
                st["v"] = st["v"] + dt / tm * (0.0 - st["v"] + r * i_last)
                z = st["v"] > th
                st["v"] = st["v"] - z * th
            else:                                     # spinnray: exact I for Dirac spikes, exponential-Euler V
                a, b = np.exp(-dt / ts), np.exp(-dt / tm)
                st["i"] = a * st["i"] + win / ts * u
                st["v"] = b * st["v"] + (1 - b) * r * st["i"]
                z = st["v"] > th
                st["v"] = np.where(z, 0.0, st["v"])
            st["z"] = z
            out[k].append(z)
            inp = z
    return [np.array(o) for o in out]


CASES = {   # convention: (dt, tau_syn, tau_mem, r, w_in, v_th) -- in the convention's unit
    "snntorch": (1e-4, (4e-4, 3e-4), (1e-3, 8e-4), (None, None), (None, None), (1.0, 1.0)),
    "norse": (1e-3, (4e-3, 3e-3), (1e-2, 8e-3), ((0.5, 1.0, 1.5, 2.0, 0.8, 1.2), 1.3), ((1.0, 2.0, 0.5, 1.5, 1.0, 0.7), 0.9), (1.0, 0.6)),
    "nir": (1.0, (4.0, 3.0), (10.0, 8.0), ((0.5, 1.0, 1.5, 2.0, 0.8, 1.2), 1.3), ((1.0, 2.0, 0.5, 1.5, 1.0, 0.7), 0.9), (0.7, 0.6)),
    "spinnray": (1.0, (4.0, 3.0), (10.0, 8.0), ((0.5, 1.0, 1.5, 2.0, 0.8, 1.2), 1.3), ((1.2, 2.4, 0.8, 2.0, 1.2, 1.0), 2.4), (0.7, 0.6)),
}


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("convention", sorted(CASES))
def test_each_convention_runs_as_the_frameworks_code_reads_the_graph(convention, recurrent):
    dt, ts, tm, r, w_in, th = CASES[convention]
    if convention == "snntorch":              # snnTorch's own form: r = tau_mem/dt, w_in = tau_syn/dt
        r = (tm[0] / dt, tm[1] / dt)
        w_in = (ts[0] / dt, ts[1] / dt)
    rng = np.random.default_rng(11)
    graph, weights = _two_layers(rng, tau_syn=ts, tau_mem=tm, r=r, w_in=w_in, v_th=th, recurrent=recurrent)
    x = rng.random((STEPS, 2, N_IN)) < 0.25
    ref_h, ref_o = _reference(convention, graph, weights, x, dt)
    imp = from_nir(graph, convention=convention, dt=dt, reset="value" if convention == "spinnray" else None)
    k = max(imp.offsets.values())
    res = _run(imp.network, {"in": np.concatenate([x, np.zeros((k, 2, N_IN), bool)])}, STEPS + k)
    assert ref_h.sum() > 20 and ref_o.sum() > 5
    for node, ref in (("h", ref_h), ("o", ref_o)):
        o = imp.offsets[node]
        np.testing.assert_array_equal(res.spikes[node][o:o + STEPS], ref)


def test_the_nir_references_lag_and_subtraction_change_the_spikes_of_the_same_graph():
    """The known difference: the same graph read the NIR-reference way (previous I, subtract) spikes
    a step later per layer than read the Norse way (new I, reset to 0): its populations keep the
    graph's time (offsets 0), the Norse reading's are one step behind per layer (offsets 1, 2)."""
    dt, ts, tm, r, w_in, th = CASES["nir"]
    rng = np.random.default_rng(11)
    graph, weights = _two_layers(rng, tau_syn=ts, tau_mem=tm, r=r, w_in=w_in, v_th=th)
    a, b = from_nir(graph, convention="nir", dt=dt), from_nir(graph, convention="norse", dt=dt, time_unit="ms")
    assert a.offsets == {"in": 0, "h": 0, "o": 0} and [q.delays for q in a.network.projections] == [1, 1]
    assert b.offsets == {"in": 0, "h": 1, "o": 2} and [q.delays for q in b.network.projections] == [1, 1]
    x = rng.random((STEPS, 2, N_IN)) < 0.25
    nir_h, _ = _reference("nir", graph, weights, x, dt)
    norse_h, _ = _reference("norse", graph, weights, x, dt)
    first = lambda s: np.argmax(s.any(axis=(1, 2)))        # noqa: E731
    assert first(nir_h) == first(norse_h) + 1 and not np.array_equal(nir_h, norse_h)


# -------------------------------------------------------------------------------- what graphs look like
def test_snntorch_style_scalar_parameters_take_their_size_from_the_weights():
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([1, 3])}),
                            "0": nir.Linear(weight=np.ones((4, 3))),
                            "1": nir.CubaLIF(tau_syn=np.array(2e-4), tau_mem=np.array(5e-4), r=np.array(5.0),
                                             v_leak=np.array(0.0), v_threshold=np.array(1.0), w_in=np.array(2.0)),
                            "output": nir.Output(output_type={"output": np.array([4])})},
                     edges=[("input", "0"), ("0", "1"), ("1", "output")], type_check=False)
    imp = from_nir(g, convention="snntorch")
    assert imp.network["n1"].size == 4 and imp.network["input"].size == 3 and imp.nodes["1"] == "n1"
    # g_I = w_in dt/tau_syn = 1 and g_V = r dt/tau_mem = 1 (mem = beta mem + syn): times 1/(1 - beta) = 5
    np.testing.assert_allclose(imp.network.projections[0].weights, np.full((3, 4), 1 / (1 - (1 - 1e-4 / 5e-4))))


def test_a_nested_recurrent_graph_as_snntorch_writes_it_becomes_a_one_step_recurrent_projection():
    w_rec = np.array([[0.0, 0.5], [-0.5, 0.0]])
    lif = nir.CubaLIF(tau_syn=_full(2, 2.0), tau_mem=_full(2, 5.0), r=_full(2, 1.0), v_leak=_full(2, 0),
                      v_threshold=_full(2, 1.0), w_in=_full(2, 2.0))
    sub = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}), "lif": lif,
                              "w_rec": nir.Linear(weight=w_rec), "output": nir.Output(output_type={"output": np.array([2])})},
                       edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")], type_check=False)
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}), "0": nir.Linear(weight=np.ones((2, 3))),
                            "1": sub, "output": nir.Output(output_type={"output": np.array([2])})},
                     edges=[("input", "0"), ("0", "1"), ("1", "output")], type_check=False)
    imp = from_nir(g, dt=1.0)
    assert imp.nodes["1.lif"] == "n1_lif" and imp.offsets["n1_lif"] == 1 and imp.outputs == ("n1_lif",)
    rec = [q for q in imp.network.projections if q.pre.name == q.post.name == "n1_lif"]
    assert len(rec) == 1 and rec[0].delays == 1
    np.testing.assert_allclose(rec[0].weights, w_rec.T)         # w_in / tau_syn = 1, r = 1


def test_delay_nodes_before_and_after_the_weights_become_per_synapse_delays():
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([2])}),
                            "d_pre": nir.Delay(delay=np.array([0.0, 2.0])),
                            "w": nir.Linear(weight=np.ones((3, 2))),
                            "d_post": nir.Delay(delay=np.array([1.0, 0.0, 3.0])),
                            "h": nir.LIF(tau=_full(3, 5.0), r=_full(3, 1.0), v_leak=_full(3, 0), v_threshold=_full(3, 1.0)),
                            "out": nir.Output(output_type={"output": np.array([3])})},
                     edges=[("in", "d_pre"), ("d_pre", "w"), ("w", "d_post"), ("d_post", "h"), ("h", "out")],
                     type_check=False)
    (q,) = from_nir(g, dt=1.0).network.projections
    np.testing.assert_array_equal(q.delays, 1 + np.array([[0], [2]]) + np.array([[1, 0, 3]]))


def test_an_edge_without_weights_is_one_to_one():
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([3])}),
                            "h": _cuba(w_in=np.array([1.0, 2.0, 4.0])),
                            "out": nir.Output(output_type={"output": np.array([3])})},
                     edges=[("in", "h"), ("h", "out")], type_check=False)
    (q,) = from_nir(g, dt=1e-3, time_unit="s").network.projections
    np.testing.assert_allclose(q.weights, np.diag([1.0, 2.0, 4.0]) / 2e-3)        # w_in / tau_syn, r = 1


def test_the_step_comes_from_the_argument_the_graph_or_the_convention():
    g = _one_layer(metadata={"spinnray_dt": 0.5, "spinnray_time_unit": "ms"})
    assert from_nir(g).network.dt_ms == 0.5
    assert from_nir(g, dt=0.25).network.dt_ms == 0.25
    assert from_nir(g, time_unit="s").dt == pytest.approx(0.5e-3)
    assert from_nir(_one_layer(), convention="snntorch").dt == 1e-4
    with raises_naming(ConfigError, "dt: the graph records no time step and convention 'nir' has no default"):
        from_nir(_one_layer(), convention="nir")
    with raises_naming(ConfigError, "convention = 'lava'"):
        from_nir(_one_layer(), convention="lava", dt=1.0)


# ------------------------------------------------------------------------------------------- refusals
def _swap(node_name, node, edges=None):
    g = _one_layer()
    g.nodes[node_name] = node
    if edges is not None:
        g.edges = edges
    return g


@pytest.mark.parametrize("node, type_name", [
    (nir.IF(r=_full(3, 1), v_threshold=_full(3, 1)), "IF"),
    (nir.I(r=_full(3, 1)), "I"),
    (nir.Threshold(threshold=_full(3, 1)), "Threshold"),
    (nir.Scale(scale=_full(3, 2)), "Scale"),
    (nir.Flatten(input_type={"input": np.array([3])}), "Flatten"),
])
def test_a_node_spinnray_cannot_represent_is_refused_by_name_and_type(node, type_name):
    with raises_naming(NetworkError, f"NIR node 'lif' of type {type_name}: spinnray cannot represent it",
                       "it reads Input, Output, Linear, Affine"):
        from_nir(_swap("lif", node), dt=1e-3, time_unit="s")


def test_a_convolution_is_refused_by_name_and_type():
    conv = nir.Conv1d(input_shape=8, weight=np.ones((2, 1, 3)), stride=1, padding=0, dilation=1, groups=1,
                      bias=np.zeros(2))
    with raises_naming(NetworkError, "NIR node 'w' of type Conv1d"):
        from_nir(_swap("w", conv), dt=1e-3, time_unit="s")


def _cuba(n=3, **over):
    p = dict(tau_syn=_full(n, 2e-3), tau_mem=_full(n, 5e-3), r=_full(n, 1), v_leak=_full(n, 0),
             v_threshold=_full(n, 1), w_in=_full(n, 1))
    p.update(over)
    return nir.CubaLIF(**p)


@pytest.mark.parametrize("graph, texts", [
    (lambda: _swap("lif", _cuba(v_leak=_full(3, 0.1))), ("'lif' (CubaLIF): v_leak = 0.1", "expected v_leak = 0")),
    (lambda: _swap("lif", _cuba(tau_mem=np.array([5e-3, 5e-3, 6e-3]))), ("'lif' (CubaLIF): tau_mem takes 2 values",)),
    (lambda: _swap("w", nir.Affine(weight=W1, bias=np.array([0.0, 0.1, 0.0]))), ("'w' (Affine) has a non-zero bias",)),
    (lambda: _swap("w", nir.Linear(weight=np.ones((3, 5)))), ("'in' gives 2 values and 'w' takes 5",)),
])
def test_parameters_spinnray_cannot_hold_are_refused_by_node(graph, texts):
    with raises_naming(NetworkError, *texts):
        from_nir(graph(), dt=1e-3, time_unit="s")


def test_graph_shapes_spinnray_cannot_hold_are_refused_by_node():
    g = _one_layer()
    g.nodes["w2"] = nir.Linear(weight=np.ones((3, 3)))
    g.edges = [("in", "w"), ("w", "w2"), ("w2", "lif"), ("lif", "out")]
    with raises_naming(NetworkError, "NIR nodes 'w' and 'w2': two weight nodes in a row"):
        from_nir(g, dt=1e-3, time_unit="s")
    g = _one_layer()
    g.nodes["d"] = nir.Delay(delay=_full(3, 1.5e-3))
    g.edges = [("in", "w"), ("w", "d"), ("d", "lif"), ("lif", "out")]
    with raises_naming(NetworkError, "NIR node 'd' (Delay)", "not whole steps of dt = 0.001"):
        from_nir(g, dt=1e-3, time_unit="s")
    g = _one_layer()
    g.nodes["w_out"] = nir.Linear(weight=np.ones((2, 3)))
    g.nodes["out"] = nir.Output(output_type={"output": np.array([2])})
    g.edges = [("in", "w"), ("w", "lif"), ("lif", "w_out"), ("w_out", "out")]
    with raises_naming(NetworkError, "NIR node 'out' (Output) reads 'lif' through weights"):
        from_nir(g, dt=1e-3, time_unit="s")


def test_a_cycle_faster_than_spinnrays_projections_is_refused():
    """a -> b within the step and b -> a one step later: a loop of one step, where spinnray's two
    projections take two."""
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([3])}), "w": nir.Linear(weight=np.eye(3)),
                            "a": _cuba(), "wab": nir.Linear(weight=np.eye(3)), "b": _cuba(),
                            "wba": nir.Linear(weight=np.eye(3)), "out": nir.Output(output_type={"output": np.array([3])})},
                     edges=[("in", "w"), ("w", "a"), ("a", "wab"), ("wab", "b"), ("b", "wba"), ("wba", "a"), ("b", "out")],
                     type_check=False)
    with raises_naming(NetworkError, "NIR path 'b' -> wba -> 'a' would need a delay of 0 steps",
                       "faster than spinnray's projections"):
        from_nir(g, dt=1e-3, time_unit="s")


def test_a_v_reset_the_convention_ignores_is_refused():
    g = _swap("lif", _cuba(v_reset=_full(3, -0.5)))
    with raises_naming(NetworkError, "'lif' (CubaLIF): v_reset = -0.5; the snntorch convention's reader resets to 0"):
        from_nir(g, convention="snntorch")
    assert from_nir(g, dt=1e-3, time_unit="s").network["lif"].model.v_reset == -0.5


def test_export_refuses_what_nir_or_the_convention_cannot_describe():
    net = Network(dt_ms=1.0)
    net.population("i", 2, SpikeSource())
    net.population("a", 3, ALIF())
    net.connect("i", "a", np.ones((2, 3)))
    with raises_naming(NetworkError, "population 'a' is ALIF: no NIR node describes it"):
        to_nir(net)
    net = Network(dt_ms=1.0)
    net.population("i", 2, SpikeSource())
    net.population("s", 3, LIF(reset="subtract"))
    net.connect("i", "s", np.ones((2, 3)))
    with raises_naming(NetworkError, "population 's' resets by subtraction; the snntorch convention's reader resets "
                                     "to v_reset"):
        to_nir(net, convention="snntorch")
    assert isinstance(to_nir(net, convention="nir").nodes["s"], nir.CubaLIF)
    with raises_naming(ConfigError, "dt = 0.5 ms with convention 'spinnray'", "leave dt unset"):
        to_nir(net, dt=0.5)


def test_a_recurrent_projection_faster_than_the_nir_references_lag_is_refused_on_export():
    net = Network(dt_ms=1.0)
    net.population("i", 2, SpikeSource())
    net.population("h", 3, LIF(reset="subtract"))
    net.connect("i", "h", np.ones((2, 3)))
    net.connect("h", "h", np.ones((3, 3)), delays=1)
    with raises_naming(NetworkError, "the cycle through the projection 'h' -> 'h'"):
        to_nir(net, convention="nir")
    to_nir(net)                   # a one-step recurrence: the time-stepped executor's own


# ------------------------------------------------------------------------------------------- files
def test_reading_refuses_what_is_not_a_nir_graph_file(tmp_path, monkeypatch):
    with raises_naming(DataError, "no such file"):
        read_nir(tmp_path / "missing.nir")
    (tmp_path / "text.nir").write_text("not hdf5")
    with raises_naming(DataError, "not an HDF5 file"):
        read_nir(tmp_path / "text.nir")
    nir.write(tmp_path / "node.nir", nir.LI(tau=_full(2, 1), r=_full(2, 1), v_leak=_full(2, 0)))
    with raises_naming(DataError, "node.nir", "cannot read its graph"):
        read_nir(tmp_path / "node.nir")
    write_nir(_one_layer(), tmp_path / "ok.nir")
    monkeypatch.setattr(nirgraph, "MAX_FILE_ARRAY_BYTES", 64)
    with raises_naming(DataError, "its arrays hold", "at most 64 are read"):
        read_nir(tmp_path / "ok.nir")


def test_without_the_nir_package_the_error_says_how_to_install_it(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "nir", None)
    with raises_naming(ConfigError, "pip install 'spinnray[nir]'"):
        to_nir(Network())
