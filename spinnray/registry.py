"""The one registry type: named entries a run selects by a configuration key (``learning.rule``,
``network.name``, ``data.name``), refused with the key, the value and the names known."""

from __future__ import annotations

from typing import Generic, TypeVar

from spinnray.checks import show
from spinnray.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name; ``key`` is the configuration key that names one (for error messages)."""

    def __init__(self, key: str):
        self.key = key
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def get(self, name) -> T:
        if name not in self._entries:
            raise ConfigError(f"{self.key} = {show(name)}: expected one of {self.names()}")
        return self._entries[name]
