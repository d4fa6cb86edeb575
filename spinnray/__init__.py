"""spinnray: an actor-based, distributed emulator of the SpiNNaker2 chip.

The public API: describe a :class:`Network` of populations (``LIF``, ``ALIF``,
``LI``, ``SpikeSource``) and projections, map it onto emulated cores and run
it with a :class:`Simulator` on the ``local`` or ``ray`` backend.
"""

from spinnray import _moved
from spinnray.errors import (BudgetError, ConfigError, DataError, MappingError, NetworkError, PacketError,
                     RoutingError, SpinnrayError, TransportError)
from spinnray.model.network import Network, Population, Projection
from spinnray.model.neurons import ALIF, LI, LIF, AnalogSource, SpikeSource

__all__ = [
    "Network", "Population", "Projection", "LIF", "ALIF", "LI", "SpikeSource", "AnalogSource", "MachineConfig",
    "Simulator", "RunResult", "poisson_spikes",
    "SpinnrayError", "ConfigError", "NetworkError", "MappingError", "BudgetError", "RoutingError",
    "PacketError", "TransportError", "DataError",
]
__version__ = "0.1.0"

_moved.install()

#: names imported on first use (PEP 562): every core actor imports ``spinnray.machine.core``, which
#: runs this file first, and needs neither the simulator (nor the mapping and backends behind it) nor
#: the typed configs (a leaner actor starts sooner and holds less)
_SIMULATOR = frozenset({"Simulator", "RunResult", "poisson_spikes"})


def __getattr__(name: str):
    if name in _SIMULATOR:
        from spinnray import simulator
        return getattr(simulator, name)
    if name == "MachineConfig":
        from spinnray import config
        return config.MachineConfig
    raise AttributeError(f"module 'spinnray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SIMULATOR | {"MachineConfig"})
