"""A neuron model is one class: defined here, outside the package, it is found by the YAML
networks (model_from_dict), sized by the mapping and stepped by the cores with no other edit."""

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
import pytest

from spinnray import MachineConfig, Network, Simulator, SpikeSource
from spinnray.mapping import map_network
from spinnray.model.neurons import NeuronModel, model_from_dict


class IFState(NamedTuple):
    v: np.ndarray


@pytest.fixture
def PerfectIF():
    """The model, registered for this test only (the kind table is global)."""

    @dataclass(frozen=True)
    class PerfectIF(NeuronModel):
        """Non-leaky integrate-and-fire: v += input; a spike above v_th resets v to 0."""

        v_th: float = 1.0

        kind: ClassVar[str] = "test_perfect_if"
        spiking: ClassVar[bool] = True

        def init_state(self, batch, n, dtype):
            return IFState(np.zeros((batch, n), dtype))

        def state_bytes(self, itemsize):
            return itemsize

        def step(self, inp, state, c):
            v = state.v + inp
            s = v > self.v_th
            return s, IFState(np.where(s, np.zeros((), v.dtype), v))

    yield PerfectIF
    NeuronModel._KINDS.pop(PerfectIF.kind, None)


def test_a_model_defined_outside_the_package_runs_on_the_cores(PerfectIF):
    assert model_from_dict({"model": "test_perfect_if", "v_th": 2.5}) == PerfectIF(v_th=2.5)
    rng = np.random.default_rng(0)
    net = Network()
    net.population("inp", 6, SpikeSource())
    net.population("if", 5, PerfectIF(v_th=1.5))
    w = rng.uniform(0.2, 0.9, (6, 5))
    net.connect("inp", "if", w)
    m = map_network(net, MachineConfig(dtype="float64"), cores_per_population=2)
    # the mapping sizes the new model's state from the model itself: 8 bytes per neuron and sample
    assert [mem["neuron_state"] for pl, mem in zip(m.placements, m.memory) if pl.slice.population == "if"] == [16, 24]
    x = rng.random((40, 1, 6)) < 0.3
    with Simulator(net, MachineConfig(dtype="float64"), cores_per_population=2, backend="local") as sim:
        got = sim.run(40, {"inp": x}, record=("spikes", "v")).spikes["if"][:, 0]
    # by hand: a spike at step t arrives at step t + 1 (delay 1), summed in input order
    v, want = np.zeros(5), np.zeros((40, 5), bool)
    for t in range(40):
        inp = x[t - 1, 0].astype(float) @ w if t else np.zeros(5)
        v = v + inp
        want[t] = v > 1.5
        v[want[t]] = 0.0
    assert want.sum() > 10
    np.testing.assert_array_equal(got, want)
