"""FedNTD (Lee, Jeong, Shin, Yun, "Preservation of the Global Knowledge by Not-True Distillation in Federated
Learning", NeurIPS 2022).

Client i trains from the global model θ on
    CE(z, y) + β·τ²·KL(q̃_θ ‖ q̃_w),   q̃ = softmax over the C − 1 *not-true* classes of the logits / τ,
where z = w(x) are the local logits and the global model's logits θ(x) are a constant teacher. Dropping the
true class from both distributions keeps the global model's knowledge of the other classes without holding
back learning of the true one. The KL is summed over classes and averaged over the batch (the official code's
``KLDivLoss(reduction="batchmean")``). Upload w_i − θ; server: FedAvg.

The true class is removed by masking its logit to −∞ in both softmaxes rather than by gathering the other
C − 1 columns: the same distribution, with fixed shapes that a vectorized pack can batch.
Defaults β = 1, τ = 1 (the paper's and the official code's; PFLlib reads both from its command line).
``pfllib_compat = True``: PFLlib's server averages the uploads unweighted (its ``add_parameters`` divides every
client's model by the number of joined clients, ignoring the sample weight); the default weights by training
samples, as FedAvg and the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F

from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree, tree_sub
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


def not_true_kl(local: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-sample KL(teacher ‖ local) over the not-true classes at temperature τ."""
    true = y.unsqueeze(-1) == torch.arange(local.shape[-1], device=y.device)  # one_hot does not vmap
    log_p = F.log_softmax((local / tau).masked_fill(true, float("-inf")), dim=-1)
    log_q = F.log_softmax((teacher / tau).masked_fill(true, float("-inf")), dim=-1)
    terms = log_q.exp() * (log_q - log_p)  # NaN (0·(−∞ + ∞)) at the true class only, dropped just below
    return torch.where(true, torch.zeros_like(terms), terms).sum(-1)


@ALGORITHMS.register("fedntd")
@dataclass(frozen=True)
class FedNTD(FedAvg):
    beta: float = hp(1.0, ge=0, help="β, weight of the not-true distillation term (0: FedAvg)")
    tau: float = hp(1.0, gt=0, help="τ, distillation temperature")
    pfllib_compat: bool = hp(False, help="the server's mean unweighted (PFLlib's add_parameters) instead of by samples")

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Tree) -> ClientResult:
        trained, metrics = ctx.local_sgd(broadcast.params, batch_loss=self.ntd_loss(ctx, broadcast))
        return ClientResult(upload=tree_sub(trained, broadcast.params), state=state,
                            weight=1.0 if self.pfllib_compat else ctx.num_train_samples, metrics=metrics)

    def ntd_loss(self, ctx: ClientContext, broadcast: Broadcast) -> Callable[..., torch.Tensor]:
        teacher_params = broadcast.params  # shared by every client: a closure is allowed
        beta, tau = self.beta, self.tau

        def loss(params: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            logits = ctx.apply(params, x)
            with torch.no_grad():
                teacher = ctx.apply(teacher_params, x)
            return ctx.task_loss(logits, y) + beta * tau ** 2 * not_true_kl(logits, teacher, y, tau)

        return loss
