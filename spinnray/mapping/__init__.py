"""Where the network goes: partition into slices under the neuron cap and SRAM budget, place them
on (chip, PE), allocate keys, build the routing tables and check their invariant, spread the
chips over cluster nodes (one router per chip or per node), and cut the per-core specs.  May
import: ``errors``, ``checks``, ``config``, ``model``, ``machine``."""

from spinnray.mapping.place import ROUTER_UNITS, Mapping, Placement, Slice, assign_nodes, map_network, router_tables
from spinnray.mapping.routes import check_router_routes, check_routes
from spinnray.mapping.specs import Learning, core_shape, estimate_core_memory, history_depth, specs_from_mapping

__all__ = ["Slice", "Placement", "Mapping", "map_network", "assign_nodes", "router_tables", "ROUTER_UNITS",
           "check_routes", "check_router_routes", "Learning", "core_shape", "estimate_core_memory", "history_depth",
           "specs_from_mapping"]
