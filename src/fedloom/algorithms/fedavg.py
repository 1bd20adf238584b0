"""FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017).

Client: E epochs of minibatch SGD from the global model θ, upload Δ_i = w_i − θ.
Server: θ ← θ + Σ_i (n_i / Σ_j n_j) Δ_i, which equals the sample-weighted average of client models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fedloom.algorithms.base import ALGORITHMS, Algorithm, Broadcast, ClientResult, ServerResult, ServerState
from fedloom.algorithms.tree import Tree, tree_add, tree_sub
from fedloom.algorithms.uploads import Uploads

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fedavg")
@dataclass(frozen=True)
class FedAvg(Algorithm):
    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        trained, metrics = ctx.local_sgd(broadcast.params, **self.local_hooks(broadcast))
        return ClientResult(upload=tree_sub(trained, broadcast.params), state=state,
                            weight=ctx.num_train_samples, metrics=metrics)

    def local_hooks(self, broadcast: Broadcast) -> dict:
        """Hooks passed to local SGD; FedAvg uses none (subclasses such as FedProx add a loss term)."""
        return {}

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean_delta = uploads.weighted_mean()
        params = server.params if mean_delta is None else tree_add(server.params, mean_delta)
        state = server.replace(params=params, round=server.round + 1)
        return ServerResult(state=state, broadcast=Broadcast(params=params))
