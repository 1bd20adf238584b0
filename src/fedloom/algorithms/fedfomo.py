"""FedFomo (Zhang, Sapra, Fidler, Yeung, Alvarez, "Personalized Federated Learning with First Order Model
Optimization", ICLR 2021).

Server memory: every client's latest model θ_n and an affinity matrix P (N×N, starts as the identity).
Download to client i: the M models with the largest P[i, ·] (its own included, through the diagonal); in the
first round nobody has uploaded yet, so nothing is sent (as PFLlib).
Client i holds out the last ``val_ratio`` of its training samples as validation and, with θ_i^{t−1} its
model from the previous round,
    w_n = (L_val(θ_i^{t−1}) − L_val(θ_n)) / (‖θ_n − θ_i^{t−1}‖ + 1e-5),
    θ_i ← Σ_n max(w_n, 0) θ_n / Σ_n max(w_n, 0)     (kept unchanged if no w_n is positive),
then trains E epochs on the rest and uploads θ_i together with the raw weights w_n; the server stores θ_i and
adds P[i, n] += w_n. A client is scored with its current model, right after the download (before the round's
update, as PFLlib's protocol).

Which "model from the previous round": ``reference = "start"`` (default) is the model the client started the
previous round's training from (its federated update), as the official code's documented run
(``--baseline_model first_model``) and PFLlib's ``old_model`` do; ``reference = "trained"`` is the model that
round's training produced, the other reading of the paper's θ_i^{t−1}. With "trained" the client's own upload
comes back identical to the reference, so its weight is always 0 and any helpful peer replaces it outright.

Defaults: M = 5, val_ratio = 0.2 (PFLlib). Not implemented: the official code's ε-greedy exploration when
choosing the M models and its L1 distance; PFLlib (whose leaderboard we compare with) has neither, using a
plain top-M and the L2 norm, as here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from fedloom.algorithms._stacks import repeated, row, weighted_rows, with_rows
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_sq_dist
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

DISTANCE_EPS = 1e-5  # PFLlib's guard against a zero distance
REFERENCES = ("start", "trained")


@ALGORITHMS.register("fedfomo")
@dataclass(frozen=True)
class FedFomo(Algorithm):
    aggregation = "all"
    # each client trains on a validation-held-out subset (explicit indices), which a vectorized pack cannot take
    vectorizable = False
    M: int = hp(5, ge=1, help="models downloaded per client")
    val_ratio: float = hp(0.2, gt=0, lt=1, help="share of the training samples held out for validation")
    reference: str = hp("start", choices=REFERENCES, help="the previous-round model the weights compare with")

    # ------------------------------------------------------------------ server
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        n = federation.num_clients
        extra = {"models": repeated(init_params, n), "affinity": torch.eye(n),
                 "sent": torch.zeros(n, 0, dtype=torch.long)}
        return ServerResult(ServerState(params={}, extra=extra), Broadcast(params={}))

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        affinity, sent = server.extra["affinity"].clone(), server.extra["sent"]
        models = with_rows(server.extra["models"], {cid: up["params"] for cid, up, _ in uploads.all()})
        for cid, upload, _ in uploads.all():
            affinity[cid, sent[cid]] += upload["weights"].to(affinity.dtype)
        count = min(self.M, affinity.shape[0])
        chosen = torch.sort(affinity, dim=1, descending=True, stable=True).indices[:, :count]
        personal = {cid: {"ids": chosen[cid], "models": {k: v[chosen[cid]] for k, v in models.items()}}
                    for cid in range(affinity.shape[0])}
        extra = {"models": models, "affinity": affinity, "sent": chosen}
        state = server.replace(round=server.round + 1, extra=extra)
        return ServerResult(state, Broadcast(params={}, personal=personal))

    # ------------------------------------------------------------------ client
    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"model": tree_clone(init_params), "anchor": tree_clone(init_params)}

    def split(self, ctx: ClientContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, validation): the last val_ratio of the client's training samples validate, as PFLlib."""
        n = ctx.num_train_samples
        n_val = min(max(1, int(self.val_ratio * n)), n - 1) if n > 1 else 0
        return ctx.train_indices[:n - n_val], ctx.train_indices[n - n_val:]

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        train, val = self.split(ctx)
        current = state["model"]
        received = broadcast.personal
        if received is None or val.numel() == 0:
            start, weights = current, torch.zeros(0 if received is None else received["ids"].shape[0])
        else:
            reference = state["anchor"] if self.reference == "start" else current
            weights = self.model_weights(ctx, reference, received["models"], val)
            start = combine(weights, received["models"], current)
        trained, metrics = ctx.local_sgd(start, indices=train)
        return ClientResult(upload={"params": trained, "weights": weights},
                            state={"model": trained, "anchor": start},
                            weight=int(train.shape[0]), metrics=metrics)

    @staticmethod
    def model_weights(ctx: ClientContext, reference: Params, models: Params, val: torch.Tensor) -> torch.Tensor:
        """w_n = (L_val(reference) − L_val(θ_n)) / (‖θ_n − reference‖ + ε) for every received θ_n."""
        base = ctx.mean_loss(reference, val)
        count = next(iter(models.values())).shape[0]
        weights = []
        for k in range(count):
            candidate = row(models, k)
            distance = ctx.per_client(lambda a, b: tree_sq_dist(a, b).sqrt(), candidate, reference)
            weights.append((base - ctx.mean_loss(candidate, val)) / (distance + DISTANCE_EPS))
        return torch.stack(weights)

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["model"]


def combine(weights: torch.Tensor, models: Params, fallback: Params) -> Params:
    """Σ_n w_n⁺ θ_n / Σ_n w_n⁺, or ``fallback`` when no weight is positive (no Python branch on values)."""
    positive = weights.clamp_min(0)
    total = positive.sum()
    mixed = weighted_rows(positive / total.clamp_min(torch.finfo(positive.dtype).tiny), models)
    return {name: torch.where(total > 0, mixed[name], fallback[name]) for name in fallback}
