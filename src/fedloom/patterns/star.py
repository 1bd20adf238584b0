"""The star pattern: a server samples a cohort, the cohort trains, the server steps (federated learning)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedloom.algorithms.base import ServerResult
from fedloom.errors import ConfigError
from fedloom.patterns.base import PATTERNS, RoundPattern
from fedloom.rounds import RoundOutput, initial_round, step_round

if TYPE_CHECKING:
    from fedloom.run import Experiment


@PATTERNS.register("star")
class Star(RoundPattern):
    def check(self, cfg: Any, algorithm: Any, num_clients: int) -> None:
        if "star" not in algorithm.patterns:
            raise ConfigError(f"algorithm {algorithm.registry_name} has no server; run it with "
                              f"--pattern {algorithm.patterns[0]}")

    def start(self, exp: "Experiment") -> tuple[ServerResult, dict[str, Any], dict[int, dict[str, float]]]:
        return initial_round(exp)

    def step(self, exp: "Experiment", server: ServerResult, round_: int, totals: dict[str, int]) -> RoundOutput:
        return step_round(exp, server, round_, totals)
