"""spinnray.rules.eprop (the rule: its learning.* config) -- bad values are named."""

import numpy as np
import pytest

from spinnray import ALIF, AnalogSource, Network
from spinnray.config import from_dict
from spinnray.errors import ConfigError, NetworkError

from helpers import EPropConfig


def test_bad_configs_name_the_value():
    with pytest.raises(ConfigError, match="rate_reg = -1"):
        from_dict(EPropConfig, {"rate_reg": -1}, "learning")
    with pytest.raises(ConfigError, match="learning.surrogate = 'relu'"):
        from_dict(EPropConfig, {"surrogate": "relu"}, "learning")
    with pytest.raises(ConfigError, match="gamma = -1.0"):
        from_dict(EPropConfig, {"gamma": -1.0}, "learning")
    bad = Network()
    bad.population("input", 3, AnalogSource())
    bad.population("hidden", 4, ALIF())
    bad.connect("input", "hidden", np.ones((3, 4)))
    with pytest.raises(NetworkError, match="delays = 2 from the AnalogSource"):
        bad.connect("input", "hidden", np.ones((3, 4)), delays=2, name="again")


@pytest.mark.parametrize("readout_delay", [2, 3])
def test_a_readout_delay_other_than_one_is_refused_not_approximated(readout_delay):
    # the hidden cores' readout-filtered traces assume the readout sees z[t-1]; any other delay would
    # give silently wrong hidden gradients, so the configuration is refused, naming the projection
    from spinnray import LI, MachineConfig

    from helpers import eprop_learning

    rng = np.random.default_rng(0)
    net = Network()
    net.population("input", 3, AnalogSource())
    net.population("hidden", 4, ALIF())
    net.population("output", 2, LI())
    net.connect("input", "hidden", rng.normal(size=(3, 4)))
    net.connect("hidden", "hidden", rng.normal(size=(4, 4)) * (1 - np.eye(4)))
    net.connect("hidden", "output", rng.normal(size=(4, 2)), delays=readout_delay, name="readout")
    with pytest.raises(ConfigError, match="'readout' has delays other than 1; expected 1"):
        eprop_learning(net, MachineConfig())
    net1 = Network()
    net1.population("input", 3, AnalogSource())
    net1.population("hidden", 4, ALIF())
    net1.population("output", 2, LI())
    net1.connect("input", "hidden", rng.normal(size=(3, 4)))
    net1.connect("hidden", "output", rng.normal(size=(4, 2)), delays=1)
    assert set(eprop_learning(net1, MachineConfig()).specs) == {"hidden", "output"}
