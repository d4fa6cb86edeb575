"""What the user builds: a :class:`~spinnray.model.network.Network` of populations and projections,
the neuron models (each owns its constants, state, step and memory), and the network builders a
run names by ``network.name``.  May import: ``errors``, ``checks``, ``config``."""

from spinnray.model.network import Network, Population, Projection
from spinnray.model.neurons import ALIF, LI, LIF, AnalogSource, NeuronModel, SpikeSource, model_from_dict

__all__ = ["Network", "Population", "Projection", "NeuronModel", "LIF", "ALIF", "LI", "SpikeSource",
           "AnalogSource", "model_from_dict"]
