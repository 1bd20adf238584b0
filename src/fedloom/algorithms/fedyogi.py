"""FedYogi (Reddi et al., "Adaptive Federated Optimization", ICLR 2021, after Zaheer et al.'s Yogi, NeurIPS
2018): the second moment moves toward Δ² by an additive step, v ← v − (1 − β2) Δ² sign(v − Δ²), so it grows
as fast as Adam's but shrinks more slowly. Shared step and options in _adaptive.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedloom.algorithms._adaptive import AdaptiveServer
from fedloom.algorithms.base import ALGORITHMS
from fedloom.config import hp


@ALGORITHMS.register("fedyogi")
@dataclass(frozen=True)
class FedYogi(AdaptiveServer):
    beta2: float = hp(0.99, ge=0, lt=1, help="β2, rate of the second moment's additive step")

    def second_moment(self, v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        sq = d * d
        return v - (1 - self.beta2) * sq * torch.sign(v - sq)
