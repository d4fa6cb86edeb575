"""The exception hierarchy of spinnray.

Every error names the offending value and what was expected, so that a user
reading only the message knows what to change (PACMAN style).
"""


class SpinnrayError(Exception):
    """Base class of every error spinnray raises on purpose."""


class ConfigError(SpinnrayError, ValueError):
    """A configuration value is missing, of the wrong type or out of range.

    The message names the key (dotted path), the value and what is allowed.
    """


class NetworkError(SpinnrayError, ValueError):
    """A network description is inconsistent (shapes, names, delays)."""


class MappingError(SpinnrayError):
    """A network cannot be partitioned, placed or routed on the machine."""


class BudgetError(MappingError):
    """A slice needs more memory than its processing element has.

    The message names the population, the bytes needed and the budget.
    """


class RoutingError(SpinnrayError):
    """A routing table is invalid, or a packet could not be routed."""


class PacketError(SpinnrayError, ValueError):
    """A frame on the wire is malformed: truncated, oversized, wrong version,
    wrong type or out of range.  ``reason`` holds the human-readable cause."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TransportError(SpinnrayError):
    """A core or router lost its connection, or waited too long for a round.

    The message names the core, the step and the phase.
    """


class DataError(SpinnrayError):
    """A data set is missing or not in the expected format."""
