"""MOON (Li, He, Song, "Model-Contrastive Federated Learning", CVPR 2021).

Client i keeps its previous local model w_prev (the initial model before its first round). From the received θ
it trains w on
    CE(w(x), y) + μ ℓ_con,   ℓ_con = −log[ e^{cos(z, z_glob)/τ} / (e^{cos(z, z_glob)/τ} + e^{cos(z, z_prev)/τ}) ]
where z = φ_w(x), z_glob = φ_θ(x), z_prev = φ_{w_prev}(x) are representations of the same sample: the
model body's output (``part="body"``, flattened), as in PFLlib, without the paper's extra projection head;
z_glob and z_prev are constants. θ is shared (captured), w_prev is per client (``aux``). Afterwards
w_prev ← w; the upload is w − θ and the server is FedAvg.

Defaults μ = 1, τ = 0.5 (the paper's CIFAR-100 values; PFLlib's argparse μ = 0 would be FedAvg).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_select, tree_sub
from fedloom.config import hp
from fedloom.models.base import is_body

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


def contrastive_loss(z: torch.Tensor, z_glob: torch.Tensor, z_prev: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-sample ℓ_con: cross-entropy of the positive pair (z, z_glob) against the negative (z, z_prev)."""
    z, z_glob, z_prev = z.flatten(1), z_glob.flatten(1), z_prev.flatten(1)
    logits = torch.stack([F.cosine_similarity(z, z_glob, dim=1), F.cosine_similarity(z, z_prev, dim=1)], 1) / tau
    return -torch.log_softmax(logits, dim=1)[:, 0]


@ALGORITHMS.register("moon")
@dataclass(frozen=True)
class Moon(FedAvg):
    mu: float = hp(1.0, ge=0, help="μ, weight of the model-contrastive term (0: FedAvg)")
    tau: float = hp(0.5, gt=0, help="τ, temperature of the contrastive softmax")

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"previous": tree_clone(tree_select(dict(init_params), is_body))}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        aux = {"previous": state["previous"]}
        trained, metrics = ctx.local_sgd(broadcast.params, batch_loss=self.contrastive_hook(ctx, broadcast),
                                         aux=aux)
        return ClientResult(upload=tree_sub(trained, broadcast.params),
                            state={"previous": tree_select(trained, is_body)},
                            weight=ctx.num_train_samples, metrics=metrics)

    def contrastive_hook(self, ctx: ClientContext, broadcast: Broadcast) -> Callable[..., torch.Tensor]:
        global_body = tree_select(broadcast.params, is_body)  # shared: a closure is allowed
        mu, tau = self.mu, self.tau

        def loss(params: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            z = ctx.apply(tree_select(params, is_body), x, part="body")
            logits = ctx.apply(tree_select(params, lambda n: not is_body(n)), z, part="head")
            with torch.no_grad():
                z_glob = ctx.apply(global_body, x, part="body")
                z_prev = ctx.apply(aux["previous"], x, part="body")
            return ctx.task_loss(logits, y) + mu * contrastive_loss(z, z_glob, z_prev, tau)

        return loss
