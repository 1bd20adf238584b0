"""Name-based registries for algorithms, datasets, partitioners, models, tasks and engines.

Names are case-insensitive (``FedAvg`` == ``fedavg``); underscores and dashes are interchangeable. An unknown
name raises ConfigError listing the valid choices and the closest match.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from fedloom.errors import ConfigError

T = TypeVar("T")


def canonical(name: str) -> str:
    """Normalize a user-supplied name: lower case, '_' treated as '-'."""
    return name.strip().lower().replace("_", "-")


class Registry(Generic[T]):
    """A mapping from canonical names to objects (usually classes), filled by a decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        key = canonical(name)

        def decorator(obj: T) -> T:
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} '{key}' registered twice")
            self._items[key] = obj
            try:
                setattr(obj, "registry_name", key)
            except (AttributeError, TypeError):
                pass  # functions and builtins may refuse attributes; the registry still knows the name
            return obj

        return decorator

    def get(self, name: str) -> T:
        _load_plugins()
        key = canonical(name)
        if key not in self._items:
            raise ConfigError(self.unknown_message(name))
        return self._items[key]

    def unknown_message(self, name: str) -> str:
        msg = f"unknown {self.kind} '{name}'. Valid choices: {', '.join(self.names())}"
        close = difflib.get_close_matches(canonical(name), self.names(), n=1)
        return msg + (f". Did you mean '{close[0]}'?" if close else "")

    def __contains__(self, name: str) -> bool:
        _load_plugins()
        return canonical(name) in self._items

    def names(self) -> list[str]:
        _load_plugins()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        _load_plugins()
        return iter(sorted(self._items.items()))


def _load_plugins() -> None:
    """Third-party components (entry points, $FEDLOOM_IMPORT) are imported on the first lookup in any registry
    (fedloom.plugins), so that they are listed and found like built-in ones."""
    from fedloom import plugins

    plugins.ensure_loaded()
