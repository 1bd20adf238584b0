"""The "ideal" oracle of the Snowball paper (Qin et al., AAAI 2024): aggregate the benign uploads only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fedloom.algorithms.tree import Tree, tree_zeros_like
from fedloom.errors import ConfigError
from fedloom.pipeline.aggregators import AGGREGATORS, Aggregator
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.defenses.common import Items, report_admitted, weighted_mean


@AGGREGATORS.register("ideal")
@dataclass(frozen=True)
class Ideal(Aggregator):
    """The oracle (an upper bound, not a defense): the sample-weighted mean of the benign clients' uploads only.
    It reads the threat model's ground truth (``ctx.malicious``). A round whose cohort is all malicious leaves the
    model unchanged (a zero update)."""

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        if ctx is None:
            raise ConfigError("the ideal aggregator needs the round's aggregation context (the malicious ids)")
        benign = [p for p, (client, _, _) in enumerate(items) if client not in ctx.malicious]
        report_admitted(ctx, items, benign)
        if not benign:
            return tree_zeros_like(items[0][1])
        return weighted_mean(items, benign)
