"""FedPHP (Li, Zhan, Shao, Xu, Han, Zhu, "FedPHP: Federated Personalization with Inherited Private Models",
ECML-PKDD 2021).

Client i keeps a historical private model (HPM) w_p, frozen while it trains. From the received θ (w ← θ):
    loss = (1 − λ) CE(w(x), y) + λ MMD²_rbf(φ_w(x), φ_{w_p}(x))     (features of the body; w_p is not trained)
with the multi-bandwidth RBF kernel Σ_{a ∈ {10, 15, 20, 50}} exp(−‖u − v‖² / (2a)) (PFLlib's). After E epochs
the HPM inherits the new model:  w_p ← μ_t w_p + (1 − μ_t) w,  μ_t = μ (t − 1) / R  (round t of R, so the HPM
starts as a copy and averages over more history as training goes on). Upload w − θ; server: FedAvg.

Scoring, after local training as the paper: the official code scores the HPM (default); PFLlib scores the
locally trained model w instead (``pfllib_compat = True``). Defaults μ = 0.9 and λ = 0.01 (PFLlib's author's
recommended ``-mu 0.9 -lam 1e-2``; argparse λ = 1 would drop CE altogether). μ_t follows PFLlib's round-based
schedule; the official code counts the client's own participations instead (the same under full
participation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_scale, tree_select, tree_sub
from fedloom.config import hp
from fedloom.models.base import is_body

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

BANDWIDTHS = (10.0, 15.0, 20.0, 50.0)


def mmd_rbf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Biased MMD² estimate between two feature batches with the sum of RBF kernels above."""
    a, b = a.flatten(1), b.flatten(1)
    joint = torch.cat([a, b])
    norms = joint.pow(2).sum(1)
    # expanded squared distances (not cdist): differentiable where two feature vectors coincide
    sq = (norms[:, None] + norms[None, :] - 2 * joint @ joint.T).clamp_min(0)
    kernel = sum(torch.exp(-0.5 * sq / bandwidth) for bandwidth in BANDWIDTHS)
    n = a.shape[0]
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


@ALGORITHMS.register("fedphp")
@dataclass(frozen=True)
class FedPHP(FedAvg):
    mu: float = hp(0.9, ge=0, le=1, help="μ, the HPM's inheritance rate")
    lamda: float = hp(0.01, ge=0, le=1, help="λ, weight of the MMD term")
    pfllib_compat: bool = False

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"hpm": tree_clone(init_params), "local": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        aux = {"hpm_body": tree_select(state["hpm"], is_body)}
        trained, metrics = ctx.local_sgd(broadcast.params, batch_loss=self.inherit_loss(ctx), aux=aux)
        inherit = self.mu * (ctx.round - 1) / ctx.total_rounds
        hpm = tree_add(tree_scale(state["hpm"], inherit), tree_scale(trained, 1.0 - inherit))
        return ClientResult(upload=tree_sub(trained, broadcast.params), state={"hpm": hpm, "local": trained},
                            weight=ctx.num_train_samples, metrics=metrics)

    def inherit_loss(self, ctx: ClientContext):
        lamda = self.lamda

        def loss(params: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            features = ctx.apply(tree_select(params, is_body), x, part="body")
            logits = ctx.apply(tree_select(params, lambda n: not is_body(n)), features, part="head")
            with torch.no_grad():
                hpm_features = ctx.apply(aux["hpm_body"], x, part="body")
            # MMD is a batch quantity: adding it to every sample keeps the batch mean right
            return (1 - lamda) * ctx.task_loss(logits, y) + lamda * mmd_rbf(features, hpm_features)

        return loss

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["local"] if self.pfllib_compat else state["hpm"]
