"""FedAdagrad (Reddi et al., "Adaptive Federated Optimization", ICLR 2021): the server's second moment
accumulates, v ← v + Δ². Shared step and options in _adaptive.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedloom.algorithms._adaptive import AdaptiveServer
from fedloom.algorithms.base import ALGORITHMS


@ALGORITHMS.register("fedadagrad")
@dataclass(frozen=True)
class FedAdagrad(AdaptiveServer):
    def second_moment(self, v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return v + d * d
