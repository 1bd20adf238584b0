"""Engines run the two halves of an algorithm for a cohort of clients. The round loop lives in run.py."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from fedloom.algorithms.base import Algorithm, Broadcast
from fedloom.algorithms.tree import Tree
from fedloom.algorithms.uploads import Uploads
from fedloom.engines.context import Runtime
from fedloom.registry import Registry

ENGINES: Registry[type] = Registry("engine")


@dataclass
class CohortResult:
    uploads: Uploads
    client_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    bytes_up: int = 0


class Engine(ABC):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @abstractmethod
    def train_cohort(self, algorithm: Algorithm, broadcast: Broadcast, cohort: list[int],
                     round_: int) -> CohortResult:
        """Run ``client_update`` for every client in ``cohort`` and reduce their uploads."""

    @abstractmethod
    def evaluate(self, algorithm: Algorithm, broadcast: Broadcast, clients: list[int], round_: int,
                 split: str = "test") -> dict[int, dict[str, float]]:
        """Per-client additive evaluation sums with each client's ``eval_params``."""

    def client_states(self) -> Iterator[tuple[int, Tree]]:
        """Every saved client state (for checkpoints), in client-id order."""
        store = self.runtime.store
        for client_id in store.client_ids():
            yield client_id, store.load(client_id)

    def restore_client_states(self, states: Iterable[tuple[int, Tree]]) -> None:
        """Replace the saved client states (when resuming from a checkpoint)."""
        for client_id, state in states:
            self.runtime.store.save(client_id, state)
