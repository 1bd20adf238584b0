"""FedProto (Y. Tan, G. Long, L. Liu, T. Zhou, Q. Lu, J. Jiang, C. Zhang, "FedProto: Federated Prototype Learning
across Heterogeneous Clients", AAAI 2022, arXiv 2105.00243); HtFLlib ``serverproto``/``clientproto``.

Clients of any architecture (only the feature width D must be common) exchange class prototypes, the mean
feature φ(x) of each class, instead of parameters:

* client: its own model trained with CE(h(φ(x)), y) + λ·MSE(φ(x), P̄_y) (P̄: the global prototypes; a class
  without one adds nothing), then one pass over its training data for its prototypes, uploaded as the rows of
  the classes it holds (k×D floats and k class ids, HtFLlib's class-keyed dict);
* server: P̄_c = the unweighted mean of the uploaded prototypes of class c over the clients that hold it (the
  official code's mean; the paper weighs by sample counts), sent to every client;
* inference: the nearest global prototype (argmin_c MSE(φ(x), P̄_c)), not the head; before the first global
  prototypes exist (the evaluation before round 1) the head (HtFLlib scores 0 there).

λ defaults to 1 (the paper's and HtFLlib's argparse default); HtFLlib's ``total.sh`` runs ``-lam 10``.
``pfllib_compat``: PFLlib's and HtFLlib's ``clientproto`` do not make the separate pass: they upload the mean
feature of each class over every batch of local training, taken before that batch's step (``agg_func`` of the
features ``train`` collected), so early-round prototypes mix in features of a model still being trained. The
default follows the paper (prototypes of the trained model); the switch reproduces the official code
(docs/results/pfllib-parity.md).

Vectorizable: a pack trains its clients in lockstep, runs the prototype pass with ``ctx.class_sums`` (or, with
``pfllib_compat``, collects the prototypes through ``ctx.local_sgd_carry``) and builds each client's upload with
``ctx.each_client``; the nearest-prototype Predictor is assembled client by client for evaluation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from fedloom.algorithms import _htfl as H
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, Predictor,
                                     ServerResult, ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fedproto")
@dataclass(frozen=True)
class FedProto(Algorithm):
    shared_architecture = False  # prototypes, not parameters: any architecture with the common feature width
    needs_common_feature_dim = True  # prototypes of width D are averaged across clients

    lam: float = hp(1.0, ge=0, help="weight λ of the prototype regularizer MSE(φ(x), P̄_y)")
    pfllib_compat: bool = hp(False, help="prototypes as PFLlib/HtFLlib's clientproto: the mean feature of each class "
                                         "over every training batch, taken before that batch's step, instead of one "
                                         "pass with the trained model")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        return ServerResult(state=ServerState(params={}), broadcast=Broadcast(params={}))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"params": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        table, present = H.global_table(broadcast)
        if self.pfllib_compat:
            trained, protos, held, metrics = self.collected_during_training(ctx, state["params"], table, present)
        else:
            trained, metrics = ctx.local_sgd(state["params"],
                                             batch_loss=H.proto_batch_loss(ctx.apply, table, present, self.lam))
            protos, held = H.class_means(ctx, trained, functools.partial(H.body, ctx.apply), H.num_classes(ctx))
        return ClientResult(upload=H.rows_upload(ctx, protos, held), state={"params": trained}, weight=1.0,
                            metrics=metrics)

    def collected_during_training(self, ctx: ClientContext, params: Params, table: Optional[torch.Tensor],
                                  present: Optional[torch.Tensor]) -> tuple:
        """PFLlib's prototypes: the running per-class feature sums of local training's own batches."""
        classes, width = H.num_classes(ctx), int(ctx.runtime.model.feature_dim)
        device = ctx.runtime.device
        carry = {"sum": torch.zeros(classes, width, dtype=torch.float64, device=device),
                 "count": torch.zeros(classes, dtype=torch.long, device=device)}
        trained, collected, metrics = ctx.local_sgd_carry(
            params, carry, H.proto_collecting_loss(ctx.apply, table, present, self.lam))
        sums, counts = collected["sum"], collected["count"]
        held = counts > 0
        return trained, (sums / counts.clamp(min=1).unsqueeze(-1)).float(), held, metrics

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        state = server.replace(round=server.round + 1)
        mean = H.per_class_mean(uploads)
        if mean is None:  # nobody uploaded: keep the last prototypes
            return ServerResult(state=state, broadcast=H.table_broadcast(*self.kept(server)))
        state.extra = {"table": mean[0], "present": mean[1].float()}
        return ServerResult(state=state, broadcast=H.table_broadcast(*mean))

    @staticmethod
    def kept(server: ServerState) -> tuple:
        if "table" not in server.extra:
            return None, None
        return server.extra["table"], server.extra["present"] > 0

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Predictor:
        params = state["params"] if state is not None else ctx.init_params  # never trained yet
        return Predictor({"params": params, **broadcast.extra}, H.nearest_prototype)
