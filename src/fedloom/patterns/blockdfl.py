"""The BlockDFL round (``--pattern blockdfl``, with ``--algorithm blockdfl``): role selection by stake, providers
train, aggregators propose candidate global updates by median scoring, verifiers pick one by Krum and a two-thirds
vote commits it; every participant applies the committed update (fedloom.algorithms.blockdfl has the rules).

Stakes live in the carried server state (``extra["stake"]``), so checkpoints and resumes keep them. Bytes: each
provider's compressed update goes to every aggregator (``bytes_up`` also counts each candidate sent to every
verifier); the committed block goes to every participant (``bytes_down``). Metrics: ``committed`` (1 or 0),
``votes_for_winner``, ``malicious_winner`` (the committed candidate came from a malicious aggregator) and
``malicious_kept`` (malicious updates inside the committed candidate), and the running counts ``cum_blocks``
(rounds that committed) and ``cum_malicious_blocks`` (of them, a malicious aggregator's).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fedloom.algorithms.base import Broadcast, ServerResult
from fedloom.algorithms.blockdfl import select_roles
from fedloom.algorithms.tree import tree_add, tree_allfinite, tree_bytes
from fedloom.errors import DivergenceError
from fedloom.patterns.base import PATTERNS, RoundPattern
from fedloom.pipeline.aggregators import Krum
from fedloom.rounds import RoundOutput, _rounded, evaluate, initial_round
from fedloom.seeding import numpy_generator

if TYPE_CHECKING:
    from fedloom.run import Experiment

@PATTERNS.register("blockdfl")
class BlockDFLRound(RoundPattern):
    def unsupported_hint(self, algorithm: Any) -> str:
        return "the blockdfl pattern runs --algorithm blockdfl"

    def check(self, cfg: Any, algorithm: Any, num_clients: int) -> None:
        super().check(cfg, algorithm, num_clients)
        algorithm.check_federation(num_clients)

    def start(self, exp: "Experiment") -> tuple[ServerResult, dict[str, Any], dict[int, dict[str, float]]]:
        server, record, per_client = initial_round(exp)
        stake = torch.ones(exp.data.num_clients, dtype=torch.float64)
        state = server.state.replace(extra={**server.state.extra, "stake": stake})
        return ServerResult(state, server.broadcast, server.metrics), record, per_client

    def step(self, exp: "Experiment", server: ServerResult, round_: int, totals: dict[str, Any]) -> RoundOutput:
        cfg, algo, t0 = exp.config, exp.algorithm, time.perf_counter()
        malicious = exp.runtime.uploads.malicious
        stake = server.state.extra["stake"]
        rng = numpy_generator(cfg.seed, round_, -1, "blockdfl-roles")
        providers, aggregators, verifiers = select_roles_of(algo, stake, rng)
        result = exp.engine.train_cohort(algo, server.broadcast, providers, round_)
        items = sorted(result.uploads.all(), key=lambda item: item[0])
        updates = [upload for _, upload, _ in items]
        bad_rows = [row for row, (cid, _, _) in enumerate(items) if cid in malicious]
        candidates = [algo.propose(updates, bad_rows, honest=a not in malicious) for a in aggregators]
        votes = vote(algo, [c for c, _ in candidates], [a in malicious for a in aggregators],
                     [v in malicious for v in verifiers])
        winner = max(range(len(candidates)), key=lambda c: (votes[c], -c))
        committed = votes[winner] > algo.quorum * len(verifiers)
        params, new_stake = server.state.params, stake.clone()
        if committed:
            params = tree_add(params, candidates[winner][0])
            used = [items[row][0] for row in candidates[winner][1]]
            for node in used + [aggregators[winner]] + verifiers:
                new_stake[node] += algo.reward
        if not tree_allfinite(params):
            raise DivergenceError(f"the global model has non-finite parameters after round {round_}; lower --lr")
        candidate_bytes = tree_bytes(candidates[0][0])
        bytes_up = result.bytes_up * len(aggregators) + candidate_bytes * len(aggregators) * len(verifiers)
        bytes_down = candidate_bytes * exp.data.num_clients if committed else 0
        totals["up"] = totals.get("up", 0) + bytes_up
        totals["down"] = totals.get("down", 0) + bytes_down
        totals["blocks"] = totals.get("blocks", 0) + int(committed)
        totals["malicious_blocks"] = totals.get("malicious_blocks", 0) + int(committed and aggregators[winner]
                                                                             in malicious)
        state = server.state.replace(params=params, round=server.state.round + 1,
                                     extra={**server.state.extra, "stake": new_stake})
        server = ServerResult(state, Broadcast(params=params), {})
        t_train = time.perf_counter() - t0
        if round_ % cfg.eval_every and round_ != cfg.rounds:
            return RoundOutput(server, None, None, result.client_metrics, t_train, 0.0)
        record, per_client = evaluate(exp, server.broadcast, round_)
        malicious_kept = sum(items[row][0] in malicious for row in candidates[winner][1]) if committed else 0
        record = _rounded({"round": round_, **record, "clients_sampled": len(providers), "bytes_up": bytes_up,
                           "bytes_down": bytes_down, "cum_bytes_up": totals["up"], "cum_bytes_down": totals["down"],
                           "committed": int(committed), "votes_for_winner": votes[winner],
                           "malicious_winner": int(committed and aggregators[winner] in malicious),
                           "malicious_kept": malicious_kept, "malicious_providers": len(bad_rows),
                           "cum_blocks": totals["blocks"], "cum_malicious_blocks": totals["malicious_blocks"]})
        return RoundOutput(server, record, per_client, result.client_metrics, t_train,
                           time.perf_counter() - t0 - t_train)


def select_roles_of(algo: Any, stake: torch.Tensor, rng: np.random.Generator) -> list[list[int]]:
    return select_roles(stake.numpy(), (algo.providers, algo.aggregators, algo.verifiers), rng)


def vote(algo: Any, candidates: list[Any], bad_aggregator: list[bool], bad_verifier: list[bool]) -> list[int]:
    """Votes per candidate: honest verifiers vote for the best Krum score among the candidates (all honest ones
    compute the same scores); malicious ones for a malicious aggregator's candidate when there is one."""
    votes = [0] * len(candidates)
    if len(candidates) > 2 * algo.krum_f() + 2:
        scores = Krum(f=algo.krum_f()).scores([(i, c, 1.0) for i, c in enumerate(candidates)])
        best = int(torch.argsort(scores, stable=True)[0])
    else:  # one or two candidates: Krum cannot tell them apart, the first aggregator's is taken
        best = 0
    colluding = [i for i, bad in enumerate(bad_aggregator) if bad]
    for bad in bad_verifier:
        votes[colluding[0] if bad and colluding else best] += 1
    return votes
