"""Norm bounding with weak differential privacy (Sun, Kairouz, Suresh, McMahan, "Can You Really Backdoor
Federated Learning?", arXiv 1911.07963, 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from fedloom.algorithms.tree import Tree
from fedloom.config import hp
from fedloom.pipeline.aggregators import AGGREGATORS, Aggregator
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.defenses.common import Items, add_noise, clip_factors, combine, flat_matrix, \
    generator_or_default


@AGGREGATORS.register("norm-clip")
@dataclass(frozen=True)
class NormClip(Aggregator):
    """Sun et al. 2019: every update is clipped on the server to an L2 bound M, Δ_i ← Δ_i·min(1, M/‖Δ_i‖), the
    clipped updates are averaged with the sample weights, and "weak DP" adds N(0, σ²) to every coordinate of the
    aggregate (σ = 0 turns it off). The paper sweeps M per model; σ = 0.025 is its weak-DP level."""

    norm: float = hp(1.0, gt=0, help="the L2 bound M of every update")
    sigma: float = hp(0.025, ge=0, help="std of the Gaussian noise added to the aggregate (0: none)")

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        norms = torch.linalg.vector_norm(flat_matrix(items).double(), dim=1)
        weights = torch.tensor([w for _, _, w in items], dtype=torch.float64)
        coeffs = clip_factors(norms, self.norm) * weights / weights.sum()
        if ctx is not None:
            ctx.metrics["clipped_share"] = float((norms > self.norm).double().mean())
        return add_noise(combine(items, coeffs), self.sigma, generator_or_default(ctx, "weak-dp"))
