"""Client-state stores, owned by the engine.

An algorithm's per-client memory (a personal model, a head, control variates) lives here between rounds, never
in client objects. Only the sampled cohort's states are loaded each round. ``InMemoryStore`` keeps tensors in a
dict; a disk-backed store implements the same four methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator, Optional

from fedloom.algorithms.tree import Tree, tree_clone


class ClientStateStore(ABC):
    @abstractmethod
    def load(self, client_id: int) -> Optional[Tree]:
        """The saved state, or None if the client has none yet."""

    @abstractmethod
    def save(self, client_id: int, state: Optional[Tree]) -> None:
        """Replace the client's state (None deletes it)."""

    @abstractmethod
    def client_ids(self) -> Iterator[int]:
        """Clients that have a saved state."""

    def __contains__(self, client_id: int) -> bool:
        return client_id in set(self.client_ids())


class InMemoryStore(ClientStateStore):
    def __init__(self) -> None:
        self._states: dict[int, Tree] = {}

    def load(self, client_id: int) -> Optional[Tree]:
        return self._states.get(client_id)

    def save(self, client_id: int, state: Optional[Tree]) -> None:
        if state is None:
            self._states.pop(client_id, None)
        else:
            # detach from any autograd graph; tensors are not shared with the caller's later edits
            self._states[client_id] = tree_clone(state)

    def client_ids(self) -> Iterator[int]:
        return iter(sorted(self._states))

    def __contains__(self, client_id: int) -> bool:
        return client_id in self._states
