"""Per-FedAvg (Fallah, Mokhtari, Ozdaglar, "Personalized Federated Learning with Theoretical Guarantees: A
Model-Agnostic Meta-Learning Approach", NeurIPS 2020), first-order version (Per-FedAvg (FO)).

Client, from the global θ, each step draws a batch of 2B samples, splits it into D (first B) and D' (rest):
    w' = w − α ∇f(w; D)              (inner step, its gradient treated as a constant: first order)
    w  ← w − β ∇f(w'; D')            (outer step, applied at w)
Upload w_i − θ; server: FedAvg. Evaluation (the personalized model): from the received θ, one SGD step of
size α on one batch of B local samples (PFLlib ``train_one_step``), scored right after the download.

Defaults: ``alpha`` = ``beta`` = the run's lr (None). PFLlib sets β = α = lr as well (its ``-bt`` is ignored).
PFLlib deviation: its server calls ``client.train()`` twice per round, so each client makes two passes;
``pfllib_compat = True`` does the same (the paper makes one). A trailing batch smaller than 2B (PFLlib drops
it) is split in two halves here; a single leftover sample is used for both steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch.func import grad

from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree, tree_sub
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("per-fedavg")
@dataclass(frozen=True)
class PerFedAvg(FedAvg):
    # trains with a 2B batch size, an option the vectorized pack context does not take yet
    vectorizable = False
    alpha: Optional[float] = hp(None, gt=0, help="inner (adaptation) step size α (None: the run's --lr)")
    beta: Optional[float] = hp(None, gt=0, help="outer step size β (None: the run's --lr)")
    pfllib_compat: bool = False

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        meta_loss = self.meta_loss(ctx)
        passes = 2 if self.pfllib_compat else 1
        params, metrics = broadcast.params, {}
        for index in range(passes):
            params, metrics = ctx.local_sgd(params, lr=self.beta, batch_size=2 * ctx.sgd.batch_size,
                                            batch_loss=meta_loss, purpose=f"train-{index}" if index else "train")
        return ClientResult(upload=tree_sub(params, broadcast.params), state=state,
                            weight=ctx.num_train_samples, metrics=metrics)

    def meta_loss(self, ctx: ClientContext):
        """Per-sample loss on D' at w' = w − α·stopgrad(∇f(w; D)): its gradient in w is ∇f(w'; D')."""
        inner_lr = ctx.sgd.lr if self.alpha is None else self.alpha
        half = ctx.sgd.batch_size

        def mean_loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return ctx.task_loss(ctx.apply(params, x), y).mean()

        def loss(params: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            split = min(half, max(1, x.shape[0] // 2))
            x_inner, y_inner = x[:split], y[:split]
            x_outer, y_outer = (x[split:], y[split:]) if x.shape[0] > split else (x_inner, y_inner)
            detached = {name: value.detach() for name, value in params.items()}
            inner_grad = grad(mean_loss)(detached, x_inner, y_inner)
            adapted = {name: value - inner_lr * inner_grad[name] for name, value in params.items()}
            return ctx.task_loss(ctx.apply(adapted, x_outer), y_outer)

        return loss

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        order = torch.randperm(ctx.num_train_samples, generator=ctx.generator("adapt"))
        batch = ctx.train_indices[order[:ctx.sgd.batch_size]]
        adapted, _ = ctx.local_sgd(broadcast.params, indices=batch, epochs=1, lr=self.alpha, purpose="adapt")
        return adapted
