"""spinnray.rules.learning: the weight-store options of the learning cores (ranges per population or
projection, none on a float32 machine)."""

import numpy as np
import pytest

from spinnray import MachineConfig
from spinnray.errors import ConfigError
from spinnray.rules.learning import weight_store_options

from helpers import RecurrentALIFConfig, eprop_net

T, N_IN = 30, 5


def _net(hidden=12):
    return eprop_net(RecurrentALIFConfig(hidden=hidden, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0),
                               N_IN, 3, seed=2)


def _proj(net, name):
    return next(p for p in net.projections if p.name == name)


def _peaks(net):
    return {p.name: float(np.abs(p.weights).max()) for p in net.projections}


def test_default_rule_needs_no_calibration():
    """machine.weight_bits alone: each projection its own grid, 2 x its largest initial weight, 7 x for the
    recurrent one (it starts small and grows in training), computed from the initial weights alone."""
    net = _net()
    peak = {p.name: float(np.abs(p.weights).max()) for p in net.projections}
    ws = weight_store_options(MachineConfig(weight_bits=4), net)
    assert ws.ranges == pytest.approx({"input->hidden": 2.0 * peak["input->hidden"],
                                       "hidden->hidden": 7.0 * peak["hidden->hidden"],
                                       "hidden->output": 2.0 * peak["hidden->output"]})
    # the rule reads the initial weights: another seed's network gets its own ranges by the same formula
    other = eprop_net(RecurrentALIFConfig(hidden=12, v_th=0.6, w_in_scale=3.0, w_out_scale=5.0), N_IN, 3, seed=5)
    r2 = weight_store_options(MachineConfig(weight_bits=4), other).ranges
    assert r2["hidden->hidden"] == pytest.approx(7.0 * _peaks(other)["hidden->hidden"])
    assert r2 != ws.ranges
    # explicit settings win: weight_ranges over the recurrent default, weight_max over everything
    mixed = weight_store_options(MachineConfig(weight_bits=4, weight_ranges={"hidden_to_hidden": 3.0}), net).ranges
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
    pop7 = weight_store_options(MachineConfig(weight_bits=4, weight_range_scope="population"), net).ranges
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
