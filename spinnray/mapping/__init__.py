"""Where the network goes: partition into slices, place on (chip, PE), allocate keys, build and
check the routing tables, spread chips over nodes, cut the per-core specs."""

from spinnray.mapping.place import (Mapping, Placement, Slice, assign_nodes, check_node_routes, check_routes,
                                    estimate_core_memory, map_network, node_tables)

__all__ = ["Slice", "Placement", "Mapping", "map_network", "estimate_core_memory", "check_routes",
           "assign_nodes", "node_tables", "check_node_routes"]
