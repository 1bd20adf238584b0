"""pFedMe (T. Dinh, Tran, Nguyen, "Personalized Federated Learning with Moreau Envelopes", NeurIPS 2020).

Client i, from the received global θ: local model w ← θ and personalized model θ_i ← θ. For each batch D:
    K times:  θ_i ← θ_i − η_p (∇f(θ_i; D) + λ(θ_i − w))      (approximate the prox / Moreau-envelope problem)
    then:     w   ← w − η λ (w − θ_i)                        (a step on the envelope, η = the run's lr)
Upload w − θ. Server: w̄ = FedAvg(w_i), θ ← (1 − β) θ + β w̄. Clients are scored with their personalized θ_i
(the paper's personalized model), as left by their last local round.

Defaults: λ (``lamda``) = 15, η_p (``personal_lr``) = 0.01, K = 5, β = 1: the paper's MNIST setting and what
PFLlib's author recommends (``-lrp 0.01 -lam 15``, β 1–3); PFLlib's argparse β = 0 would freeze the global
model. ``pfllib_compat = True`` reproduces two PFLlib deviations: (1) its inner optimizer adds a weight decay
μ θ_i with μ = 0.001; (2) its ``personalized_params`` list aliases the model's own parameters, so what it
scores as personalized is in fact the downloaded global model — compat mode scores the broadcast θ.

``evaluate`` picks the scored model outside compat mode, for studying the evaluation point without touching
training (the trajectory, uploads and metrics other than accuracy are identical): ``personal`` (default, the
paper's and official code's θ_i after the last batch's K inner steps), ``local`` (w_i: the envelope steps make
it an exponential average of the θ_i over the epoch, rate ηλ per batch) or ``global`` (the broadcast θ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

from fedloom.algorithms._naming import is_model_name, model_part, tagged, untagged
from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult, ServerResult, ServerState
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import (Params, Tree, tree_add, tree_clone, tree_scale, tree_sq_dist, tree_sq_norm,
                                     tree_sub)
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

LOCAL = "local"  # tag of the local model w inside the trained dict; the untagged entries are θ_i
PFLLIB_INNER_WEIGHT_DECAY = 0.001
SCORED_MODELS = ("personal", "local", "global")


@ALGORITHMS.register("pfedme")
@dataclass(frozen=True)
class PFedMe(FedAvg):
    # K steps per batch and the closed-form w update use local_sgd options the vectorized pack lacks yet
    vectorizable = False
    lamda: float = hp(15.0, ge=0, help="λ, weight of the Moreau-envelope term")
    personal_lr: float = hp(0.01, gt=0, help="η_p, learning rate of the K inner steps")
    K: int = hp(5, ge=1, help="inner steps per batch")
    beta: float = hp(1.0, gt=0, help="β, the server's step toward the clients' average")
    pfllib_compat: bool = False
    evaluate: str = hp("personal", choices=SCORED_MODELS, help="the scored model: personal θ_i, local w_i, global θ")

    def validate(self) -> None:
        super().validate()
        if self.pfllib_compat and self.evaluate != "personal":
            raise ConfigError("pfedme.pfllib_compat fixes the scored model (PFLlib's alias scores the global one); "
                              "leave pfedme.evaluate at 'personal'")

    @property
    def kept_models(self) -> tuple[str, ...]:
        """What the client-state store holds per client: θ_i, plus w_i only when w_i is the scored model."""
        return ("personal", "local") if self.evaluate == "local" else ("personal",)

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {name: tree_clone(init_params) for name in self.kept_models}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        start = {**broadcast.params, **tagged(LOCAL, broadcast.params)}
        trained, metrics = ctx.local_sgd(start, lr=self.personal_lr, steps_per_batch=self.K,
                                         trainable=is_model_name, batch_loss=self.task_loss_of(ctx),
                                         extra_loss=self.inner_penalty, after_batch=self.envelope_step(ctx))
        models = {"personal": model_part(trained), "local": untagged(LOCAL, trained)}
        return ClientResult(upload=tree_sub(models["local"], broadcast.params),
                            state={name: models[name] for name in self.kept_models},
                            weight=ctx.num_train_samples, metrics=metrics)

    @staticmethod
    def task_loss_of(ctx: ClientContext):
        return lambda params, x, y, aux: ctx.task_loss(ctx.apply(model_part(params), x), y)

    def inner_penalty(self, params: Params, aux: Any) -> torch.Tensor:
        """λ/2‖θ_i − w‖² (+ μ/2‖θ_i‖² in compat mode); w is frozen during the K steps (not trainable)."""
        theta = model_part(params)
        penalty = 0.5 * self.lamda * tree_sq_dist(theta, untagged(LOCAL, params))
        if self.pfllib_compat:
            penalty = penalty + 0.5 * PFLLIB_INNER_WEIGHT_DECAY * tree_sq_norm(theta)
        return penalty

    def envelope_step(self, ctx: ClientContext):
        rate = ctx.sgd.lr * self.lamda  # a float shared by every client

        def step(params: Params, aux: Any) -> Params:
            local, theta = untagged(LOCAL, params), model_part(params)
            return tagged(LOCAL, {name: w - rate * (w - theta[name]) for name, w in local.items()})

        return step

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean_delta = uploads.weighted_mean()  # w̄ − θ
        params = server.params if mean_delta is None else tree_add(server.params, tree_scale(mean_delta, self.beta))
        state = server.replace(params=params, round=server.round + 1)
        return ServerResult(state=state, broadcast=Broadcast(params=params))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        if self.pfllib_compat or self.evaluate == "global":
            return broadcast.params
        return state[self.evaluate]
