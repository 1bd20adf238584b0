"""Engines run the two halves of an algorithm for a cohort of clients. The round loop lives in rounds.py.

Two registries: ENGINES (name → engine class) and ENGINE_OPTIONS (name → the engine's frozen options
dataclass, the schema of its ``--<engine>.<option>`` flags and ``[<engine>]`` tables, see engines/options.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from fedloom.algorithms.base import Algorithm, Broadcast
from fedloom.algorithms.tree import Tree
from fedloom.algorithms.uploads import Uploads
from fedloom.config import RunConfig
from fedloom.engines.context import Runtime
from fedloom.registry import Registry

ENGINES: Registry[type] = Registry("engine")
#: Every engine's options dataclass under the engine's name (an engine without options registers an empty one).
ENGINE_OPTIONS: Registry[type] = Registry("engine")


@dataclass
class CohortResult:
    uploads: Uploads
    client_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    bytes_up: int = 0


@dataclass(frozen=True)
class EngineOptions:
    """Knobs of the faster engines (ignored by the serial engine).

    slots: clients trained in lockstep by the vectorized engine; pack_clients: clients per vectorized
    client_update call (bounds the memory of stacked parameters); min_clients: below this cohort size the
    vectorized engine loops, which is faster; workers / worker_engine / worker_timeout: the processes engine
    (worker_timeout: seconds without a worker heartbeat before the run ends). ``engines.build.engine_options``
    fills them from a resolved RunConfig (where ``--processes.*`` and ``--vectorized.*`` are stored).
    """

    slots: int = 32
    pack_clients: int = 256
    min_clients: int = 4
    workers: int = 2
    worker_engine: str = "serial"
    worker_timeout: float = 30.0
    run_config: Optional[RunConfig] = None  # the resolved config, from which sharded workers build their runtime


class Engine(ABC):
    def __init__(self, runtime: Runtime, options: Optional[EngineOptions] = None) -> None:
        self.runtime = runtime
        self.options = options or EngineOptions()

    def close(self) -> None:
        """Release workers or files (engines that hold none need not override)."""

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

    def update_client_states(self, states: Iterable[tuple[int, Tree]]) -> None:
        """Replace the *algorithm's* part of some clients' states, keeping what upload transforms keep beside it
        (a round pattern that changes node models after training: gossip's mixing)."""
        from fedloom.engines.local_training import join_training, split_training

        pipeline = self.runtime.uploads
        for client_id, state in states:
            stored, training = split_training(self.runtime.store.load(client_id))  # the seam's state is kept too
            transform_states = pipeline.split(stored)[1] if pipeline.stateful else {}
            self.runtime.store.save(client_id, join_training(pipeline.join(state, transform_states), training))
