"""FD, federated distillation (E. Jeong, S. Oh, H. Kim, J. Park, M. Bennis, S.-L. Kim, "Communication-Efficient
On-Device Machine Learning: Federated Distillation and Augmentation under Non-IID Private Data", NeurIPS-W 2018,
arXiv 1811.11479); HtFLlib/PFLlib ``FD`` (``serverdistill``/``clientdistill``).

Clients of any architecture exchange per-class mean logits (C×C floats at most):

* client: its own model trained with CE(z, y) + λ·CE(z, t_y), where z = its logits and t_y the soft target of
  the sample's class from the global mean logits ḡ_y; then one pass over its training data for its per-class
  mean logits, uploaded as the rows of the classes it holds (and their ids);
* server: ḡ_c = the unweighted mean over the clients holding class c, sent to every client;
* inference: the client's own model.

Soft targets (``target``): ``softmax`` (default, the paper's distillation of the global average logits):
t_y = softmax(ḡ_y / T), a class without a global logit adds nothing; ``raw`` (HtFLlib/PFLlib): the averaged raw
logits are passed to ``CrossEntropyLoss`` as if they were probabilities, −Σ_c ḡ_yc·log softmax(z)_c, and a
sample of a class without a global logit takes its own detached logits as the target (the library's quirk).
HtFLlib collects the logits batch by batch during training; fedloom takes them in a pass after training (the
same model the prototypes methods use), which differs by the drift within one local epoch. λ = 1 (``-lam 1``).
Vectorizable: training, the logits pass (``ctx.class_sums``) and the per-client uploads (``ctx.each_client``)
run packed; inference is the client's own model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _htfl as H
from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.fedproto import FedProto
from fedloom.algorithms.tree import Params, Tree
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fd")
@dataclass(frozen=True)
class FD(FedProto):
    needs_common_feature_dim = False  # logits (C wide) are exchanged, not features

    lam: float = hp(1.0, ge=0, help="weight λ of the distillation term")
    target: str = hp("softmax", choices=("softmax", "raw"),
                     help="soft targets: softmax(ḡ_y/T) (paper) or HtFLlib's raw averaged logits")
    temperature: float = hp(1.0, gt=0, help="T of the softmax targets (target=softmax)")

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        table, present = H.global_table(broadcast)
        trained, metrics = ctx.local_sgd(state["params"], batch_loss=self.loss(ctx.apply, table, present))
        logits, held = H.class_means(ctx, trained, ctx.apply, H.num_classes(ctx))
        return ClientResult(upload=H.rows_upload(ctx, logits, held), state={"params": trained}, weight=1.0,
                            metrics=metrics)

    def loss(self, apply: Any, table: Optional[torch.Tensor],
             present: Optional[torch.Tensor]) -> Callable[..., torch.Tensor]:
        def batch_loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            z = apply(w, x)
            ce = F.cross_entropy(z, y, reduction="none")
            if table is None or self.lam == 0:
                return ce
            return ce + self.lam * distill_term(z, y, table, present, self.target, self.temperature)

        return batch_loss

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["params"] if state is not None else ctx.init_params


def distill_term(z: torch.Tensor, y: torch.Tensor, table: torch.Tensor, present: torch.Tensor, target: str,
                 temperature: float) -> torch.Tensor:
    """Per-sample −Σ_c t_c·log softmax(z)_c with t from the global logits of each sample's class."""
    held = present[y].unsqueeze(1)
    log_p = F.log_softmax(z, dim=1)
    if target == "raw":  # HtFLlib: raw logits as the target; absent classes: the sample's own logits
        t = torch.where(held, table[y], z.detach())
        return -(t * log_p).sum(1)
    t = F.softmax(table[y] / temperature, dim=1)
    return -(t * F.log_softmax(z / temperature, dim=1)).sum(1) * held.squeeze(1).float()
