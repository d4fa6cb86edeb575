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


def test_range_scope_population_or_projection():
    net = _net()
    peak = {p.name: float(np.abs(p.weights).max()) for p in net.projections}
    assert peak["hidden->hidden"] < peak["input->hidden"]        # recurrent weights start smaller
    pop = weight_store_options(MachineConfig(weight_bits=4, weight_range=1.5), net).ranges
    own = weight_store_options(MachineConfig(weight_bits=4, weight_range=1.5, weight_range_scope="projection"),
                               net).ranges
    assert own == pytest.approx({k: 1.5 * v for k, v in peak.items()})
    # a core's input and recurrent weights share the grid of the larger
    assert pop["hidden->hidden"] == pop["input->hidden"] == pytest.approx(1.5 * peak["input->hidden"])
    assert pop["hidden->output"] == pytest.approx(1.5 * peak["hidden->output"])
    with pytest.raises(ConfigError, match="machine.weight_range_scope = 'core': expected population or projection"):
        MachineConfig(weight_bits=4, weight_range_scope="core")
    # per-projection factors (pre->post, or pre_to_post as Hydra takes on the command line) replace weight_range
    mixed = weight_store_options(MachineConfig(weight_bits=4, weight_range=1.5, weight_range_scope="projection",
                                               weight_ranges={"hidden_to_hidden": 6.0}), net).ranges
    assert mixed == pytest.approx({**own, "hidden->hidden": 6.0 * peak["hidden->hidden"]})
    mixed_pop = weight_store_options(MachineConfig(weight_bits=4, weight_range=1.5,
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
    half = weight_store_options(MachineConfig(weight_bits=4, weight_range=0.5, weight_range_scope="projection"),
                                net).ranges
    for p in net.projections:                       # the range follows machine.weight_range x max |w0|
        assert half[p.name] == pytest.approx(0.5 * np.abs(p.weights).max())
    ws = weight_store_options(MachineConfig(weight_bits=8, weight_max=0.5), _net())
    assert set(ws.ranges.values()) == {0.5}
