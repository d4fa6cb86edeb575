"""spinnray.rules.eprop (the rule: its learning.* config and the specs of its cores) -- bad values are named."""

import numpy as np
import pytest

from dataclasses import replace

from spinnray import ALIF, LI, AnalogSource, MachineConfig, Network
from spinnray.config import ParallelConfig, from_dict
from spinnray.errors import ConfigError, NetworkError
from spinnray.rules.eprop import check

from helpers import EPropConfig, eprop_learning


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


def _net(out_delays=None, rec_delays=1):
    """input -> lif, hidden (recurrent) -> output; ``out_delays``: population -> readout delay."""
    rng = np.random.default_rng(0)
    net = Network()
    net.population("input", 3, AnalogSource())
    net.population("lif", 2, ALIF(beta=0.0))
    net.population("hidden", 4, ALIF())
    net.population("output", 2, LI())
    for pop, n in (("lif", 2), ("hidden", 4)):
        net.connect("input", pop, rng.normal(size=(3, n)))
    net.connect("hidden", "hidden", rng.normal(size=(4, 4)) * (1 - np.eye(4)), delays=rec_delays)
    for pop, n in (("lif", 2), ("hidden", 4)):
        net.connect(pop, "output", rng.normal(size=(n, 2)), delays=(out_delays or {}).get(pop, 1))
    return net


def test_each_hidden_population_gets_its_own_readout_delay():
    """The hidden cores filter their traces with the delay of their population's projection into the
    readout (exact for every delay: tests/oracle/test_eprop_delays.py); the readout takes any delay."""
    learning = eprop_learning(_net({"lif": 2, "hidden": 3}), MachineConfig())
    assert {p: learning.specs[p].readout_delay for p in ("lif", "hidden")} == {"lif": 2, "hidden": 3}
    assert set(learning.specs) == {"lif", "hidden", "output"}
    default = eprop_learning(_net(), MachineConfig()).specs
    assert default["lif"].readout_delay == default["hidden"].readout_delay == 1
    with pytest.raises(NetworkError, match="readout_delay = 0; expected an int >= 1"):
        replace(learning.specs["hidden"], readout_delay=0)


def test_per_synapse_and_mixed_readout_delays_are_refused_naming_the_projection():
    net = _net()
    net.connect("lif", "hidden", np.ones((2, 4)), delays=np.full((2, 4), 2), name="lif_to_hidden")
    with pytest.raises(ConfigError, match="'lif_to_hidden' has per-synapse delays; expected one delay per "
                                          "projection"):
        eprop_learning(net, MachineConfig())
    net = _net()
    net.connect("hidden", "output", np.ones((4, 2)), delays=np.array([[1, 2]] * 4), name="readout2")
    with pytest.raises(ConfigError, match="'readout2' has per-synapse delays"):
        eprop_learning(net, MachineConfig())
    net = _net({"hidden": 2})
    net.connect("hidden", "output", np.ones((4, 2)), delays=3, name="again")
    with pytest.raises(ConfigError, match=r"\['hidden->output', 'again'\] from 'hidden' into the readout have "
                                          r"delays \[2, 3\]; expected one delay"):
        eprop_learning(net, MachineConfig())
    net = _net({"hidden": 2})
    net.connect("hidden", "output", np.ones((4, 2)), delays=2, name="same")     # one delay: its signals add up
    assert eprop_learning(net, MachineConfig()).specs["hidden"].readout_delay == 2


def test_replicas_are_checked_against_the_mini_batch_and_the_schedule():
    check(EPropConfig(batch_size=4), ParallelConfig(replicas=4), None, None)       # data parallel: allowed
    with pytest.raises(ConfigError, match=r"parallel.replicas = 4 with learning.batch_size = 3: .*expected "
                                          r"learning.batch_size >= 4"):
        check(EPropConfig(batch_size=3), ParallelConfig(replicas=4), None, None)
    with pytest.raises(ConfigError, match="parallel.schedule = 'layered'"):
        check(EPropConfig(batch_size=4), ParallelConfig(replicas=2, schedule="layered"), None, None)
