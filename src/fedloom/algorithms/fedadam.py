"""FedAdam (Reddi et al., "Adaptive Federated Optimization", ICLR 2021): the server's second moment is an
exponential average, v ← β2 v + (1 − β2) Δ². Shared step and options in _adaptive.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedloom.algorithms._adaptive import AdaptiveServer
from fedloom.algorithms.base import ALGORITHMS
from fedloom.config import hp


@ALGORITHMS.register("fedadam")
@dataclass(frozen=True)
class FedAdam(AdaptiveServer):
    beta2: float = hp(0.99, ge=0, lt=1, help="β2, decay of the second moment v")

    def second_moment(self, v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return self.beta2 * v + (1 - self.beta2) * d * d
