"""Shared half of the split methods (FedPer, FedRep, FedBABU): the body is federated, the head stays home.

The server holds and broadcasts only the body and averages body updates (FedAvg restricted to ``body.*``);
each client keeps its head in its state and is scored with the received body plus its own head. Not an
algorithm by itself (no registration): the leading underscore keeps the package from importing it as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fedloom.algorithms.base import Algorithm, Broadcast, ClientResult, Federation, ServerResult, ServerState
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_select, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.models.base import is_body, is_head

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@dataclass(frozen=True)
class BodySharing(Algorithm):
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        body = tree_clone(tree_select(init_params, is_body))
        return ServerResult(state=ServerState(params=body), broadcast=Broadcast(params=body))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        # every client starts from the same initial head (PFLlib seeds every client's model identically)
        return {"head": tree_clone(tree_select(init_params, is_head))}

    def local_model(self, broadcast: Broadcast, state: Tree) -> Params:
        """The received body completed with this client's own head."""
        return {**broadcast.params, **state["head"]}

    def body_result(self, ctx: ClientContext, broadcast: Broadcast, trained: Params,
                    metrics: dict[str, float]) -> ClientResult:
        """Upload the body update only; the (possibly trained) head goes back into the client's state."""
        upload = tree_sub(tree_select(trained, is_body), broadcast.params)
        return ClientResult(upload=upload, state={"head": tree_select(trained, is_head)},
                            weight=ctx.num_train_samples, metrics=metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean_delta = uploads.weighted_mean()
        body = server.params if mean_delta is None else tree_add(server.params, mean_delta)
        state = server.replace(params=body, round=server.round + 1)
        return ServerResult(state=state, broadcast=Broadcast(params=body))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return self.local_model(broadcast, state)
