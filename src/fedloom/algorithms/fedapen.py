"""FedAPEN (Z. Qin, S. Deng, M. Zhao, X. Yan, "FedAPEN: Personalized Cross-silo Federated Learning with Adaptability to
Statistical Heterogeneity", KDD 2023). Official code: zhenqincn/FedAPEN (algorithm "learned_adaptive_training");
not in PFLlib, so there is no ``pfllib_compat`` switch.

Each client keeps a private model (p: its logits) and trains it together with a copy of the shared model
(s), by mutual learning with an ensemble term weighted by the client's learned λ:
    L_private = CE(p, y) + KL(softmax(s̄) ‖ softmax(p)) + CE(λp + (1 − λ)s̄, y)
    L_shared  = CE(s, y) + KL(softmax(p̄) ‖ softmax(s)) + CE(λp̄ + (1 − λ)s, y)
where a bar marks a detached output (both models step on every batch; one SGD over both trees gives exactly the
official two optimizers' steps, since neither loss reaches the other model). The server averages the shared
models without weights. Adaptability learning: after aggregation, on a held-out validation slice
(``val_ratio`` = 5% of the client's training data, never trained on), λ takes ``lambda_epochs`` passes of SGD
(lr ``lambda_lr``) on CE(λp + (1 − λ)s, y) with both models frozen, clipped to [0, 1] after every step; λ
starts at 0.5 and carries over between rounds. Inference: λp + (1 − λ)s with the new shared model.

Schedule (official main.py): train with the λ learned last round → aggregate → learn λ against the new shared
model → evaluate. In fedloom the λ step runs in ``eval_params`` after server step r and again, identically (same
stream of round r), at the start of the client's next update, which trains with it. The first round trains with
λ = 0.5. Run-level settings of the official code (5 local epochs, batch 64, lr 0.01, 10 clients) are the run's
flags, not this algorithm's; its per-round lr decay (0.99) has no fedloom counterpart yet. The private model has its own initialisation, drawn from
the run seed (stream "fedapen-private"; one draw shared by all clients, the official code draws one per client).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _layers as L
from fedloom.algorithms._naming import tagged, untagged
from fedloom.algorithms.base import ALGORITHMS, ApplyFn, Broadcast, ClientResult, Predictor
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree, tree_sub
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

PRIVATE, SHARED = "private", "shared"  # tags of the two models in the flat training dict (see _naming)
LAMBDA_STREAM = "fedapen-lambda"


@ALGORITHMS.register("fedapen")
@dataclass(frozen=True)
class FedAPEN(FedAvg):
    # λ learning is a loop of its own with a generator of another round (ctx.generator(round_=...))
    vectorizable = False

    val_ratio: float = hp(0.05, ge=0, lt=1, help="the adaptability (validation) share of the training data")
    lambda_lr: float = hp(1e-3, gt=0, help="SGD learning rate of λ")
    lambda_epochs: int = hp(10, ge=0, help="passes over the validation slice per round")
    init_lambda: float = hp(0.5, ge=0, le=1, help="λ before the first adaptability step")

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        # InitParams.fresh: the template's own initialisation from the run's "fedapen-private" stream
        private = init_params.fresh("fedapen-private")
        device = L.device_of(private)
        return {"private": private, "lambda": torch.tensor(self.init_lambda, device=device),
                "fresh": torch.tensor(True)}

    # ------------------------------------------------------------------ client
    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        train, _ = self.split(ctx)
        lam = self.current_lambda(ctx, broadcast, state, ctx.round - 1)  # the step after server step r - 1
        start = {**tagged(PRIVATE, state["private"]), **tagged(SHARED, broadcast.params)}
        trained, metrics = ctx.local_sgd(start, indices=train, batch_loss=mutual_loss_hook(ctx.apply),
                                         aux={"lambda": lam})
        shared = untagged(SHARED, trained)
        new_state = {"private": untagged(PRIVATE, trained), "lambda": lam, "fresh": torch.tensor(False)}
        # unweighted average of the shared models on the server: every client weighs 1
        return ClientResult(upload=tree_sub(shared, broadcast.params), state=new_state, weight=1.0,
                            metrics=metrics)

    def split(self, ctx: ClientContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, validation) indices: a fixed random val_ratio share of the client's data is held out."""
        indices = ctx.train_indices
        order = torch.randperm(indices.shape[0], generator=ctx.generator("fedapen-split", round_=-1))
        n_val = int(indices.shape[0] * self.val_ratio)
        n_train = indices.shape[0] - n_val
        return indices[order[:n_train].sort().values], indices[order[n_train:].sort().values]

    def current_lambda(self, ctx: ClientContext, broadcast: Broadcast, state: Tree,
                       stream_round: int) -> torch.Tensor:
        """λ after the adaptability step that follows server step ``stream_round`` (none before training)."""
        if bool(state["fresh"]):
            return state["lambda"]
        _, val = self.split(ctx)
        if val.numel() == 0:
            return state["lambda"]
        x, y = ctx.data(val)
        with torch.no_grad():
            p_out, s_out = ctx.apply(state["private"], x), ctx.apply(broadcast.params, x)
        batches = _epochs_of_batches(val.shape[0], min(ctx.sgd.batch_size, val.shape[0]), self.lambda_epochs,
                                     ctx.generator(LAMBDA_STREAM, round_=stream_round))
        return learn_lambda(state["lambda"], p_out, s_out, y, batches, self.lambda_lr)

    # ------------------------------------------------------------------ evaluation
    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Predictor:
        state = state if state is not None else self.init_client_state(ctx.runtime.init_params, ctx.client_id)
        lam = self.current_lambda(ctx, broadcast, state, ctx.round)
        return Predictor({"private": state["private"], "shared": broadcast.params, "lambda": lam}, predict)


def predict(apply: ApplyFn, tree: Tree, x: torch.Tensor) -> torch.Tensor:
    """λp + (1 − λ)s."""
    lam = tree["lambda"]
    return lam * apply(tree["private"], x) + (1 - lam) * apply(tree["shared"], x)


def mutual_loss_hook(apply: ApplyFn) -> Any:
    def loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
        p, s, lam = apply(untagged(PRIVATE, w), x), apply(untagged(SHARED, w), x), aux["lambda"]
        private = _ce(p, y) + _kl(p, s.detach()) + _ce(lam * p + (1 - lam) * s.detach(), y)
        shared = _ce(s, y) + _kl(s, p.detach()) + _ce(lam * p.detach() + (1 - lam) * s, y)
        return private + shared

    return loss


def learn_lambda(lam: torch.Tensor, p_out: torch.Tensor, s_out: torch.Tensor, y: torch.Tensor,
                 batches: list[torch.Tensor], lr: float) -> torch.Tensor:
    """SGD on λ for CE(λp + (1 − λ)s, y) over ``batches`` (positions into the outputs), clipped to [0, 1]."""
    lam = lam.detach().clone()
    for batch in batches:
        lam.requires_grad_(True)
        ensemble = lam * p_out[batch] + (1 - lam) * s_out[batch]
        (grad,) = torch.autograd.grad(F.cross_entropy(ensemble, y[batch]), lam)
        lam = torch.clamp(lam.detach() - lr * grad, 0.0, 1.0)
    return lam


def _epochs_of_batches(n: int, batch_size: int, epochs: int, generator: torch.Generator) -> list[torch.Tensor]:
    # DataLoader(shuffle=True): a fresh permutation each pass, the last batch possibly smaller
    return [batch for _ in range(epochs) for batch in torch.randperm(n, generator=generator).split(batch_size)]


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _kl(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(softmax(target) ‖ softmax(logits)) (nn.KLDivLoss(batchmean) before the batch mean)."""
    target = F.softmax(target_logits, dim=1)
    return (target * (F.log_softmax(target_logits, dim=1) - F.log_softmax(logits, dim=1))).sum(dim=1)
