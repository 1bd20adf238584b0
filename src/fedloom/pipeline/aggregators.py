"""Server aggregators, registered by name (``--aggregator median``): how a server that averages uploads combines
them. Every algorithm whose server averages (``uploads.weighted_mean()``) gets the configured rule without
being edited, so "Ditto under Krum" is one flag. A defense is an aggregator.

``mean`` is reducible (a weighted sum, pre-reduced per pack and per worker); the others declare
``needs_all = True`` and the engines ship every upload individually.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from fedloom.algorithms.tree import Tree, tree_map
from fedloom.errors import ConfigError
from fedloom.registry import Registry

AGGREGATORS: Registry[type] = Registry("aggregator")

#: (client id, upload, weight), sorted by client id.
Items = list[tuple[int, Tree, float]]


@dataclass(frozen=True)
class Aggregator:
    needs_all: ClassVar[bool] = True

    def validate(self) -> None:
        """Raise ConfigError for invalid options."""

    def check_cohort(self, size: int) -> None:
        """Raise ConfigError if the rule cannot work on cohorts of ``size`` uploads."""

    def aggregate(self, items: Items) -> Tree:
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

    def aggregate(self, items: Items) -> Tree:
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

    def aggregate(self, items: Items) -> Tree:
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

    beta: float = 0.1

    def validate(self) -> None:
        if not 0 <= self.beta < 0.5:
            raise ConfigError(f"trimmed-mean.beta must be in [0, 0.5), got {self.beta}")

    def aggregate(self, items: Items) -> Tree:
        cut = math.floor(self.beta * len(items))
        return tree_map(lambda s: s.sort(dim=0).values[cut:s.shape[0] - cut].mean(dim=0), _stack(items))


@AGGREGATORS.register("krum")
@dataclass(frozen=True)
class Krum(Aggregator):
    """Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine Tolerant
    Gradient Descent", NeurIPS 2017): each upload is scored by the sum of squared distances to its n − f − 2
    nearest others; the lowest-scoring upload is the aggregate (Multi-Krum with ``m`` > 1 averages the m best).
    Needs n > 2f + 2."""

    f: int = 1
    m: int = 1

    def validate(self) -> None:
        if isinstance(self.f, bool) or self.f < 0:
            raise ConfigError(f"krum.f must be an integer >= 0, got {self.f}")
        if isinstance(self.m, bool) or self.m < 1:
            raise ConfigError(f"krum.m must be an integer >= 1, got {self.m}")

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

    def aggregate(self, items: Items) -> Tree:
        best = torch.argsort(self.scores(items), stable=True)[:self.m].tolist()
        chosen = [items[i] for i in best]
        return tree_map(lambda s: s.mean(dim=0), _stack(chosen))


def _leaves(tree: Tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
