"""spinnray.model.builders: the recurrent ALIF network with a LIF part (network.n_lif) and its delays; the
recurrent LIF network."""

import numpy as np
import pytest

from spinnray.config import from_dict
from spinnray.errors import ConfigError
from spinnray.model.builders import DataShape, RecurrentLIFConfig, build_recurrent_lif
from spinnray.model.neurons import LI, LIF
from spinnray.rules.eprop import hidden_core_split

from helpers import RecurrentALIFConfig, eprop_net

P = dict(tau_m_ms=5.0, tau_a_ms=150.0, tau_out_ms=10.0, dt_ms=1.0, beta=0.184, v_th=0.6,
         mg_lens=0.5, mg_scale=6.0, mg_height=0.15, steepness=5.0)


def _mixed_net(n_lif, hidden=8, n_in=6, n_out=3, seed=2, refractory=0):
    cfg = RecurrentALIFConfig(hidden=hidden, n_lif=n_lif, tau_mem_ms=P["tau_m_ms"], tau_adapt_ms=P["tau_a_ms"],
                             beta=P["beta"], v_th=P["v_th"], tau_out_ms=P["tau_out_ms"], w_in_scale=4.0,
                             w_rec_scale=2.0, w_out_scale=3.0, refractory_steps=refractory)
    return eprop_net(cfg, n_in, n_out, seed)


def _full(net, by_proj, order=("lif", "hidden")):
    """Full (pre, post) matrices of the mixed network from per-projection blocks."""
    pops = [p for p in order if p in net.populations]
    w_in = np.concatenate([by_proj[f"input->{p}"] for p in pops], axis=1)
    w_rec = np.block([[by_proj[f"{a}->{b}"] for b in pops] for a in pops])
    w_out = np.concatenate([by_proj[f"{p}->output"] for p in pops], axis=0)
    return w_in, w_rec, w_out


def test_lif_alif_mix_is_one_population_split_in_two():
    """network.n_lif = m: the first m neurons are LIF in their own population, with the
    same initial weights as one population; m = 0 is the network as before."""
    one, mixed = _mixed_net(0), _mixed_net(3)
    assert list(one.populations) == ["input", "hidden", "output"]
    assert [(n, p.size, p.model.beta) for n, p in mixed.populations.items() if n in ("lif", "hidden")] == \
        [("lif", 3, 0.0), ("hidden", 5, P["beta"])]
    w1 = {p.name: p.weights for p in one.projections}
    w_in, w_rec, w_out = _full(mixed, {p.name: p.weights for p in mixed.projections})
    np.testing.assert_array_equal(w_in, w1["input->hidden"])
    np.testing.assert_array_equal(w_rec, w1["hidden->hidden"])
    np.testing.assert_array_equal(w_out, w1["hidden->output"])
    with pytest.raises(ConfigError, match="network.n_lif = 8"):
        _mixed_net(8)
    assert hidden_core_split(mixed, 4) == {"lif": 2, "hidden": 2}
    assert hidden_core_split(_mixed_net(1, hidden=10), 4) == {"lif": 1, "hidden": 3}
    with pytest.raises(ConfigError, match="cores_per_population = 1"):
        hidden_core_split(mixed, 1)


def test_recurrent_and_readout_delays_reach_every_projection():
    """network.rec_delay and network.out_delay set the delays of every recurrent and readout
    projection (with a LIF part too), leave the input and the weights alone, and are named when
    out of range."""
    cfg = RecurrentALIFConfig(hidden=8, n_lif=3, rec_delay=2, out_delay=3)
    net = eprop_net(cfg, 4, 2)
    assert {p.name: p.delays for p in net.projections} == {
        "input->lif": 1, "input->hidden": 1, "lif->lif": 2, "lif->hidden": 2, "hidden->lif": 2,
        "hidden->hidden": 2, "lif->output": 3, "hidden->output": 3}
    assert net.min_delay == 2                   # what bounds the exchange interval K
    one = eprop_net(RecurrentALIFConfig(hidden=8, n_lif=3), 4, 2)
    assert {p.delays for p in one.projections} == {1}           # the defaults: the network as before
    for a, b in zip(net.projections, one.projections):
        np.testing.assert_array_equal(a.weights, b.weights)
    ff = eprop_net(RecurrentALIFConfig(hidden=8, recurrent=False, out_delay=4), 4, 2)
    assert {p.name: p.delays for p in ff.projections} == {"input->hidden": 1, "hidden->output": 4}
    assert ff.min_delay == 4
    for name in ("rec_delay", "out_delay"):
        with pytest.raises(ConfigError, match=f"network.{name} = 0"):
            from_dict(RecurrentALIFConfig, {name: 0}, "network")


def test_recurrent_lif_network_for_eventprop_voltage_losses():
    """network.name = recurrent_lif: spike input -> recurrent LIF (delays per synapse in
    [delay, rec_delay_max]) -> LI readout with a synaptic filter, seeded; analog data refused."""
    cfg = RecurrentLIFConfig(hidden=10, delay=2, rec_delay_max=4, tau_out_syn_ms=3.0)
    net = build_recurrent_lif(cfg, DataShape(7, 4, "spikes"), seed=3)
    assert [(p.name, p.size) for p in net.populations.values()] == [("input", 7), ("hidden", 10), ("output", 4)]
    assert isinstance(net["hidden"].model, LIF) and isinstance(net["output"].model, LI)
    assert net["output"].model.tau_syn_ms == 3.0
    proj = {p.name: p for p in net.projections}
    assert set(proj) == {"input->hidden", "hidden->hidden", "hidden->output"}
    assert proj["input->hidden"].delays == proj["hidden->output"].delays == 2 and net.min_delay == 2
    d = proj["hidden->hidden"].delays
    assert d.min() >= 2 and d.max() <= 4 and len(np.unique(d)) == 3
    again = build_recurrent_lif(cfg, DataShape(7, 4, "spikes"), seed=3)
    assert all(np.array_equal(a.weights, b.weights) for a, b in zip(net.projections, again.projections))
    assert len(build_recurrent_lif(RecurrentLIFConfig(hidden=10, recurrent=False), DataShape(7, 4, "spikes"),
                                   0).projections) == 2
    with pytest.raises(ConfigError, match="recurrent_lif takes spike input; the data set gives analog"):
        build_recurrent_lif(cfg, DataShape(7, 4, "analog"), 0)
    with pytest.raises(ConfigError, match="network.rec_delay_max = 1: expected null or >= network.delay = 2"):
        build_recurrent_lif(RecurrentLIFConfig(delay=2, rec_delay_max=1), DataShape(7, 4, "spikes"), 0)
