"""FedAS (Yang, Huang, Ye, "FedAS: Bridging Inconsistency in Personalized Federated Learning", CVPR 2024).

The body φ is federated, the head stays with the client. Client i, holding its last local model (φ_i, h_i):
1. *Parameter alignment*: class prototypes p_c = mean of φ_i(x) over its samples of class c (old body), then
   ``align_epochs`` of SGD (lr ``align_lr``, batch ``align_batch``) on the *received* body φ to minimise
   Σ_c MSE(φ(x_c), p_c) over the classes c of each batch (the official code's loss); the aligned body replaces
   φ_i. 2. E epochs of SGD on CE over (φ, h_i). 3. *Client synchronization*: the trace of the empirical Fisher
   information of the trained model, Σ_batches Σ_params (∂ mean-NLL_batch / ∂w)², over one shuffled pass of
   its training data in batches of the run's size. It uploads φ' − φ with that trace as its aggregation
   weight: the server's step θ ← θ + Σ_i F_i (φ'_i − φ) / Σ_i F_i is a weighted mean, so it reduces like
   FedAvg's. A client is scored with its local model as it left its last training (PFLlib evaluates before
   the download).

PFLlib deviations, not followed: its server averages and sends the whole model, whose head no client reads
(here only the body travels), and clients that are not selected also compute the trace (only logged there).
The alignment uses the run's momentum (PFLlib: a fresh SGD without momentum; our benchmark runs use none).
Defaults: align_lr 0.01, 1 epoch, batch 16 (PFLlib's hard-coded values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch.func import grad

from fedloom.algorithms._body_sharing import BodySharing
from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_select, tree_sub
from fedloom.config import hp
from fedloom.models.base import is_body, is_head

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

CHUNK = 512  # samples per no-grad forward when computing prototypes


def class_prototypes(ctx: ClientContext, body: Params) -> torch.Tensor:
    """[C, D] mean feature of each class over the client's training samples (zeros for absent classes)."""
    sums, counts = None, None
    for start in range(0, ctx.num_train_samples, CHUNK):
        x, y = ctx.data(ctx.train_indices[start:start + CHUNK])
        with torch.no_grad():
            z = ctx.apply(body, x, part="body").flatten(1)
        onehot = torch.nn.functional.one_hot(y, ctx.train_label_counts().shape[-1]).to(z.dtype)
        sums = onehot.T @ z if sums is None else sums + onehot.T @ z
        counts = onehot.sum(0) if counts is None else counts + onehot.sum(0)
    return sums / counts.clamp_min(1).unsqueeze(1)


def fisher_trace(ctx: ClientContext, params: Params) -> torch.Tensor:
    """Σ over shuffled batches of ‖∇ mean NLL_batch‖² (the empirical Fisher information's trace)."""
    order = ctx.train_indices[torch.randperm(ctx.num_train_samples, generator=ctx.generator("fedas-fim"))]
    size = ctx.sgd.batch_size

    def nll(w: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ctx.task_loss(ctx.apply(w, x), y).mean()

    total = torch.zeros(())
    for start in range(0, len(order), size):
        x, y = ctx.data(order[start:start + size])
        total = total + sum(g.pow(2).sum() for g in grad(nll)(params, x, y).values())
    return total


@ALGORITHMS.register("fedas")
@dataclass(frozen=True)
class FedAS(BodySharing):
    vectorizable = False  # prototypes, alignment and the Fisher pass are the client's own loops
    align_lr: float = hp(0.01, gt=0, help="learning rate of the parameter-alignment pass")
    align_epochs: int = hp(1, ge=0, help="epochs of parameter alignment (0: no alignment)")
    align_batch: int = hp(16, ge=1, help="batch size of the prototypes' alignment pass")

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"model": tree_clone(dict(init_params))}

    def aligned_body(self, ctx: ClientContext, body: Params, old_body: Params) -> Params:
        if self.align_epochs == 0:
            return body
        protos = class_prototypes(ctx, old_body)

        def loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            z = ctx.apply(w, x, part="body").flatten(1)
            per_sample = (z - aux["protos"][y]).pow(2).mean(1)
            in_class = (y.unsqueeze(0) == y.unsqueeze(1)).sum(1)
            return per_sample * y.shape[0] / in_class  # batch mean = Σ_c MSE over class c's samples

        aligned, _ = ctx.local_sgd(body, epochs=self.align_epochs, lr=self.align_lr, batch_size=self.align_batch,
                                   purpose="fedas-align", indices=ctx.train_indices, batch_loss=loss,
                                   aux={"protos": protos})
        return aligned

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        old = state["model"]
        body = self.aligned_body(ctx, broadcast.params, tree_select(old, is_body))
        trained, metrics = ctx.local_sgd({**body, **tree_select(old, is_head)})
        trace = fisher_trace(ctx, trained)
        upload = tree_sub(tree_select(trained, is_body), broadcast.params)
        return ClientResult(upload=upload, state={"model": trained}, weight=float(trace),
                            metrics={**metrics, "fim_trace": float(trace)})

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["model"]
