"""The adaptive server optimizers of Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan,
"Adaptive Federated Optimization", ICLR 2021 (Algorithm 2): FedAdagrad, FedAdam and FedYogi share
    m ← β1 m + (1 − β1) Δ,     θ ← θ + η m / (√v + τ)
and differ only in the second moment v (``second_moment``). m starts at 0 and v at τ² (the paper's
v_{−1} ≥ τ²); there is no bias correction, as in the paper. Δ is the weighted mean client update."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedloom.algorithms._server_opt import ServerOptimizer
from fedloom.algorithms.tree import Params, Tree, tree_map, tree_zeros_like
from fedloom.config import hp


@dataclass(frozen=True)
class AdaptiveServer(ServerOptimizer):
    # the paper tunes η per task (10^-2.5..10^0 in its grids); τ = 1e-3 and β1 = 0.9 are its defaults
    server_lr: float = hp(0.01, gt=0, help="η, the server learning rate")
    beta1: float = hp(0.9, ge=0, lt=1, help="β1, decay of the first moment m")
    tau: float = hp(1e-3, gt=0, help="τ, adaptivity (added to √v; v starts at τ²)")

    def second_moment(self, v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def init_moments(self, params: Params) -> dict[str, Tree]:
        return {"m": tree_zeros_like(params), "v": tree_map(lambda p: torch.full_like(p, self.tau ** 2), params)}

    def step(self, delta: Params, moments: dict[str, Tree]) -> tuple[Params, dict[str, Tree]]:
        m = tree_map(lambda m_, d: self.beta1 * m_ + (1 - self.beta1) * d, moments["m"], delta)
        v = tree_map(self.second_moment, moments["v"], delta)
        update = tree_map(lambda m_, v_: self.server_lr * m_ / (v_.sqrt() + self.tau), m, v)
        return update, {"m": m, "v": v}
