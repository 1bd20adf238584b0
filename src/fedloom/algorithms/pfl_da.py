"""PFL-DA ("Personalized Federated Learning via Domain Adaptation with an Application to Distributed 3D
Printing", Technometrics 2023; NSF PAR 10404518). PFLlib: ``serverda.py`` / ``clientda.py``.

Each client keeps a personal model (body φ_i and personal head h_i, never sent) and receives the global head
h_g, the only shared tensor. A client update has two phases over its data (E epochs each):
  1. the personal head alone (body frozen): CE(h_i(φ_i(x)), y) + λ·‖h_i − h_g‖₂ (the L2 norm over all head
     tensors, not squared, as PFLlib), which adapts the global knowledge to the local domain;
  2. the body and a working copy of the global head together: CE(h_g(φ_i(x)), y), so that the body learns
     features the shared head can read.
The client uploads its trained copy of h_g (as h_g' − h_g); the server is FedAvg over heads (sample
weights). A client is scored with its personal model φ_i + h_i (PFLlib evaluates after the download,
before training; the personal model does not depend on the download, so this is the model after its last
update). λ defaults to 1 (PFLlib's ``-lam``). No PFLlib deviation is known to us; the paper's head
regularizer is followed as PFLlib writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_select, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.models.base import is_body

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

HEAD_STREAM = "pfl-da-head"  # phase 1 walks the data in its own order (PFLlib reshuffles every pass)


def is_head(name: str) -> bool:
    return not is_body(name)


def head_distance(params: Params, anchor: Params) -> torch.Tensor:
    """‖h − h_g‖₂ over every head tensor (one vector), as PFLlib concatenates them."""
    flat = torch.cat([(params[n] - anchor[n]).flatten() for n in anchor])
    return torch.linalg.vector_norm(flat)


@ALGORITHMS.register("pfl-da")
@dataclass(frozen=True)
class PFLDA(Algorithm):
    lamda: float = hp(1.0, ge=0, help="λ, weight of ‖h_i − h_g‖ in the personal-head phase")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        head = tree_clone(tree_select(init_params, is_head))
        return ServerResult(ServerState(params=head), Broadcast(params=head))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"model": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        state = state if state is not None else self.init_client_state(ctx.init_params, ctx.client_id)
        global_head = broadcast.params
        hooks = {}
        if self.lamda > 0:  # the anchor is the broadcast, shared by every client: a closure is fine
            hooks["extra_loss"] = lambda w, aux: self.lamda * head_distance(w, global_head)
        personal, _ = ctx.local_sgd(state["model"], trainable=is_head, purpose=HEAD_STREAM, **hooks)
        body = tree_select(personal, is_body)
        shared, m2 = ctx.local_sgd({**body, **global_head})
        model = {**tree_select(shared, is_body), **tree_select(personal, is_head)}
        upload = tree_sub(tree_select(shared, is_head), global_head)
        return ClientResult(upload=upload, state={"model": model}, weight=ctx.num_train_samples, metrics=m2)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        params = server.params if mean is None else tree_add(server.params, mean)
        return ServerResult(server.replace(params=params, round=server.round + 1), Broadcast(params=params))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["model"] if state is not None else ctx.init_params
