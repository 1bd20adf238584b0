"""The star pattern: a server samples a cohort, the cohort trains, the server steps (federated learning)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedloom.algorithms.base import ServerResult
from fedloom.patterns.base import PATTERNS, RoundPattern
from fedloom.rounds import RoundOutput, initial_round, step_round

if TYPE_CHECKING:
    from fedloom.run import Experiment


@PATTERNS.register("star")
class Star(RoundPattern):
    def unsupported_hint(self, algorithm: Any) -> str:
        return f"it has no server; {super().unsupported_hint(algorithm)}"

    def start(self, exp: "Experiment") -> tuple[ServerResult, dict[str, Any], dict[int, dict[str, float]]]:
        return initial_round(exp)

    def step(self, exp: "Experiment", server: ServerResult, round_: int, totals: dict[str, int]) -> RoundOutput:
        return step_round(exp, server, round_, totals)
