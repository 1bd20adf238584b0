"""FedPCL (Tan, Long, Ma, Liu, Zhou, Jiang, "Federated Learning from Pre-Trained Models: A Contrastive Learning
Approach", NeurIPS 2022), without pre-trained backbones, as PFLlib runs it (``serverpcl.py`` /
``clientpcl.py``): every client trains its own feature extractor φ_i (the model's body; the head is unused)
and only class prototypes travel.

* prototypes: p_{i,c} = the mean of the L2-normalised features φ_i(x)/‖φ_i(x)‖ of client i's class-c samples;
* server: the global prototype of c is the unweighted mean of the uploaded p_{i,c} over the clients holding
  c (a class nobody uploaded this round keeps its last global prototype); it sends the global prototypes and
  every client's prototypes, a client's missing classes (and a client not heard from yet) padded with the
  global ones;
* client (from its second round; in its first it only computes prototypes): E epochs on
      L = L_g + L_p,  L_g = CE(f·Gᵀ/τ, y),  L_p = (1/N) Σ_j CE(f·P_jᵀ/τ, y),  f = φ_i(x)/‖φ_i(x)‖,
  the global-prototype and the client-prototype contrastive losses, with the gradient norm clipped to 10
  (PFLlib), then its prototypes from the trained φ_i;
* inference: the class of the most similar *own* prototype, f·p_{i,c} (classes it does not hold never win).

Upload: the k held classes' prototype rows and ids. Download: the global table and the N client tables
(N·C·D floats, shared by every client). τ defaults to 1 (PFLlib's ``-tau``).

PFLlib bugs not reproduced (no switch): PFLlib stacks its prototype dicts in insertion order and indexes the
result with the label, so a table whose classes arrived out of order scores the wrong rows; a test class the
client lacks scores 0, which can beat negative similarities. Here tables are indexed by class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _htfl as H
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, ApplyFn, Broadcast, ClientResult, Federation, Predictor,
                                     ServerResult, ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.models.base import is_body

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

CLIP_NORM = 10.0  # PFLlib's clip_grad_norm_(…, 10)


def unit_features(apply: ApplyFn, params: Params, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(H.body(apply, params, x), dim=1)


def contrastive_loss(apply: ApplyFn, global_table: torch.Tensor, client_tables: torch.Tensor,
                     tau: float) -> Callable[..., torch.Tensor]:
    """Per-sample L_g + L_p against the global table [C, D] and the N padded client tables [N, C, D]."""

    def loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
        f = unit_features(apply, w, x)
        l_g = F.cross_entropy(f @ global_table.T / tau, y, reduction="none")
        logits = torch.einsum("bd,ncd->bnc", f, client_tables) / tau  # [B, N, C]
        targets = y.unsqueeze(1).expand(-1, client_tables.shape[0])
        l_p = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(1)
        return l_g + l_p

    return loss


def nearest_own_prototype(apply: ApplyFn, tree: Tree, x: torch.Tensor) -> torch.Tensor:
    """Scores f·p_c over the client's own prototypes; classes it lacks just below its lowest score."""
    if "protos" not in tree:
        return apply(tree["params"], x)
    scores = unit_features(apply, tree["params"], x) @ tree["protos"].T
    held = tree["held"] > 0
    low = scores.masked_fill(~held, float("inf")).amin(1, keepdim=True) - 1
    return torch.where(held, scores, low.expand_as(scores))


@ALGORITHMS.register("fedpcl")
@dataclass(frozen=True)
class FedPCL(Algorithm):
    aggregation = "all"  # the server keeps every client's prototypes
    vectorizable = False  # the prototype pass is a per-client loop over its data
    needs_common_feature_dim = True
    shared_architecture = False  # prototypes, not parameters, travel
    tau: float = hp(1.0, gt=0, help="τ, temperature of both contrastive losses")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        state = ServerState(params={}, extra={"num_clients": torch.tensor(federation.num_clients)})
        return ServerResult(state, Broadcast(params={}))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"params": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        state = state if state is not None else self.init_client_state(ctx.init_params, ctx.client_id)
        params, metrics = state["params"], {}
        if "global" in broadcast.extra:  # PFLlib's first round only computes prototypes
            loss = contrastive_loss(ctx.apply, broadcast.extra["global"], broadcast.extra["clients"], self.tau)
            params, metrics = ctx.local_sgd(params, batch_loss=loss, trainable=is_body,
                                            grad_correction=H.clip_groups(CLIP_NORM))
        protos, held = H.class_means(ctx, params, lambda w, x: unit_features(ctx.apply, w, x), H.num_classes(ctx))
        new_state = {"params": params, "protos": protos, "held": held.float()}
        return ClientResult(upload=H.rows_message(protos, held), state=new_state, weight=1.0, metrics=metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        items = uploads.all()
        extra = dict(server.extra)
        if items:
            extra.update(self.tables(server.extra, items))
        state = server.replace(round=server.round + 1, extra=extra)
        if "global" not in extra:
            return ServerResult(state, Broadcast(params={}))
        padded = torch.where(extra["held"].unsqueeze(-1) > 0, extra["clients"], extra["global"].unsqueeze(0))
        return ServerResult(state, Broadcast(params={}, extra={"global": extra["global"], "clients": padded}))

    @staticmethod
    def tables(memory: dict, items: list) -> dict:
        """The global table (this round's mean, older rows kept for classes nobody sent) and the client tables."""
        n = int(memory["num_clients"])
        first = items[0][1]["sum"]
        clients = memory.get("clients", torch.zeros(n, *first.shape))
        held = memory.get("held", torch.zeros(n, first.shape[0])).clone()
        clients = clients.clone()
        for cid, up, _ in items:
            clients[cid], held[cid] = up["sum"], up["count"]
        total = torch.stack([up["sum"] for _, up, _ in items]).sum(0)
        count = torch.stack([up["count"] for _, up, _ in items]).sum(0)
        mean = total / count.clamp(min=1).unsqueeze(1)
        old = memory.get("global", torch.zeros_like(mean))
        return {"global": torch.where(count.unsqueeze(1) > 0, mean, old), "clients": clients, "held": held}

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Predictor:
        state = state if state is not None else {"params": ctx.init_params}
        return Predictor(dict(state), nearest_own_prototype)
