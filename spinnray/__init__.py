"""spinnray: an actor-based, distributed emulator of the SpiNNaker2 chip.

The public API: describe a :class:`Network` of populations (``LIF``, ``ALIF``,
``LI``, ``SpikeSource``) and projections, map it onto emulated cores and run
it with a :class:`Simulator` on the ``local`` or ``ray`` backend.
"""

from .config import MachineConfig
from .errors import (BudgetError, ConfigError, DataError, MappingError, NetworkError, PacketError,
                     RoutingError, SpinnrayError, TransportError)
from .network import Network, Population, Projection
from .neuron import ALIF, LI, LIF, AnalogSource, SpikeSource
from .simulator import RunResult, Simulator, poisson_spikes

__all__ = [
    "Network", "Population", "Projection", "LIF", "ALIF", "LI", "SpikeSource", "AnalogSource", "MachineConfig",
    "Simulator", "RunResult", "poisson_spikes",
    "SpinnrayError", "ConfigError", "NetworkError", "MappingError", "BudgetError", "RoutingError",
    "PacketError", "TransportError", "DataError",
]
__version__ = "0.1.0"
