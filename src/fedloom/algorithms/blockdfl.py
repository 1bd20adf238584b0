"""BlockDFL's learning protocol (Qin, Yan, Zhou, Deng, "BlockDFL: A Blockchain-based Fully Decentralized
Peer-to-Peer Federated Learning Framework", WWW 2024), without a real blockchain; run with ``--pattern blockdfl``
(fedloom.patterns.blockdfl holds the round; this file holds the node's training and the scoring rules).

Every round produces one "block": one committed global update that every participant applies.
1. Roles: ``providers`` update providers, ``aggregators`` aggregators and ``verifiers`` verifiers are drawn
   without replacement with probability proportional to stake (the paper's stake-weighted hash ring; stakes
   start at 1 and grow by ``reward`` for the participants of each committed block).
2. Providers train from the global model and send their update Δ compressed to its top-k entries (``ratio`` =
   k/d per tensor; the paper's gradient compression, which also blocks reconstruction of their data).
3. Each aggregator scores the updates against their coordinate-wise median (score = ‖Δ_u − median‖, lower is
   better), keeps the best ``keep`` share and proposes their mean as a candidate global update.
4. Each verifier scores the candidates with Krum (fedloom.pipeline.aggregators.Krum, f = ⌊(A − 3)/2⌋) and votes
   for the best; a candidate with more than ``quorum`` of the votes (PBFT's two thirds) is committed, otherwise
   the round commits nothing.
Malicious participants are the run's threat model (``--attack NAME --attack.fraction F``): as providers their
updates go through the attack; as aggregators they propose the mean of the malicious providers' updates (of the
worst-scored ones when no provider is malicious); as verifiers they vote for a malicious aggregator's candidate.
The role counts, ``keep`` and ``reward`` are fedloom's defaults, not values from the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

import numpy as np
import torch

from fedloom.algorithms._sparsify import sparse_message, top_k
from fedloom.algorithms.base import ALGORITHMS, Algorithm, Broadcast, ClientResult, ServerResult, ServerState
from fedloom.algorithms.tree import Params, Tree, tree_map, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


def flat(tree: Params) -> torch.Tensor:
    return torch.cat([tree[name].reshape(-1).double() for name in sorted(tree)])


def select_roles(stakes: np.ndarray, counts: tuple[int, ...], rng: np.random.Generator) -> list[list[int]]:
    """Disjoint role groups of the given sizes, drawn without replacement with probability ∝ stake."""
    order = rng.choice(len(stakes), size=sum(counts), replace=False, p=stakes / stakes.sum())
    groups, start = [], 0
    for count in counts:
        groups.append(sorted(int(c) for c in order[start:start + count]))
        start += count
    return groups


def median_scores(updates: list[Params]) -> torch.Tensor:
    """‖Δ_u − coordinate-wise median‖ for every update (the aggregators' first-layer score; lower is better)."""
    stacked = torch.stack([flat(u) for u in updates])
    return (stacked - stacked.median(dim=0).values).norm(dim=1)


def mean_of(updates: list[Params]) -> Params:
    return tree_map(lambda *leaves: torch.stack([leaf.double() for leaf in leaves]).mean(dim=0).float(), *updates)


@ALGORITHMS.register("blockdfl")
@dataclass(frozen=True)
class BlockDFL(Algorithm):
    aggregation: ClassVar[str] = "all"  # the pattern's aggregators see every update
    patterns: ClassVar[tuple[str, ...]] = ("blockdfl",)
    vectorizable: ClassVar[bool] = False
    providers: int = hp(10, ge=1, help="update providers per round")
    aggregators: int = hp(5, ge=1, help="aggregators per round (each proposes one candidate global update)")
    verifiers: int = hp(5, ge=1, help="verifiers per round (each votes for one candidate)")
    ratio: float = hp(0.1, gt=0, le=1, help="top-k compression of the providers' updates: fraction kept (k/d)")
    keep: float = hp(0.5, gt=0, le=1, help="share of the updates an aggregator keeps (the best median scores)")
    reward: float = hp(0.1, ge=0, help="stake added to each participant of a committed block")
    quorum: float = hp(2 / 3, ge=0.5, lt=1, help="share of the verifiers' votes a candidate must exceed to be "
                       "committed (PBFT: 2/3)")

    def check_federation(self, num_clients: int) -> None:
        roles = self.providers + self.aggregators + self.verifiers
        if roles > num_clients:
            raise ConfigError(f"blockdfl needs {roles} distinct participants per round ({self.providers} providers "
                              f"+ {self.aggregators} aggregators + {self.verifiers} verifiers) but the run has "
                              f"{num_clients} clients; lower the role counts or add clients")

    def krum_f(self) -> int:
        """Byzantine candidates the verifiers' Krum tolerates: the most with A > 2f + 2."""
        return max(0, (self.aggregators - 3) // 2)

    def client_update(self, ctx: "ClientContext", broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        trained, metrics = ctx.local_sgd(broadcast.params)
        update = tree_sub(trained, broadcast.params)
        return ClientResult(upload=sparse_message(update, top_k(update, self.ratio)), state=None,
                            weight=float(ctx.num_train_samples), metrics=metrics)

    def propose(self, updates: list[Params], malicious_rows: list[int], honest: bool) -> tuple[Params, list[int]]:
        """An aggregator's candidate global update and the rows (updates) it used."""
        scores = median_scores(updates)
        count = max(1, int(np.ceil(self.keep * len(updates))))
        if honest:
            rows = torch.argsort(scores, stable=True)[:count].tolist()
        elif malicious_rows:
            rows = list(malicious_rows)
        else:
            rows = torch.argsort(scores, descending=True, stable=True)[:count].tolist()
        return mean_of([updates[r] for r in rows]), sorted(rows)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        raise ConfigError("blockdfl has no server; run it with --pattern blockdfl")
