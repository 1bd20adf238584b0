"""The round-pattern interface."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from fedloom.algorithms.base import ServerResult
from fedloom.errors import ConfigError
from fedloom.registry import Registry

if TYPE_CHECKING:
    from fedloom.rounds import RoundOutput
    from fedloom.run import Experiment

PATTERNS: Registry[type] = Registry("round pattern")


class RoundPattern:
    """Base class. ``server`` is the ServerResult the loop carries (and checkpoints): for serverless patterns
    its params are the average model, used for evaluation and reporting only."""

    #: the pattern whose algorithms this one runs, as declared in ``Algorithm.patterns``: None, this pattern's
    #: own name; ``"star"`` for a new pattern that runs every server algorithm (a cyclic or asynchronous round)
    algorithms_of: Optional[str] = None

    def check(self, cfg: Any, algorithm: Any, num_clients: int) -> None:
        """Raise ConfigError when the run's settings make no sense for this pattern (before training). The
        base check: the algorithm declares the pattern; subclasses add their own after ``super().check``."""
        name = getattr(self, "registry_name", type(self).__name__.lower())
        if (self.algorithms_of or name) not in algorithm.patterns:
            raise ConfigError(f"algorithm {algorithm.registry_name} does not run in the {name} pattern: "
                              f"{self.unsupported_hint(algorithm)}")

    def unsupported_hint(self, algorithm: Any) -> str:
        """What to tell a user whose algorithm does not declare this pattern in ``Algorithm.patterns``."""
        return f"run it with --pattern {algorithm.patterns[0]}"

    def start(self, exp: "Experiment") -> tuple[ServerResult, dict[str, Any], dict[int, dict[str, float]]]:
        raise NotImplementedError

    def step(self, exp: "Experiment", server: ServerResult, round_: int, totals: dict[str, int]) -> "RoundOutput":
        raise NotImplementedError
