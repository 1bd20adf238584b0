"""FedExP (Jhunjhunwala, Wang, Joshi, "FedExP: Speeding Up Federated Averaging via Extrapolation", ICLR 2023).

Clients as FedAvg, plus the squared norm of their update ‖Δ_i‖² (4 bytes) so that the server step stays one
weighted mean. Server, Δ̄ = Σ p_i Δ_i:
    η_g = max(1, Σ p_i ‖Δ_i‖² / (2 (‖Δ̄‖² + ε))),     θ ← θ + η_g Δ̄
(the paper's adaptive extrapolation; its clients are weighted equally, p_i = 1/M, here p_i = n_i/Σn like
FedAvg, which is the paper's rule when the clients hold equal data). Left out: the paper also reports the
average of the last two iterates, a smoothing of the evaluated model that changes no training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult, ServerResult, ServerState
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Tree, tree_add, tree_scale, tree_sq_norm, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fedexp")
@dataclass(frozen=True)
class FedExP(FedAvg):
    eps: float = hp(1e-3, gt=0, help="ε, keeps the step bounded when the mean update is tiny")

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        trained, metrics = ctx.local_sgd(broadcast.params)
        delta = tree_sub(trained, broadcast.params)
        upload = {"delta": delta, "sq_norm": ctx.per_client(tree_sq_norm, delta)}
        return ClientResult(upload=upload, state=state, weight=ctx.num_train_samples, metrics=metrics)

    def server_step(self, mean: Tree) -> float:
        """η_g from the mean squared client norm and the mean update."""
        spread = float(mean["sq_norm"]) / (2 * (float(tree_sq_norm(mean["delta"])) + self.eps))
        return max(1.0, spread)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        if mean is None:
            state = server.replace(round=server.round + 1)
            return ServerResult(state, Broadcast(params=state.params))
        eta = self.server_step(mean)
        params = tree_add(server.params, tree_scale(mean["delta"], eta))
        state = server.replace(params=params, round=server.round + 1)
        return ServerResult(state, Broadcast(params=params), {"eta_g": eta})
