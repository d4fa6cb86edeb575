"""NIR graphs between spinnray and snnTorch / Norse, run in both: the same spikes.

Optional: these need torch with snnTorch (or Norse) and are skipped without them; CI installs
neither (torch is hundreds of MB).  Run them with ``pip install snntorch norse`` (snnTorch 1.0 and
Norse 1.1 were used).  Each compares spike trains, not parameters: spinnray's population P at step
t against the framework's at t - offset[P] (:mod:`spinnray.model.nirgraph`, "Time").
"""

import numpy as np
import pytest

from spinnray import LIF, MachineConfig, Network, Simulator, SpikeSource
import spinnray.nir as snir

torch = pytest.importorskip("torch")
nir = pytest.importorskip("nir")

T, B = 80, 3


def _input(seed=1, n=5):
    return np.random.default_rng(seed).random((T, B, n)) < 0.3


def _spinnray_run(net, x, steps=T):
    with Simulator(net, MachineConfig(), backend="local", batch_size=x.shape[1]) as sim:
        return sim.run(steps, {next(p.name for p in net.populations.values() if not net.incoming(p)): x},
                       record=("spikes",)).spikes


def _net(v_reset=0.0, seed=2):
    rng = np.random.default_rng(seed)
    net = Network(dt_ms=1.0)
    net.population("input", 5, SpikeSource())
    net.population("hidden", 20, LIF(tau_mem_ms=10.0, tau_syn_ms=4.0, v_th=1.0, v_reset=v_reset))
    net.population("output", 4, LIF(tau_mem_ms=8.0, tau_syn_ms=3.0, v_th=1.0))
    net.connect("input", "hidden", rng.normal(1.5, 1.0, (5, 20)))
    net.connect("hidden", "output", rng.normal(0.8, 0.5, (20, 4)))
    return net


def _run_graph_module(module, x):
    """A nirtorch graph module (what snnTorch's and Norse's importers return), step by step."""
    state, out = None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            o, state = module(torch.tensor(x[t], dtype=torch.float32), state)
            out.append(o.numpy())
    return np.array(out) > 0


# ---------------------------------------------------------------------------------------------- snnTorch
def _synaptic(snn, n, alpha, beta, **kw):
    # per-neuron parameters: snnTorch 1.0 exports scalar ones with no shape, which NIR's type check refuses
    return snn.Synaptic(alpha=torch.full((n,), alpha), beta=torch.full((n,), beta), threshold=torch.ones(n),
                        init_hidden=True, reset_mechanism="zero", reset_delay=False, **kw)


def test_a_graph_exported_by_snntorch_runs_in_spinnray_with_its_spikes(tmp_path):
    snn = pytest.importorskip("snntorch")
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 20, bias=False), _synaptic(snn, 20, 0.8, 0.9),
                                torch.nn.Linear(20, 4, bias=False), _synaptic(snn, 4, 0.7, 0.85, output=True))
    with torch.no_grad():
        model[0].weight.mul_(2.0)
        model[2].weight.mul_(3.0)
    nir.write(tmp_path / "snn.nir", export_to_nir(model, torch.zeros(1, 5), ignore_dims=[0]))
    x = _input()
    hidden, out = [], []
    with torch.no_grad():
        for t in range(T):
            h = model[1](model[0](torch.tensor(x[t], dtype=torch.float32)))
            o, _, _ = model[3](model[2](h))
            hidden.append(h.numpy())
            out.append(o.numpy())
    ref = {"1": np.array(hidden) > 0, "3": np.array(out) > 0}

    imp = snir.read(tmp_path / "snn.nir", convention="snntorch")          # dt 1e-4 s, as snnTorch's importer
    assert imp.network.dt_ms == pytest.approx(0.1) and imp.nodes["1"] == "n1" and imp.outputs == ("n3",)
    k = max(imp.offsets.values())
    got = _spinnray_run(imp.network, np.concatenate([x, np.zeros((k, B, 5), bool)]), T + k)
    for node, spikes in ref.items():
        pop = imp.nodes[node]
        assert spikes.sum() > 20
        np.testing.assert_array_equal(got[pop][imp.offsets[pop]:imp.offsets[pop] + T], spikes)


def test_a_spinnray_network_exported_for_snntorch_runs_there_with_its_spikes(tmp_path):
    pytest.importorskip("snntorch")
    from snntorch.import_nir import import_from_nir

    net, x = _net(), _input(seed=4)
    graph = snir.export(net, tmp_path / "for_snn.nir", convention="snntorch")
    want = _spinnray_run(net, x)["output"]
    got = _run_graph_module(import_from_nir(nir.read(tmp_path / "for_snn.nir")), x)
    k = graph.metadata["spinnray_offset.output"]
    assert k == 2 and want.sum() > 20
    np.testing.assert_array_equal(want[k:], got[:T - k])


# ---------------------------------------------------------------------------------------------- Norse
def test_a_spinnray_network_exported_for_norse_runs_there_with_its_spikes(tmp_path):
    norse = pytest.importorskip("norse.torch")

    net, x = _net(), _input(seed=5)
    graph = snir.export(net, tmp_path / "for_norse.nir", convention="norse")       # dt 1e-3 s
    want = _spinnray_run(net, x)["output"]
    got = _run_graph_module(norse.from_nir(nir.read(tmp_path / "for_norse.nir"), dt=1e-3), x)
    k = graph.metadata["spinnray_offset.output"]
    assert want.sum() > 20
    np.testing.assert_array_equal(want[k:], got[:T - k])


def test_norse_resets_to_zero_whatever_v_reset_says_so_the_norse_convention_refuses_it(tmp_path):
    """Norse 1.1's importer builds LIFBoxParameters without v_reset: a spinnray population with
    v_reset = -0.2 spikes differently there, and export for Norse refuses it."""
    norse = pytest.importorskip("norse.torch")
    from spinnray.errors import NetworkError

    net, x = _net(v_reset=-0.2), _input(seed=5)
    with pytest.raises(NetworkError, match="v_reset = -0.2; the norse convention's reader resets to 0"):
        snir.export(net, tmp_path / "x.nir", convention="norse")
    graph = snir.to_nir(_net(v_reset=0.0), convention="norse")
    graph.nodes["hidden"].v_reset = np.full(20, -0.2)                 # what an honest v_reset would say
    nir.write(tmp_path / "vr.nir", graph)
    norse_spikes = _run_graph_module(norse.from_nir(nir.read(tmp_path / "vr.nir"), dt=1e-3), x)
    zero_reset = _spinnray_run(_net(v_reset=0.0), x)["output"]
    np.testing.assert_array_equal(zero_reset[2:], norse_spikes[:T - 2])


def test_a_graph_exported_by_norse_runs_in_spinnray_as_norse_reads_it(tmp_path):
    """Norse 1.1's exporter writes LIFCell as CubaLIF(tau = dt/tau_inv, r = 1, w_in = 1): seconds only
    with to_nir(dt=1.0).  Norse's importer reads it back as LIBox + LIFBox, whose input current is
    the LIFCell's times dt/tau_syn -- a known difference of Norse with itself; spinnray's norse
    convention reproduces Norse's reading."""
    norse = pytest.importorskip("norse.torch")
    from norse.torch.utils.export_nir import to_nir as norse_to_nir

    torch.manual_seed(0)
    p = norse.LIFParameters(tau_syn_inv=torch.full((20,), 200.0), tau_mem_inv=torch.full((20,), 100.0),
                            v_th=torch.ones(20), v_leak=torch.zeros(20), v_reset=torch.zeros(20))
    model = norse.SequentialState(torch.nn.Linear(5, 20, bias=False), norse.LIFCell(p))
    with torch.no_grad():
        model[0].weight.mul_(20.0)
    nir.write(tmp_path / "norse.nir", norse_to_nir(model, torch.zeros(1, 5), dt=1.0))
    x = _input(seed=6)
    # its Input keeps the batch dimension ([1, 5] -> Affine [5]): NIR's type check refuses the file
    norse_reads = _run_graph_module(norse.from_nir(nir.read(tmp_path / "norse.nir", type_check=False), dt=1e-3), x)
    imp = snir.read(tmp_path / "norse.nir", convention="norse")               # dt 1e-3 s
    got = _spinnray_run(imp.network, x)[imp.nodes["1"]]
    k = imp.offsets[imp.nodes["1"]]
    assert norse_reads.sum() > 20
    np.testing.assert_array_equal(got[k:], norse_reads[:T - k])
    own = []                                                        # the LIFCell itself
    with torch.no_grad():
        state = None
        for t in range(T):
            o, state = model(torch.tensor(x[t], dtype=torch.float32), state)
            own.append(o.numpy())
    assert not np.array_equal(np.array(own) > 0, norse_reads)
