"""LG-FedAvg (P. P. Liang, T. Liu, L. Ziyin, N. B. Allen, R. P. Auerbach, D. Brent, R. Salakhutdinov,
L.-P. Morency, "Think Locally, Act Globally: Federated Learning with Local and Global Representations",
arXiv 2001.01523, 2020); PFLlib/HtFLlib ``serverlg``/``clientlg``.

The body (representation) stays local, the head is global: each client overwrites its head with the global
one, trains its whole model with CE and uploads the head only; the server takes the sample-weighted mean of the
heads (the run's aggregator) and sends it. With heterogeneous bodies of a common feature width and one head
shape (HtFLlib's HtFE families, ``--model a,b`` with equal feature widths) it runs on a mixed federation.
Inference: the client's body with the global head (PFLlib evaluates after the download).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_select
from fedloom.algorithms.uploads import Uploads
from fedloom.models.base import is_body, is_head

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("lg-fedavg")
@dataclass(frozen=True)
class LGFedAvg(Algorithm):
    shared_architecture = False
    needs_common_feature_dim = True  # one Linear(D, C) head for every body
    needs_homogeneous_head: ClassVar[bool] = True

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        head = tree_clone(tree_select(init_params, is_head))
        return ServerResult(state=ServerState(params=head), broadcast=Broadcast(params=head))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"body": tree_clone(tree_select(init_params, is_body))}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        trained, metrics = ctx.local_sgd({**state["body"], **broadcast.params})
        return ClientResult(upload=tree_select(trained, is_head), state={"body": tree_select(trained, is_body)},
                            weight=ctx.num_train_samples, metrics=metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        head = uploads.weighted_mean()
        state = server.replace(round=server.round + 1, params=head if head is not None else server.params)
        return ServerResult(state=state, broadcast=Broadcast(params=state.params))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        body = state["body"] if state is not None else tree_select(ctx.init_params, is_body)
        return {**body, **broadcast.params}
