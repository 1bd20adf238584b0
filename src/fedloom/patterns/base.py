"""The round-pattern interface."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedloom.algorithms.base import ServerResult
from fedloom.registry import Registry

if TYPE_CHECKING:
    from fedloom.rounds import RoundOutput
    from fedloom.run import Experiment

PATTERNS: Registry[type] = Registry("round pattern")


class RoundPattern:
    """Base class. ``server`` is the ServerResult the loop carries (and checkpoints): for serverless patterns
    its params are the average model, used for evaluation and reporting only."""

    def check(self, cfg: Any, algorithm: Any, num_clients: int) -> None:
        """Raise ConfigError when the run's settings make no sense for this pattern (before training)."""

    def start(self, exp: "Experiment") -> tuple[ServerResult, dict[str, Any], dict[int, dict[str, float]]]:
        raise NotImplementedError

    def step(self, exp: "Experiment", server: ServerResult, round_: int, totals: dict[str, int]) -> "RoundOutput":
        raise NotImplementedError
