"""FedRoD (Chen, Chao, "On Bridging Generic and Personalized Federated Learning for Image Classification",
ICLR 2022), linear-head variant (as PFLlib; no hypernetwork).

Modules: shared body φ, shared generic head h_g, local personalized head h_p (starts as the initial head).
Each batch of client i, in one step from the same forward pass (as PFLlib):
    φ, h_g ← SGD on the balanced-softmax loss  CE(h_g(φ(x)) + log n_i, y),  n_i = the client's class counts
    h_p    ← SGD on  CE(h_g(φ(x)).detach() + h_p(φ(x).detach()), y)
Upload (φ, h_g) − θ; server: FedAvg. Scored with logits h_g(φ(x)) + h_p(φ(x)) right after the download; for
a linear head that is the model with head parameters h_g + h_p, which is what eval_params returns (so FedRoD
needs a model whose head is one Linear layer, as all built-in models are). Classes a client never saw get
log 0 = −inf, i.e. drop out of its balanced softmax (as in PFLlib). No PFLlib deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

from fedloom.algorithms._naming import model_part, tagged, untagged
from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_select, tree_sub
from fedloom.errors import ConfigError
from fedloom.models.base import is_body, is_head

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

PERSONAL_HEAD = "phead"
LINEAR_HEAD = {"head.weight", "head.bias"}


@ALGORITHMS.register("fedrod")
@dataclass(frozen=True)
class FedRoD(FedAvg):
    def validate_for_model(self, init_params: Params) -> None:
        head = set(tree_select(init_params, is_head))
        if head != LINEAR_HEAD:
            raise ConfigError(f"fedrod needs a model whose head is a single Linear layer (head.weight, head.bias); "
                              f"this model's head has {', '.join(sorted(head)) or 'no parameters'}")

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"head": tree_clone(tree_select(init_params, is_head))}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        start = {**broadcast.params, **tagged(PERSONAL_HEAD, state["head"])}
        aux = {"log_prior": ctx.train_label_counts().log()}
        trained, metrics = ctx.local_sgd(start, batch_loss=self.two_head_loss(ctx), aux=aux)
        shared = model_part(trained)
        return ClientResult(upload=tree_sub(shared, broadcast.params),
                            state={"head": untagged(PERSONAL_HEAD, trained)},
                            weight=ctx.num_train_samples, metrics=metrics)

    @staticmethod
    def two_head_loss(ctx: ClientContext):
        def loss(params: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            shared = model_part(params)
            features = ctx.apply(tree_select(shared, is_body), x, part="body")
            generic = ctx.apply(tree_select(shared, is_head), features, part="head")
            balanced = ctx.task_loss(generic + aux["log_prior"], y)
            personal = ctx.apply(untagged(PERSONAL_HEAD, params), features.detach(), part="head")
            return balanced + ctx.task_loss(generic.detach() + personal, y)
        return loss

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        head = state["head"]
        if set(head) != LINEAR_HEAD:
            raise ConfigError("fedrod needs a model whose head is a single Linear layer (head.weight, head.bias)")
        generic = tree_select(broadcast.params, is_head)
        return {**broadcast.params, **tree_add(generic, head)}
