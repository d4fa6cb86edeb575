"""spinnray: an actor-based, distributed emulator of the SpiNNaker2 chip.

The public API: describe a :class:`Network` of populations (``LIF``, ``ALIF``,
``LI``, ``SpikeSource``) and projections, map it onto emulated cores and run
it with a :class:`Simulator` on the ``local`` or ``ray`` backend.
"""

from spinnray import _moved
from spinnray.config import MachineConfig
from spinnray.errors import (BudgetError, ConfigError, DataError, MappingError, NetworkError, PacketError,
                     RoutingError, SpinnrayError, TransportError)
from spinnray.model.network import Network, Population, Projection
from spinnray.model.neurons import ALIF, LI, LIF, AnalogSource, SpikeSource
from spinnray.simulator import RunResult, Simulator, poisson_spikes

__all__ = [
    "Network", "Population", "Projection", "LIF", "ALIF", "LI", "SpikeSource", "AnalogSource", "MachineConfig",
    "Simulator", "RunResult", "poisson_spikes",
    "SpinnrayError", "ConfigError", "NetworkError", "MappingError", "BudgetError", "RoutingError",
    "PacketError", "TransportError", "DataError",
]
__version__ = "0.1.0"

_moved.install()
