"""Local training: every client trains its own model from the shared initialisation and never
communicates. The lower-bound baseline of pFL papers (PFLlib ``serverlocal``, HtFLlib ``Local``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone
from fedloom.algorithms.uploads import Uploads

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("local")
@dataclass(frozen=True)
class Local(Algorithm):
    shared_architecture = False  # nothing is exchanged: every client may have its own architecture

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        # nothing is ever sent: the broadcast is empty, so bytes down are zero
        return ServerResult(state=ServerState(params={}), broadcast=Broadcast(params={}))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"params": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        trained, metrics = ctx.local_sgd(state["params"])
        return ClientResult(upload=None, state={"params": trained}, weight=ctx.num_train_samples,
                            metrics=metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        state = server.replace(round=server.round + 1)
        return ServerResult(state=state, broadcast=Broadcast(params={}))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["params"]
