"""Robust learning rate (Ozdayi, Kantarcioglu, Gel, "Defending against Backdoors in Federated Learning with
Robust Learning Rate", AAAI 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from fedloom.algorithms.tree import Tree, tree_map
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.pipeline.aggregators import AGGREGATORS, Aggregator
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.defenses.common import Items, leaves, weighted_mean


@AGGREGATORS.register("rlr")
@dataclass(frozen=True)
class RobustLR(Aggregator):
    """RLR (Ozdayi et al., AAAI 2021): per coordinate, if fewer than θ uploads agree on the sign
    (|Σ_i sign(Δ_i)| < θ) the server learning rate is −η there, else +η; the aggregate is that per-coordinate
    rate times the sample-weighted mean. The official Snowball repo runs it with θ = 10 at 50 clients a round."""

    threshold: int = hp(10, ge=1, help="sign-agreement threshold θ")
    server_lr: float = hp(1.0, gt=0, help="server learning rate η")

    def check_cohort(self, size: int) -> None:
        if self.threshold > size:
            raise ConfigError(f"rlr.threshold = {self.threshold} exceeds the {size} uploads of a round: every "
                              f"coordinate's learning rate would be flipped; lower rlr.threshold")

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        mean = weighted_mean(items, range(len(items)))
        trees = [tree for _, tree, _ in items]
        agreement = tree_map(lambda *parts: torch.stack([torch.sign(p.float()) for p in parts]).sum(0).abs(), *trees)
        flipped = []

        def rate(votes: torch.Tensor) -> torch.Tensor:
            low = votes < self.threshold
            flipped.append(low.double().sum())
            return torch.where(low, -self.server_lr, self.server_lr).float()

        rates = tree_map(rate, agreement)
        if ctx is not None:
            total = sum(leaf.numel() for leaf in leaves(agreement))
            ctx.metrics["rlr_flipped_share"] = float(sum(flipped)) / max(total, 1)
        return tree_map(lambda m, r: m * r, mean, rates)
