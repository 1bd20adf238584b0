"""FedL2G (J. Zhang, Y. Liu, Y. Hua, J. Cao, "Adaptive Guidance for Local Training in Heterogeneous Federated
Learning", arXiv 2410.06490, 2024); HtFLlib ``serverl2g_feat``/``serverl2g_logit`` and their clients.

The server holds one learnable guiding vector per class, in feature space (``space = feat``, C × D) or in logit
space (``logit``, C × C), initialised N(0, 1) from the run seed. Each round, on every sampled client:

* after ``warm_up_rounds`` rounds (before them the clients only run the meta step): local training on the
  client's "study" data with CE(h(φ(x)), y) + MSE(v, g_y), v = φ(x) (feat) or the logits (logit);
* the meta step, which learns the guides: one differentiable SGD step (the client's lr) on the mean of
  ``meta_study_batches`` study batches of that loss, then the mean CE of ``meta_quiz_batches`` "quiz" batches
  under the stepped model; its gradient with respect to the guides is uploaded for the classes where it is not
  zero (rows and class ids: C × dim at most). The quiz data are the first ``meta_quiz_batches × batch size``
  training samples, held out of local training; the batches are full ones (drop_last), shuffled;
* the server takes, per class, the mean of the uploaded gradients (zero for classes nobody sent), clips the
  whole gradient to norm 100 and takes one SGD step of lr ``server_lr``.

Inference: the client's own model. Defaults (HtFLlib argparse): server lr 0.01, 1 study and 1 quiz batch,
50 warm-up rounds. HtFLlib's local training reads the study data unshuffled with drop_last (a quirk); fedloom's
local SGD shuffles and keeps the last batch. Local training clips gradient norms at ``clip_norm`` = 100.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _htfl as H
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, ApplyFn, Broadcast, ClientResult, Federation,
                                     ServerResult, ServerState)
from fedloom.algorithms.fedktl import num_outputs
from fedloom.algorithms.tree import Params, Tree, tree_clone
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.seeding import torch_generator

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

CLIP = 100.0


@ALGORITHMS.register("fedl2g")
@dataclass(frozen=True)
class FedL2G(Algorithm):
    shared_architecture = False
    vectorizable = False

    space: str = hp("feat", choices=("feat", "logit"), help="guide the features (FedL2G-feat) or the logits")
    server_lr: float = hp(0.01, gt=0, help="SGD learning rate of the guiding vectors")
    meta_study_batches: int = hp(1, ge=1, help="study batches of the differentiable step")
    meta_quiz_batches: int = hp(1, ge=1, help="quiz batches (held out of local training) of the meta loss")
    warm_up_rounds: int = hp(50, ge=0, help="rounds in which clients only run the meta step")
    clip_norm: float = hp(100.0, ge=0, help="gradient-norm clipping of local training (HtFLlib: 100; 0: off)")

    @property
    def needs_common_feature_dim(self) -> bool:  # type: ignore[override]
        return self.space == "feat"  # feature guides are D wide for every client

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        classes = num_outputs(init_params)
        dim = classes if self.space == "logit" else int(init_params.template.feature_dim)
        gen = torch_generator(getattr(init_params, "seed", 0), -1, -1, "fedl2g-guides")
        guides = torch.randn(classes, dim, generator=gen).to(next(iter(init_params.values())).device)
        return ServerResult(state=ServerState(params={}, extra={"guides": guides}),
                            broadcast=Broadcast(params={}, extra={"guides": guides}))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"params": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        guides = broadcast.extra["guides"]
        quiz, study = self.split(ctx)
        params, metrics = state["params"], {}
        if ctx.round > self.warm_up_rounds and study.numel():
            params, metrics = ctx.local_sgd(params, indices=study, batch_loss=self.loss(ctx.apply, guides),
                                            grad_correction=H.clip_groups(self.clip_norm))
        grad = self.meta_gradient(ctx, params, guides, study, quiz)
        held = grad.abs().sum(1) > 0
        return ClientResult(upload=H.rows_message(grad, held), state={"params": params}, weight=1.0,
                            metrics=metrics)

    def split(self, ctx: ClientContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(quiz, study): the first meta_quiz_batches × batch size training samples, and the rest."""
        n_quiz = min(self.meta_quiz_batches * ctx.sgd.batch_size, ctx.train_indices.numel() // 2)
        return ctx.train_indices[:n_quiz], ctx.train_indices[n_quiz:]

    def loss(self, apply: ApplyFn, guides: torch.Tensor) -> Any:
        def batch_loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            return guided_loss(apply, w, x, y, guides, self.space)

        return batch_loss

    def meta_gradient(self, ctx: ClientContext, params: Params, guides: torch.Tensor, study: torch.Tensor,
                      quiz: torch.Tensor) -> torch.Tensor:
        """∂/∂g of the quiz CE after one differentiable SGD step on the guided study loss."""
        g = guides.detach().clone().requires_grad_(True)
        w = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        gen = ctx.generator("fedl2g-meta")
        pseudo = torch.stack([guided_loss(ctx.apply, w, *ctx.data(b), g, self.space).mean()
                              for b in full_batches(study, ctx.sgd.batch_size, self.meta_study_batches, gen)]).mean()
        grads = torch.autograd.grad(pseudo, list(w.values()), create_graph=True, allow_unused=True)
        stepped = {k: v if gr is None else v - ctx.sgd.lr * gr for (k, v), gr in zip(w.items(), grads)}
        quiz_loss = torch.stack([F.cross_entropy(ctx.apply(stepped, x), y) for x, y in
                                 (ctx.data(b) for b in full_batches(quiz, ctx.sgd.batch_size,
                                                                   self.meta_quiz_batches, gen))]).mean()
        (grad,) = torch.autograd.grad(quiz_loss, [g], allow_unused=True)
        return torch.zeros_like(guides) if grad is None else grad.detach()

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        state = server.replace(round=server.round + 1, extra=dict(server.extra))
        mean = H.per_class_mean(uploads)
        guides = server.extra["guides"]
        if mean is not None:
            grad = mean[0] * mean[1].unsqueeze(1)
            norm = float(grad.norm())
            grad = grad * min(1.0, CLIP / (norm + 1e-6))  # clip_grad_norm_(100)
            guides = guides - self.server_lr * grad
            state.extra["guides"] = guides
        return ServerResult(state=state, broadcast=Broadcast(params={}, extra={"guides": guides}))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["params"] if state is not None else ctx.init_params


def guided_loss(apply: ApplyFn, w: Params, x: torch.Tensor, y: torch.Tensor, guides: torch.Tensor,
                space: str) -> torch.Tensor:
    """Per-sample CE + mean_j (v_j − g_{y,j})², v the features (feat) or the logits (logit)."""
    feats = H.body(apply, w, x)
    out = apply(w, feats, "head")
    guided = feats if space == "feat" else out
    return F.cross_entropy(out, y, reduction="none") + (guided - guides[y]).pow(2).mean(1)


def full_batches(indices: torch.Tensor, batch_size: int, count: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Up to ``count`` shuffled full batches (DataLoader(shuffle=True, drop_last=True)); one short batch when the
    data hold less than one full batch."""
    order = indices[torch.randperm(indices.numel(), generator=gen).to(indices.device)]
    full = [b for b in order.split(batch_size) if b.numel() == batch_size][:count]
    return full or [order]
