"""APFL (Deng, Kamani, Mahdavi, "Adaptive Personalized Federated Learning", arXiv 2003.13461, 2020).

Client i keeps a personal model v_i and a mixing weight α_i ∈ [0, 1]. From the received θ (w ← θ), each batch
takes one simultaneous step, with v̄ = α v + (1 − α) w:
    w ← w − η ∇f(w)                          (the global copy trains on its own loss)
    v ← v − η ∇_v f(v̄) = v − η α ∇f(v̄)      (the personal model trains through the mixture)
    α ← Π_[0,1](α − η ⟨v − w, ∇f(v̄)⟩)        (α follows the mixture's loss, projected back onto [0, 1])
Upload w − θ; server: FedAvg. The client is scored with its mixture α_i v_i + (1 − α_i) θ, θ the model just
received (the paper's personalized model at synchronisation).

Default ``alpha`` (initial α) = 1.0, PFLlib's ``-al``. ``pfllib_compat = True`` reproduces PFLlib's client:
v trains on its own loss f(v); α's gradient is ⟨v' − w', α∇f(v) + (1 − α)∇f(w)⟩ + 0.02 α with v', w' the
stepped models; after the round v ← α v + (1 − α) w, and the client is scored with that v.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

from fedloom.algorithms._naming import model_part, tag_name, tagged, untagged
from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_sub
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

PERSONAL = "personal"
ALPHA = tag_name("apfl", "alpha")
PFLLIB_ALPHA_DECAY = 0.02


def mix(alpha: torch.Tensor, personal: Params, other: Params) -> Params:
    return {name: alpha * v + (1 - alpha) * other[name] for name, v in personal.items()}


@ALGORITHMS.register("apfl")
@dataclass(frozen=True)
class APFL(FedAvg):
    # the projection of α uses local_sgd's after_batch, which the vectorized pack does not take yet
    vectorizable = False
    alpha: float = hp(1.0, ge=0, le=1, help="initial mixing weight α")
    pfllib_compat: bool = False

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"personal": tree_clone(init_params), "alpha": torch.tensor(float(self.alpha))}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        start = {**broadcast.params, **tagged(PERSONAL, state["personal"]), ALPHA: state["alpha"]}
        hooks = self.compat_hooks(ctx) if self.pfllib_compat else {"batch_loss": self.paper_loss(ctx)}
        trained, metrics = ctx.local_sgd(start, after_batch=project_alpha, **hooks)
        global_copy, personal, alpha = model_part(trained), untagged(PERSONAL, trained), trained[ALPHA]
        if self.pfllib_compat:
            personal = mix(alpha, personal, global_copy)
        metrics = {**metrics, "alpha": float(alpha)}
        return ClientResult(upload=tree_sub(global_copy, broadcast.params),
                            state={"personal": personal, "alpha": alpha},
                            weight=ctx.num_train_samples, metrics=metrics)

    @staticmethod
    def paper_loss(ctx: ClientContext):
        def loss(params: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            w = model_part(params)
            frozen_w = {name: value.detach() for name, value in w.items()}  # v̄'s w-part must not train w
            mixed = mix(params[ALPHA], untagged(PERSONAL, params), frozen_w)
            return ctx.task_loss(ctx.apply(w, x), y) + ctx.task_loss(ctx.apply(mixed, x), y)
        return loss

    @staticmethod
    def compat_hooks(ctx: ClientContext) -> dict:
        lr = ctx.sgd.lr  # shared by all clients

        def loss(params: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            own = ctx.task_loss(ctx.apply(model_part(params), x), y)
            own = own + ctx.task_loss(ctx.apply(untagged(PERSONAL, params), x), y)
            return own + 0.0 * params[ALPHA]  # α enters only through grad_correction below

        def alpha_gradient(params: Params, grads: Params, aux: Any) -> Params:
            alpha = params[ALPHA].detach()
            g_w, g_v = model_part(grads), untagged(PERSONAL, grads)
            w, v = model_part(params), untagged(PERSONAL, params)
            inner = sum(((v[n] - lr * g_v[n]) - (w[n] - lr * g_w[n])).mul(alpha * g_v[n] + (1 - alpha) * g_w[n]).sum()
                        for n in w)
            return {**grads, ALPHA: inner.detach() + PFLLIB_ALPHA_DECAY * alpha}

        return {"batch_loss": loss, "grad_correction": alpha_gradient}

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        if self.pfllib_compat:
            return state["personal"]
        return mix(state["alpha"], state["personal"], broadcast.params)


def project_alpha(params: Params, aux: Any) -> Params:
    return {ALPHA: params[ALPHA].clamp(0.0, 1.0)}
