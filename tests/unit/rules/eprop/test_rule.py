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
