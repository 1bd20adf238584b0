"""FedAMP (Huang, Chu, Zhou, Wang, Liu, Pei, Zhang, "Personalized Cross-Silo Federated Learning on Non-IID
Data", AAAI 2021).

Server memory: every client's latest model w_j. After each round, for every client i it builds a cloud model
from the models uploaded that round (U), weighted by attention:
    ξ_ij = α_K · e^{−‖w_i − w_j‖²/σ} / σ   (j ∈ U, j ≠ i),     u_i = Σ_j ξ_ij w_j + (1 − Σ_j ξ_ij) w_i,
and sends u_i to client i alone (|M| bytes). Client i keeps its own model (never overwritten by u_i) and trains
E epochs on CE(w) + (λ / (2α_K)) ‖w − u_i‖², then uploads w. Scored with its own model after the download.
Round 1 sends nothing (nobody has uploaded): the anchor is the client's own starting model.

Defaults α_K = 1, σ = 1, λ = 1 (PFLlib ``-alk``, ``-sg``, ``-lam``). ``pfllib_compat = True`` reproduces
PFLlib's client term ½(λ/α_K)‖w − u‖, which is not squared and, being computed from ``.data`` copies, has no
gradient: PFLlib's FedAMP clients therefore train exactly like Local ones (its issue #95 reports the
identical curves); compat adds the term's value to the reported loss and nothing to the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

from fedloom.algorithms._stacks import flattened, repeated, weighted_rows, with_rows
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_sq_dist
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fedamp")
@dataclass(frozen=True)
class FedAMP(Algorithm):
    aggregation = "all"
    alpha_k: float = hp(1.0, gt=0, help="α_K, the attention scale")
    sigma: float = hp(1.0, gt=0, help="σ, the attention bandwidth")
    lamda: float = hp(1.0, ge=0, help="λ, weight of the pull toward the cloud model")
    pfllib_compat: bool = False

    # ------------------------------------------------------------------ server
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        models = repeated(init_params, federation.num_clients)
        return ServerResult(ServerState(params={}, extra={"models": models}), Broadcast(params={}))

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        uploaded = {cid: upload for cid, upload, _ in uploads.all()}
        models = with_rows(server.extra["models"], uploaded)
        weights = self.attention(models, sorted(uploaded))
        personal = {cid: {"anchor": weighted_rows(weights[cid], models)} for cid in range(weights.shape[0])}
        state = server.replace(round=server.round + 1, extra={"models": models})
        return ServerResult(state, Broadcast(params={}, personal=personal), {"self_weight_mean":
                                                                             float(weights.diagonal().mean())})

    def attention(self, models: Params, senders: list[int]) -> torch.Tensor:
        """Row i: the weights of u_i over all clients (ξ_ij for this round's senders j ≠ i, the rest on i)."""
        flat = flattened(models).double()
        n = flat.shape[0]
        weights = torch.zeros(n, n, dtype=torch.float64)
        if senders:
            sq = torch.cdist(flat, flat[senders]).pow(2)  # [n, |senders|]
            xi = self.alpha_k * torch.exp(-sq / self.sigma) / self.sigma
            xi[torch.tensor(senders), torch.arange(len(senders))] = 0.0  # j ≠ i
            weights[:, senders] = xi
        weights[torch.arange(n), torch.arange(n)] = 1.0 - weights.sum(dim=1)
        return weights.float()

    # ------------------------------------------------------------------ client
    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"model": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        own = state["model"]
        anchor = own if broadcast.personal is None else broadcast.personal["anchor"]
        trained, metrics = ctx.local_sgd(own, extra_loss=self.attraction, aux={"anchor": anchor})
        return ClientResult(upload=trained, state={"model": trained}, weight=ctx.num_train_samples,
                            metrics=metrics)

    def attraction(self, params: Params, aux: Any) -> torch.Tensor:
        if self.pfllib_compat:
            frozen = {name: value.detach() for name, value in params.items()}
            return 0.5 * self.lamda / self.alpha_k * tree_sq_dist(frozen, aux["anchor"]).sqrt()
        return 0.5 * self.lamda / self.alpha_k * tree_sq_dist(params, aux["anchor"])

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["model"]
