"""FedAvgM (Hsu, Qi, Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
Classification", arXiv 1909.06335, 2019): FedAvg with server momentum.

Clients as FedAvg. Server, Δ the weighted mean client update and v (zeros at first) in ServerState.extra:
    v ← β v + Δ,    θ ← θ + η v.
β = 0 and η = 1 give FedAvg exactly. The paper's effective learning rate is η/(1 − β).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedloom.algorithms._server_opt import ServerOptimizer
from fedloom.algorithms.base import ALGORITHMS
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_scale, tree_zeros_like
from fedloom.config import hp


@ALGORITHMS.register("fedavgm")
@dataclass(frozen=True)
class FedAvgM(ServerOptimizer):
    server_lr: float = hp(1.0, gt=0, help="η, the server learning rate")
    momentum: float = hp(0.9, ge=0, lt=1, help="β, the server momentum")

    def init_moments(self, params: Params) -> dict[str, Tree]:
        return {"velocity": tree_zeros_like(params)}

    def step(self, delta: Params, moments: dict[str, Tree]) -> tuple[Params, dict[str, Tree]]:
        velocity = tree_add(tree_scale(moments["velocity"], self.momentum), delta)
        return tree_scale(velocity, self.server_lr), {"velocity": velocity}
