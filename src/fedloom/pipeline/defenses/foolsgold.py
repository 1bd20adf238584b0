"""FoolsGold (Fung, Yoon, Beschastnikh, "The Limitations of Federated Learning in Sybil Settings", RAID 2020,
arXiv 1808.04866): clients whose update histories point the same way (sybils) are down-weighted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from fedloom.algorithms.tree import Tree
from fedloom.config import hp
from fedloom.pipeline.aggregators import AGGREGATORS, Aggregator
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.defenses.common import Items, combine, flat, named_leaves, report_admitted

HISTORY_KEY = "history"


def foolsgold_weights(histories: torch.Tensor, kappa: float) -> torch.Tensor:
    """The paper's per-round weights α from the clients' history vectors (rows):
    cs = pairwise cosine (self-similarity excluded), v_i = max_j cs_ij; pardoning cs_ij ← cs_ij·v_i/v_j when
    v_j > v_i; α_i = 1 − max_j cs_ij clipped to [0, 1]; α ← α / max α with 1 → 0.99; logit
    α ← κ(ln(α/(1 − α)) + 0.5) clipped to [0, 1]."""
    h = histories.double()
    unit = h / torch.linalg.vector_norm(h, dim=1, keepdim=True).clamp_min(1e-30)
    n = h.shape[0]
    cs = unit @ unit.T - torch.eye(n, dtype=torch.float64)
    v = cs.max(dim=1).values
    ratio = v[:, None] / torch.where(v[None, :] == 0, torch.ones_like(v[None, :]), v[None, :])
    cs = torch.where(v[None, :] > v[:, None], cs * ratio, cs)
    alpha = (1 - cs.max(dim=1).values).clamp(0, 1)
    if float(alpha.max()) <= 0:
        return torch.zeros(n, dtype=torch.float64)
    alpha = alpha / alpha.max()
    alpha = torch.where(alpha == 1, torch.full_like(alpha, 0.99), alpha)
    with torch.no_grad():
        logit = kappa * (torch.log(alpha / (1 - alpha)) + 0.5)  # log(0) = −inf → clipped to 0
    return torch.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)


@AGGREGATORS.register("foolsgold")
@dataclass(frozen=True)
class FoolsGold(Aggregator):
    """FoolsGold (Fung et al., RAID 2020): clients whose update histories are alike (sybils) get low weights.
    Each client's history H_i = Σ_t Δ_i^t is kept in the aggregator's
    memory (``ctx.state``, checkpointed); every round the cohort's weights come from the cosine similarities of
    their histories (:func:`foolsgold_weights`) and the aggregate is Σ α_i Δ_i / Σ α_i (zero when every α is 0).
    ``history = "head"`` keeps only the last layer's coordinates (the output layer the paper's feature-importance
    variant looks at), which bounds the memory at many clients: the full history is one model-sized vector per
    client ever sampled. Uploads with α > 0 count as admitted."""

    kappa: float = hp(1.0, gt=0, help="confidence κ of the logit")
    history: str = hp("all", choices=("all", "head"), help="coordinates kept in each client's history")

    def signature(self, tree: Tree) -> torch.Tensor:
        if self.history == "all":
            return flat(tree)
        named = named_leaves(tree)
        head = [leaf for name, leaf in named if name.startswith("head.")] or [named[-1][1]]
        return torch.cat([leaf.reshape(-1).float() for leaf in head])

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        memory = dict(ctx.state.get(HISTORY_KEY, {})) if ctx is not None else {}
        rows = []
        for client, tree, _ in items:
            update = self.signature(tree)
            previous = memory.get(str(client))
            memory[str(client)] = update if previous is None else previous + update
            rows.append(memory[str(client)])
        alpha = foolsgold_weights(torch.stack(rows), self.kappa)
        if ctx is not None:
            ctx.state[HISTORY_KEY] = memory
        report_admitted(ctx, items, [p for p in range(len(items)) if alpha[p] > 0])
        total = float(alpha.sum())
        return combine(items, alpha / total if total > 0 else alpha)
