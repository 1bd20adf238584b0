"""Server aggregators, registered by name (``--aggregator median``): how a server that averages uploads combines
them. Every algorithm whose server averages (``uploads.weighted_mean()``) gets the configured rule without
being edited, so "Ditto under Krum" is one flag. A defense is an aggregator.

``mean`` is reducible (a weighted sum, pre-reduced per pack and per worker); the others declare
``needs_all = True`` and the engines ship every upload individually.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from fedloom.algorithms.tree import Tree, tree_map
from fedloom.config import check_fields, hp
from fedloom.errors import ConfigError
from fedloom.pipeline.context import AggregationContext
from fedloom.registry import Registry

AGGREGATORS: Registry[type] = Registry("aggregator")

#: (client id, upload, weight), sorted by client id.
Items = list[tuple[int, Tree, float]]


@dataclass(frozen=True)
class Aggregator:
    """Base class. ``aggregate(items, ctx)`` combines every upload of a round (``ctx``: the round's
    :class:`~fedloom.pipeline.context.AggregationContext`, None in unit tests of stateless rules)."""

    needs_all: ClassVar[bool] = True
    #: True for a reducible rule with a step of its own on the engines' reduced sum (``reduce``): client-level
    #: DP adds its noise there, so packs and workers keep their partial sums.
    reduces: ClassVar[bool] = False

    def validate(self) -> None:
        """Raise ConfigError for invalid options: the ranges the fields declare with ``config.hp``."""
        check_fields(self)

    def reduce(self, weighted_sum: Optional[Tree], total_weight: float, count: int,
               ctx: Optional[AggregationContext] = None) -> Optional[Tree]:
        """The aggregate from the reduced sum Σ wᵢuᵢ alone (rules with ``reduces = True``)."""
        raise NotImplementedError

    def check_cohort(self, size: int) -> None:
        """Raise ConfigError if the rule cannot work on cohorts of ``size`` uploads."""

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        raise NotImplementedError


def _stack(items: Items) -> Tree:
    """Every upload stacked along a new leading axis (coordinate-wise rules work on it)."""
    trees = [tree for _, tree, _ in items]
    return tree_map(lambda *leaves: torch.stack([leaf.float() for leaf in leaves]), *trees)


@AGGREGATORS.register("mean")
@dataclass(frozen=True)
class Mean(Aggregator):
    """The weighted mean Σ wᵢuᵢ / Σ wᵢ (FedAvg). Reducible: engines keep only the running sum."""

    needs_all: ClassVar[bool] = False

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        total = sum(weight for _, _, weight in items)
        return tree_map(lambda s: (s / total).float(), _weighted_sum(items))


def _weighted_sum(items: Items) -> Tree:
    stacked = _stack(items)
    weights = torch.tensor([weight for _, _, weight in items], dtype=torch.float64)
    return tree_map(lambda s: torch.tensordot(weights.to(s.device), s.double(), dims=1), stacked)


@AGGREGATORS.register("median")
@dataclass(frozen=True)
class Median(Aggregator):
    """Coordinate-wise median (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards
    Optimal Statistical Rates", ICML 2018), unweighted; for an even count the mean of the two middle values."""

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        def median(s: torch.Tensor) -> torch.Tensor:
            ordered = s.sort(dim=0).values
            n = ordered.shape[0]
            return ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])

        return tree_map(median, _stack(items))


@AGGREGATORS.register("trimmed-mean")
@dataclass(frozen=True)
class TrimmedMean(Aggregator):
    """Coordinate-wise β-trimmed mean (Yin et al., ICML 2018): drop the floor(β·n) largest and smallest values of
    every coordinate, average the rest (unweighted)."""

    beta: float = hp(0.1, ge=0, lt=0.5, help="share of the largest and of the smallest values dropped")

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        cut = math.floor(self.beta * len(items))
        return tree_map(lambda s: s.sort(dim=0).values[cut:s.shape[0] - cut].mean(dim=0), _stack(items))


@AGGREGATORS.register("krum")
@dataclass(frozen=True)
class Krum(Aggregator):
    """Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine Tolerant
    Gradient Descent", NeurIPS 2017): each upload is scored by the sum of squared distances to its n − f − 2
    nearest others; the lowest-scoring upload is the aggregate (Multi-Krum with ``m`` > 1 averages the m best).
    Needs n > 2f + 2."""

    f: int = hp(1, ge=0, help="Byzantine uploads tolerated")
    m: int = hp(1, ge=1, help="best-scored uploads averaged (1: Krum, > 1: Multi-Krum)")

    def check_cohort(self, size: int) -> None:
        if size <= 2 * self.f + 2:
            raise ConfigError(f"krum with f={self.f} needs more than 2f+2 = {2 * self.f + 2} uploads per round, "
                              f"but a round samples {size} clients; lower krum.f or sample more clients")

    def scores(self, items: Items) -> torch.Tensor:
        flat = torch.stack([torch.cat([leaf.reshape(-1).double() for leaf in _leaves(tree)])
                            for _, tree, _ in items])
        distances = torch.cdist(flat, flat).pow(2)
        closest = len(items) - self.f - 2
        # column 0 of each sorted row is the point itself (distance 0)
        return distances.sort(dim=1).values[:, 1:closest + 1].sum(dim=1)

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        from fedloom.pipeline.defenses.common import report_admitted  # the defenses package imports this module

        best = torch.argsort(self.scores(items), stable=True)[:self.m].tolist()
        report_admitted(ctx, items, best)
        chosen = [items[i] for i in best]
        return tree_map(lambda s: s.mean(dim=0), _stack(chosen))


def _leaves(tree: Tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
