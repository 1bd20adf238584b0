"""The cyclic pattern: the round's cohort trains one client after another, and the server steps after each, so
every client starts from the server state its predecessors' uploads made (Chang et al., "Distributed deep
learning networks among institutions for medical imaging", JAMIA 2018: cyclical weight transfer; sequential
FL). Any star algorithm runs in it: ``--pattern cyclic``.

Clients go in the cohort's order (ascending ids). The server step of client q sees ``AggregationContext.step``
= (q, n), so an algorithm that keeps a round-level phase (APPLE's PFLlib mode publishes its mixes when the
round ends) can tell the round's last step; the server state's round counter advances once per round, not per
step. Bytes are counted per client as in the star pattern (each client downloads the broadcast current when it
starts), and the round is evaluated once, after its last step (its ``server_*`` metrics are that step's). The server holds one upload at a time, so robust
aggregators (which compare a round's uploads) and omniscient attacks (which craft from them) are refused.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fedloom.algorithms.base import ServerResult
from fedloom.errors import ConfigError
from fedloom.patterns.base import PATTERNS, RoundPattern
from fedloom.pipeline.attacks.base import ATTACKS
from fedloom.rounds import RoundOutput, finish_round, initial_round, round_cohort, train_and_step

if TYPE_CHECKING:
    from fedloom.run import Experiment


@PATTERNS.register("cyclic")
class Cyclic(RoundPattern):
    algorithms_of = "star"  # every algorithm with a server step runs here

    def check(self, cfg: Any, algorithm: Any, num_clients: int) -> None:
        super().check(cfg, algorithm, num_clients)
        if cfg.aggregator not in ("mean", None):
            raise ConfigError(f"--aggregator {cfg.aggregator} compares the uploads of a round, but in the cyclic "
                              f"pattern the server steps after every client (one upload at a time): use the "
                              f"star pattern")
        if cfg.attack is not None and getattr(ATTACKS.get(cfg.attack), "omniscient", False):
            raise ConfigError(f"--attack {cfg.attack} crafts its upload from the round's benign uploads, which "
                              f"the cyclic pattern's server never holds together: use the star pattern")

    def start(self, exp: "Experiment") -> tuple[ServerResult, dict[str, Any], dict[int, dict[str, float]]]:
        return initial_round(exp)

    def step(self, exp: "Experiment", server: ServerResult, round_: int, totals: dict[str, int]) -> RoundOutput:
        t0 = time.perf_counter()
        cohort = round_cohort(exp, round_)
        start_round = server.state.round
        bytes_up = bytes_down = 0
        client_metrics: dict[int, dict[str, float]] = {}
        for q, client in enumerate(cohort):
            if q:  # the counter counts rounds: every step of this one starts from the round's value
                server = ServerResult(server.state.replace(round=start_round), server.broadcast, server.metrics)
            server, result, down = train_and_step(exp, server, [client], round_, step=(q, len(cohort)))
            bytes_up, bytes_down = bytes_up + result.bytes_up, bytes_down + down
            client_metrics.update(result.client_metrics)
        return finish_round(exp, server, round_, totals, cohort, bytes_up, bytes_down, client_metrics, t0)
