"""Geometric median by the smoothed Weiszfeld algorithm: RFA (Pillutla, Kakade, Harchaoui, "Robust Aggregation
for Federated Learning", IEEE Transactions on Signal Processing 2022, arXiv 1912.13445)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from fedloom.algorithms.tree import Tree
from fedloom.config import hp
from fedloom.pipeline.aggregators import AGGREGATORS, Aggregator
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.defenses.common import Items, combine, flat_matrix


def weiszfeld(points: torch.Tensor, weights: torch.Tensor, iterations: int, nu: float,
              tolerance: float) -> torch.Tensor:
    """Coefficients c (Σc = 1) of the smoothed geometric median v = Σ c_i x_i of the rows x_i: the minimiser of
    Σ α_i max(ν, ‖v − x_i‖) approached by v ← Σ β_i x_i / Σ β_i with β_i = α_i / max(ν, ‖v − x_i‖), from the
    weighted mean. The median is always a convex combination of the points, so only c is iterated; it stops
    early when the objective improves by less than ``tolerance`` (relative)."""
    x = points.double()
    alpha = weights.double() / weights.double().sum()
    coeffs = alpha.clone()
    objective = _objective(coeffs @ x, x, alpha, nu)
    for _ in range(iterations):
        distances = torch.linalg.vector_norm(coeffs @ x - x, dim=1).clamp_min(nu)
        beta = alpha / distances
        coeffs = beta / beta.sum()
        previous, objective = objective, _objective(coeffs @ x, x, alpha, nu)
        if abs(previous - objective) <= tolerance * max(objective, 1e-30):
            break
    return coeffs


def _objective(v: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, nu: float) -> float:
    return float((alpha * torch.linalg.vector_norm(v - x, dim=1).clamp_min(nu)).sum())


@AGGREGATORS.register("geomed")
@dataclass(frozen=True)
class GeometricMedian(Aggregator):
    """RFA (Pillutla et al., IEEE TSP 2022): the sample-weighted geometric median of the uploads by the smoothed
    Weiszfeld algorithm. The paper finds a few iterations enough (it reports R = 3); ν keeps a step finite when
    the estimate sits on an upload."""

    iterations: int = hp(3, ge=1, help="Weiszfeld iterations (at most)")
    nu: float = hp(1e-6, gt=0, help="smoothing ν: distances below it count as ν")
    tolerance: float = hp(1e-6, ge=0, help="stop when the objective improves by less than this (relative)")
    weighted: bool = hp(True, help="weigh uploads by their sample weights (α_i) or equally")

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        weights = torch.tensor([w if self.weighted else 1.0 for _, _, w in items], dtype=torch.float64)
        coeffs = weiszfeld(flat_matrix(items), weights, self.iterations, self.nu, self.tolerance)
        if ctx is not None:
            ctx.metrics["geomed_max_coefficient"] = float(coeffs.max())
        return combine(items, coeffs)
