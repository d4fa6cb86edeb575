"""spinnray.rules.learning: the weight-store options of the learning cores (ranges per population or
projection, none on a float32 machine) and the per-projection learning-rate factors."""

import numpy as np
import pytest

from spinnray import MachineConfig
from spinnray.errors import ConfigError
from spinnray.config import from_dict
from spinnray.rules.learning import lr_scales, weight_store_options

from helpers import EPropConfig, EventPropConfig, RecurrentALIFConfig, eprop_learning, eprop_net, eprop_trainer

T, N_IN = 30, 5


def _net(hidden=12):
    return eprop_net(RecurrentALIFConfig(hidden=hidden, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0),
                               N_IN, 3, seed=2)


def _proj(net, name):
    return next(p for p in net.projections if p.name == name)


def _peaks(net):
    return {p.name: float(np.abs(p.weights).max()) for p in net.projections}


def test_default_rule_needs_no_calibration():
    """machine.weight_bits alone: each projection its own grid, starting at its largest initial weight and
    widening per post neuron up to 64x.  A fixed grid (weight_range_growth=1): 2 x the largest initial
    weight, 7 x for the recurrent one (it starts small and grows in training).  Both from the initial
    weights alone."""
    net = _net()
    peak = {p.name: float(np.abs(p.weights).max()) for p in net.projections}
    wide = weight_store_options(MachineConfig(weight_bits=4), net)
    assert wide.growth == 64.0 and wide.ranges == pytest.approx(peak)
    assert weight_store_options(MachineConfig(weight_bits=4, weight_range_recurrent=3.0), net).ranges == \
        pytest.approx({**peak, "hidden->hidden": 3.0 * peak["hidden->hidden"]})
    assert weight_store_options(MachineConfig(weight_bits=4, accumulate=False), net).growth == 1.0
    ws = weight_store_options(MachineConfig(weight_bits=4, weight_range_growth=1), net)
    assert ws.growth == 1.0
    assert ws.ranges == pytest.approx({"input->hidden": 2.0 * peak["input->hidden"],
                                       "hidden->hidden": 7.0 * peak["hidden->hidden"],
                                       "hidden->output": 2.0 * peak["hidden->output"]})
    # the rule reads the initial weights: another seed's network gets its own ranges by the same formula
    other = eprop_net(RecurrentALIFConfig(hidden=12, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0), N_IN, 3, seed=5)
    r2 = weight_store_options(MachineConfig(weight_bits=4, weight_range_growth=1), other).ranges
    assert r2["hidden->hidden"] == pytest.approx(7.0 * _peaks(other)["hidden->hidden"])
    assert r2 != ws.ranges
    # explicit settings win: weight_ranges over the recurrent default, weight_max over everything
    mixed = weight_store_options(MachineConfig(weight_bits=4, weight_range_growth=1,
                                               weight_ranges={"hidden_to_hidden": 3.0}), net).ranges
    assert mixed == pytest.approx({**ws.ranges, "hidden->hidden": 3.0 * peak["hidden->hidden"]})
    flat = weight_store_options(MachineConfig(weight_bits=4, weight_range=1.5, weight_range_recurrent=1.5), net)
    assert flat.ranges == pytest.approx({k: 1.5 * v for k, v in peak.items()})
    # PCM keeps its measured recipe: one peak per population, one factor (weight_range) for every projection
    pcm = weight_store_options(MachineConfig(synapse="pcm", weight_range=1.5), net).ranges
    assert pcm["hidden->hidden"] == pcm["input->hidden"] == pytest.approx(1.5 * peak["input->hidden"])
    assert pcm["hidden->output"] == pytest.approx(1.5 * peak["hidden->output"])
    assert set(weight_store_options(MachineConfig(weight_bits=4, weight_max=0.7), net).ranges.values()) == {0.7}
    for bad in (0.0, -1.0, float("nan"), True, "7"):
        with pytest.raises(ConfigError, match=r"machine.weight_range_recurrent = .*: expected a finite number > 0 "
                                              r"or null"):
            MachineConfig(weight_bits=4, weight_range_recurrent=bad)
        with pytest.raises(ConfigError, match=r"machine.weight_range = .*: expected a finite number > 0 or null"):
            MachineConfig(weight_bits=4, weight_range=bad)


def test_range_scope_population_or_projection():
    net = _net()
    peak = {p.name: float(np.abs(p.weights).max()) for p in net.projections}
    assert peak["hidden->hidden"] < peak["input->hidden"]        # recurrent weights start smaller
    same = {"weight_bits": 4, "weight_range": 1.5, "weight_range_recurrent": 1.5}     # one factor for all
    pop = weight_store_options(MachineConfig(**same, weight_range_scope="population"), net).ranges
    own = weight_store_options(MachineConfig(**same, weight_range_scope="projection"), net).ranges
    assert own == pytest.approx({k: 1.5 * v for k, v in peak.items()})
    # a core's input and recurrent weights share the grid of the larger
    assert pop["hidden->hidden"] == pop["input->hidden"] == pytest.approx(1.5 * peak["input->hidden"])
    assert pop["hidden->output"] == pytest.approx(1.5 * peak["hidden->output"])
    # population scope with the recurrent headroom: the factor multiplies the population's peak
    pop7 = weight_store_options(MachineConfig(weight_bits=4, weight_range_scope="population", weight_range_growth=1),
                                net).ranges
    assert pop7["hidden->hidden"] == pytest.approx(7.0 * peak["input->hidden"])
    with pytest.raises(ConfigError, match="machine.weight_range_scope = 'core': expected population, projection or "
                                          "null"):
        MachineConfig(weight_bits=4, weight_range_scope="core")
    # per-projection factors (pre->post, or pre_to_post as Hydra takes on the command line) replace weight_range
    mixed = weight_store_options(MachineConfig(**same, weight_range_scope="projection",
                                               weight_ranges={"hidden_to_hidden": 6.0}), net).ranges
    assert mixed == pytest.approx({**own, "hidden->hidden": 6.0 * peak["hidden->hidden"]})
    mixed_pop = weight_store_options(MachineConfig(**same, weight_range_scope="population",
                                                   weight_ranges={"hidden->hidden": 0.5}), net).ranges
    assert mixed_pop == pytest.approx({**pop, "hidden->hidden": 0.5 * peak["input->hidden"]})
    with pytest.raises(ConfigError, match=r"machine.weight_ranges: no projection named 'hidden->out'; this "
                                          r"network's projections are \['hidden->hidden', "):
        weight_store_options(MachineConfig(weight_bits=4, weight_ranges={"hidden_to_out": 2.0}), net)
    with pytest.raises(ConfigError, match=r"machine.weight_ranges\['hidden->hidden'\] = -1.0: expected .* > 0"):
        MachineConfig(weight_bits=4, weight_ranges={"hidden->hidden": -1.0})


def test_float32_machine_gives_the_cores_no_store():
    assert weight_store_options(MachineConfig(), _net()) is None
    net = _net()
    half = weight_store_options(MachineConfig(weight_bits=4, weight_range=0.5, weight_range_recurrent=0.5), net).ranges
    for p in net.projections:                       # the range follows machine.weight_range x max |w0|
        assert half[p.name] == pytest.approx(0.5 * np.abs(p.weights).max())
    ws = weight_store_options(MachineConfig(weight_bits=8, weight_max=0.5), _net())
    assert set(ws.ranges.values()) == {0.5}


def test_lr_scale_names_projections_and_refuses_unknown_ones():
    """learning.lr_scale: pre->post or pre_to_post keys, resolved in the network's projection order; a
    projection that does not exist, or a factor that is not a finite number > 0, is named."""
    net = _net()
    assert lr_scales({"input_to_hidden": 5, "hidden->output": 0.5}, net) == (("input->hidden", 5.0),
                                                                              ("hidden->output", 0.5))
    assert lr_scales(None, net) == lr_scales({}, net) == ()
    with pytest.raises(ConfigError, match=r"learning.lr_scale: no projection named 'input->out'; this network's "
                                          r"projections are \['hidden->hidden', "):
        eprop_learning(net, MachineConfig(), lr_scale={"input_to_out": 2.0})
    for bad in (0, -1.0, float("inf"), True, "2"):
        with pytest.raises(ConfigError, match=r"learning.lr_scale\['hidden->hidden'\] = .*: expected a projection "
                                              r"name and a finite factor > 0"):
            from_dict(EPropConfig, {"lr_scale": {"hidden->hidden": bad}}, "learning")
    with pytest.raises(ConfigError, match=r"learning.lr_scale = \[1\]: expected"):
        from_dict(EventPropConfig, {"lr_scale": [1]}, "learning")


@pytest.mark.parametrize("replicas", [1, 2])
def test_lr_scale_multiplies_each_projections_step(replicas):
    """One e-prop update with lr_scale equals the update without it times each projection's factor
    (Adam's step is linear in its rate; float64), on every copy; unnamed projections keep lr."""
    net = _net()
    rng = np.random.default_rng(3)
    x, y = rng.normal(0, 1, (T, 4, N_IN)), rng.integers(0, 3, 4)
    scale = {"input_to_hidden": 4.0, "hidden->output": 0.25}
    deltas = []
    for lr_scale in ({}, scale):
        learn = EPropConfig(batch_size=4, lr=0.01, surrogate="triangle", gamma=0.3, lr_scale=lr_scale)
        tr = eprop_trainer(net, learn, machine=MachineConfig(dtype="float64"), hidden_cores=2, replicas=replicas)
        try:
            w0 = tr.weights()
            tr.train_batch(x, y)
            tr.check_replicas()
            deltas.append({k: w - w0[k] for k, w in tr.weights().items()})
        finally:
            tr.close()
    base, scaled = deltas
    factor = {"input->hidden": 4.0, "hidden->hidden": 1.0, "hidden->output": 0.25}
    assert set(base) == set(factor)
    for name, f in factor.items():
        assert np.abs(base[name]).max() > 0
        np.testing.assert_allclose(scaled[name], f * base[name], rtol=1e-12, atol=1e-15 * np.abs(base[name]).max())
