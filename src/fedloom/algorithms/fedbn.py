"""FedBN (Li, Jiang, Zhang, Kamp, Dou, "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization", ICLR 2021).

FedAvg in which every BatchNorm layer stays local: client i trains [θ_¬BN (received), β_i (its own BN affine
parameters γ, β)] for E epochs; uploads the non-BN update only; the server averages the non-BN parameters
(FedAvg) and never sees a BN parameter. Each client is scored with [θ_¬BN, β_i]. BN *statistics* are never
averaged either: with ``--model cnn-bn`` they are the statistics of the client's own batches
(models/cnn_bn.py), which never leave it — as in PFLlib, where BN running statistics are buffers that no
algorithm aggregates.

Which parameters are BN: a dotted name segment starting with "bn" (``body.bn1.weight``), PFLlib's rule
(``'bn' not in name`` on download). Paper and PFLlib agree on what stays local (affine parameters and
statistics); PFLlib's clients still upload the BN parameters, which its server averages and every client then
ignores, so this file does not send them (bytes up and down count the non-BN parameters only). On a model
without BN layers (``cnn``, ``mlp``) FedBN is FedAvg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fedloom.algorithms.base import ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult
from fedloom.algorithms.base import ServerState
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_select, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.models.cnn_bn import is_batch_norm

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


def is_shared(name: str) -> bool:
    return not is_batch_norm(name)


@ALGORITHMS.register("fedbn")
@dataclass(frozen=True)
class FedBN(Algorithm):
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        shared = tree_clone(tree_select(init_params, is_shared))
        return ServerResult(state=ServerState(params=shared), broadcast=Broadcast(params=shared))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"bn": tree_clone(tree_select(init_params, is_batch_norm))}  # identical initial BN everywhere

    def local_model(self, broadcast: Broadcast, state: Tree) -> Params:
        return {**broadcast.params, **state["bn"]}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        trained, metrics = ctx.local_sgd(self.local_model(broadcast, state))
        upload = tree_sub(tree_select(trained, is_shared), broadcast.params)
        return ClientResult(upload=upload, state={"bn": tree_select(trained, is_batch_norm)},
                            weight=ctx.num_train_samples, metrics=metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean_delta = uploads.weighted_mean()
        params = server.params if mean_delta is None else tree_add(server.params, mean_delta)
        state = server.replace(params=params, round=server.round + 1)
        return ServerResult(state=state, broadcast=Broadcast(params=params))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return self.local_model(broadcast, state)
