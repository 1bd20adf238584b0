"""FedDyn (Acar, Zhao, Matas, Mattina, Whatmough, Saligrama, "Federated Learning Based on Dynamic
Regularization", ICLR 2021).

Client i keeps g_i, the gradient of its loss at its last local model (zeros at first), and from the received θ
minimizes the dynamically regularized objective
    L_i(w) − ⟨g_i, w⟩ + (α/2)‖w − θ‖²
by local SGD (g_i per client, through ``aux``; θ shared). Afterwards g_i ← g_i − α(w_i − θ) (the first-order
condition of that objective at its minimum) and it uploads Δ_i = w_i − θ.
Server, with h (zeros at first) in ServerState.extra, S the round's clients and N all clients:
    h ← h − α (1/N) Σ_{i∈S} Δ_i,     θ ← θ + (1/|S|) Σ_{i∈S} Δ_i − h/α
(the average of the client models minus h/α). Clients are weighted equally as in the paper; the mean is
``uploads.weighted_mean()``, so a robust aggregator composes. The squared norm is the paper's; PFLlib's client
uses the non-squared norm (a quirk not reproduced here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

from fedloom.algorithms._fedopt import tree_dot
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import (Params, Tree, tree_add, tree_clone, tree_scale, tree_sq_dist, tree_sub,
                                     tree_zeros_like)
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("feddyn")
@dataclass(frozen=True)
class FedDyn(Algorithm):
    alpha: float = hp(0.01, gt=0, help="α, weight of the dynamic regularizer (the paper tunes 1e-3..1e-1)")

    # ------------------------------------------------------------------ server
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        params = tree_clone(init_params)
        extra = {"h": tree_zeros_like(params), "clients": torch.tensor(float(federation.num_clients))}
        state = ServerState(params=params, extra=extra)
        return ServerResult(state, Broadcast(params=params))

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        if mean is None:
            state = server.replace(round=server.round + 1)
            return ServerResult(state, Broadcast(params=state.params))
        share = uploads.count / float(server.extra["clients"])  # (1/N) Σ_S Δ_i = (|S|/N) · mean
        h = tree_sub(server.extra["h"], tree_scale(mean, self.alpha * share))
        params = tree_sub(tree_add(server.params, mean), tree_scale(h, 1.0 / self.alpha))
        state = server.replace(params=params, round=server.round + 1, extra={**server.extra, "h": h})
        return ServerResult(state, Broadcast(params=params))

    # ------------------------------------------------------------------ client
    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"grad": tree_zeros_like(dict(init_params))}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        theta = broadcast.params  # shared by every client: a closure is allowed
        alpha = self.alpha

        def dynamic_term(w: Params, aux: Any) -> torch.Tensor:
            return -tree_dot(w, aux["grad"]) + 0.5 * alpha * tree_sq_dist(w, theta)

        trained, metrics = ctx.local_sgd(theta, extra_loss=dynamic_term, aux={"grad": state["grad"]})
        delta = tree_sub(trained, theta)
        grad = tree_sub(state["grad"], tree_scale(delta, alpha))
        return ClientResult(upload=delta, state={"grad": grad}, weight=1.0, metrics=metrics)
