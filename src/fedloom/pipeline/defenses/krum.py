"""Distance-based selection: Multi-Krum (Blanchard et al., NeurIPS 2017) and Bulyan (El Mhamdi, Guerraoui,
Rouault, "The Hidden Vulnerability of Distributed Learning in Byzantium", ICML 2018)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from fedloom.algorithms.tree import Tree, tree_map
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.pipeline.aggregators import AGGREGATORS, Aggregator, Krum
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.defenses.common import Items, flat_matrix, report_admitted, weighted_mean


def krum_scores(points: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's score of every row: Σ of squared distances to its n − f − 2 nearest other rows (at least one)."""
    return scores_from_distances(torch.cdist(points.double(), points.double()).pow(2), f)


def scores_from_distances(sq_distances: torch.Tensor, f: int) -> torch.Tensor:
    """Krum scores from the [n, n] squared-distance matrix of the points."""
    closest = max(1, sq_distances.shape[0] - f - 2)
    return sq_distances.sort(dim=1).values[:, 1:closest + 1].sum(dim=1)  # column 0: the point itself


def mean_distance_ranking(points: torch.Tensor) -> torch.Tensor:
    """The Snowball repo's simplified Krum ranking: positions sorted by mean L2 distance to all uploads."""
    distances = torch.cdist(points.double(), points.double())
    return torch.argsort(distances.mean(dim=0), stable=True)


@AGGREGATORS.register("multi-krum")
@dataclass(frozen=True)
class MultiKrum(Krum):
    """Multi-Krum (Blanchard et al., NeurIPS 2017): the m uploads with the lowest Krum scores are averaged
    (unweighted); canonical m = n − f. ``rule = "snowball-repo"`` is the official Snowball code's simplified
    "krum": rank by mean L2 distance to every upload, keep the n − f − 2 best, average them weighted by data size.
    Reports the admitted rates."""

    m: Optional[int] = hp(None, ge=1, help="uploads averaged (None: n − f)")
    rule: str = hp("canonical", choices=("canonical", "snowball-repo"), help="Krum scores, or the repo's "
                   "mean-distance ranking keeping n − f − 2")

    def check_cohort(self, size: int) -> None:
        if size <= 2 * self.f + 2:
            raise ConfigError(f"multi-krum with f={self.f} needs more than 2f+2 = {2 * self.f + 2} uploads per "
                              f"round, but a round samples {size} clients; lower multi-krum.f or sample more clients")
        if self.m is not None and self.m > size:
            raise ConfigError(f"multi-krum.m = {self.m} exceeds the {size} uploads of a round")

    def chosen(self, items: Items) -> list[int]:
        points = flat_matrix(items)
        if self.rule == "snowball-repo":
            return mean_distance_ranking(points)[:max(1, len(items) - self.f - 2)].tolist()
        keep = self.m if self.m is not None else len(items) - self.f
        return torch.argsort(krum_scores(points, self.f), stable=True)[:keep].tolist()

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        chosen = self.chosen(items)
        report_admitted(ctx, items, chosen)
        return weighted_mean(items, chosen, use_weights=self.rule == "snowball-repo")


@AGGREGATORS.register("bulyan")
@dataclass(frozen=True)
class Bulyan(Aggregator):
    """Bulyan (El Mhamdi et al., ICML 2018): θ = n − 2f uploads are chosen one at a time by Krum on the ones not
    yet chosen; then, per coordinate, the β = θ − 2f chosen values closest to their median are averaged.
    Needs n ≥ 4f + 3. Reports the admitted rates of the θ chosen uploads."""

    f: int = hp(1, ge=0, help="Byzantine uploads tolerated")

    def check_cohort(self, size: int) -> None:
        if size < 4 * self.f + 3:
            raise ConfigError(f"bulyan with f={self.f} needs at least 4f+3 = {4 * self.f + 3} uploads per round, "
                              f"but a round samples {size} clients; lower bulyan.f or sample more clients")

    def selection(self, points: torch.Tensor) -> list[int]:
        """Positions picked by iterated Krum (each pick removed before the next); the distances are computed once."""
        sq_distances = torch.cdist(points.double(), points.double()).pow(2)
        remaining = list(range(points.shape[0]))
        picked: list[int] = []
        while len(picked) < points.shape[0] - 2 * self.f:
            scores = scores_from_distances(sq_distances[remaining][:, remaining], self.f)
            best = remaining[int(torch.argmin(scores))]
            picked.append(best)
            remaining.remove(best)
        return picked

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        picked = self.selection(flat_matrix(items))
        report_admitted(ctx, items, picked)
        beta = len(picked) - 2 * self.f
        chosen = [items[p] for p in picked]
        return combine_closest_to_median(chosen, beta)


def combine_closest_to_median(items: Items, beta: int) -> Tree:
    """Per coordinate, the mean of the ``beta`` values closest to the coordinate's median (the mean of the two
    middle values for an even count)."""
    def per_leaf(*parts: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack([p.double() for p in parts])
        ordered = stacked.sort(dim=0).values
        n = ordered.shape[0]
        median = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
        nearest = (stacked - median).abs().argsort(dim=0, stable=True)[:beta]
        return stacked.gather(0, nearest).mean(dim=0).float()

    return tree_map(per_leaf, *[tree for _, tree, _ in items])

