"""FedGH (L. Yi, G. Wang, X. Liu, Z. Shi, H. Yu, "FedGH: Heterogeneous Federated Learning with Generalized
Global Header", ACM MM 2023, arXiv 2303.13137); HtFLlib ``serverGH``/``clientGH``.

Clients of any body architecture share one head shape (Linear(D, C)):

* client: its model, with the head overwritten by the global head received, trained with CE; then one pass
  over its training data for its class prototypes (mean φ(x) per class), uploaded as the held classes' rows;
* server: the global head, initialised from client 0's head, is trained on every uploaded (prototype, class)
  pair with CE for ``server_epochs`` passes of SGD (``server_lr``, batches of ``server_batch_size`` shuffled from
  the round's server stream) and sent to every client, which overwrites its own head with it;
* inference: the client's body with the latest global head (HtFLlib evaluates right after the download).

Defaults: HtFLlib's tuned ``-slr 0.01 -se 1``; batch 10 (its clients' batch size).
Vectorizable: training, the prototype pass (``ctx.class_sums``) and the per-client uploads (``ctx.each_client``)
run packed, the global head shared by the pack.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _htfl as H
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_select
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.models.base import is_body, is_head
from fedloom.seeding import torch_generator

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

LINEAR_HEAD = {"head.weight", "head.bias"}


@ALGORITHMS.register("fedgh")
@dataclass(frozen=True)
class FedGH(Algorithm):
    aggregation = "all"  # the server trains on every uploaded (prototype, class) pair
    shared_architecture = False
    needs_common_feature_dim = True  # prototypes train one Linear(D, C) head
    needs_homogeneous_head: ClassVar[bool] = True

    server_epochs: int = hp(1, ge=0, help="passes of head training over the uploaded prototypes per round")
    server_lr: float = hp(0.01, gt=0, help="SGD learning rate of the global head")
    server_batch_size: int = hp(10, ge=1, help="prototypes per server step")

    def validate_for_model(self, init_params: Params) -> None:
        heads = set(tree_select(init_params, is_head))
        if heads != LINEAR_HEAD:
            raise ConfigError(f"fedgh trains a Linear(D, C) global head on the server; this model's head has "
                              f"tensors {sorted(heads)}")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        head = tree_clone(tree_select(init_params, is_head))  # client 0's head (HtFLlib)
        seed = torch.tensor(getattr(init_params, "seed", 0), dtype=torch.int64)
        return ServerResult(state=ServerState(params=head, extra={"seed": seed}), broadcast=Broadcast(params=head))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"params": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        start = {**state["params"], **broadcast.params}  # the global head overwrites the client's
        trained, metrics = ctx.local_sgd(start)
        protos, held = H.class_means(ctx, trained, functools.partial(H.body, ctx.apply), H.num_classes(ctx))
        return ClientResult(upload=H.rows_upload(ctx, protos, held), state={"params": trained}, weight=1.0,
                            metrics=metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        state = server.replace(round=server.round + 1)
        if uploads.count == 0:
            return ServerResult(state=state, broadcast=Broadcast(params=server.params))
        protos, labels = H.uploaded_pairs(uploads)
        generator = torch_generator(int(server.extra["seed"]), state.round, -1, "fedgh-server")
        head, loss = train_head(server.params, protos, labels, self.server_epochs, self.server_lr,
                                self.server_batch_size, generator)
        state.params = head
        return ServerResult(state=state, broadcast=Broadcast(params=head), metrics={"head_loss": loss})

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        own = state["params"] if state is not None else ctx.init_params
        return {**tree_select(own, is_body), **broadcast.params}


def train_head(head: Params, protos: torch.Tensor, labels: torch.Tensor, epochs: int, lr: float,
               batch_size: int, generator: torch.Generator) -> tuple[Params, float]:
    """SGD on CE(W·P + b, y) over shuffled batches of (prototype, class) pairs; the mean loss of the last pass."""
    work = {k: v.detach().clone().to(protos.device).requires_grad_(True) for k, v in head.items()}
    last = float("nan")
    for _ in range(epochs):
        losses = []
        for batch in torch.randperm(protos.shape[0], generator=generator).to(protos.device).split(batch_size):
            loss = F.cross_entropy(F.linear(protos[batch], work["head.weight"], work["head.bias"]), labels[batch])
            grads = torch.autograd.grad(loss, [work["head.weight"], work["head.bias"]])
            with torch.no_grad():
                work["head.weight"] -= lr * grads[0]
                work["head.bias"] -= lr * grads[1]
            losses.append(float(loss.detach()))
        last = sum(losses) / len(losses)
    return {k: v.detach() for k, v in work.items()}, last
