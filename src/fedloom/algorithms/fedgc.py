"""FedGC (Niu, Deng, "Federated Learning for Face Recognition with Gradient Correction", AAAI 2022).
PFLlib: ``servergc.py`` / ``clientgc.py``.

Each client's classifier covers only the classes it holds (a softmax over its own classes: the logits of the
other classes are left out of its loss and of its predictions). The body is shared (FedAvg of body updates);
the heads live on the server, one per client, and go back to their client every round (a personal download).
After averaging, the server *corrects* the heads with one SGD step (lr ``server_lr``, PFLlib's lr·λ) on the
cross-client spread-out regularizer: for every class c held by some client, with e_c the mean over those
clients of their class-c weight vectors (held fixed),
    Reg = Σ_c n_c · −log( exp(e_c·e_c) / (exp(e_c·e_c) + Σ_{j: c ∉ C_j} Σ_{c' ∈ C_j} exp(W_j[c']·e_c)) ),
n_c the number of clients holding c (PFLlib sums the term once per (client, class) pair). Its gradient pushes
the weight vectors of clients that do *not* hold c away from c's embedding, which local training alone
cannot do (no client sees the other clients' classes). The server learns each client's class set from a
per-class bool mask in the upload (C bytes). A client is scored with the global body and its own head over
its own classes.

Deviations from PFLlib: its heads have no bias (fedloom keeps the model's head, its bias trained locally and
left out of the regularizer) and are drawn afresh per client (here every head starts from the model's initial
head). ``pfllib_compat = True`` reproduces both: the bias stays at zero and untrained, and client i's head
weight is drawn from U(−1/√D, 1/√D) (torch's nn.Linear initialisation) with the run's seed and i. Not
reproducible by a switch: PFLlib maps a test label the client does not hold to its local class 0, so such a
sample counts as correct when the client predicts its lowest-numbered class; here it is misclassified (the
predictor never sees the labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

from fedloom.algorithms._stacks import repeated, row, with_rows
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, Predictor,
                                     ServerResult, ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_select, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.models.base import is_body
from fedloom.seeding import torch_generator

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

WEIGHT = "head.weight"
BIAS = "head.bias"


def own_class_logits(logits: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """Logits of the classes not held removed from the softmax (−inf)."""
    return torch.where(held > 0, logits, torch.full_like(logits, float("-inf")))


def spread_out(weights: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """The server regularizer over client class-weight matrices ``weights`` [k, C, D] and class sets ``held``
    [k, C] bool (see the module docstring); e_c is held fixed (PFLlib averages ``.data``)."""
    holders = held.sum(0)  # n_c
    emb = (weights.detach() * held.unsqueeze(-1)).sum(0) / holders.clamp(min=1).unsqueeze(-1)  # [C, D]
    scores = torch.einsum("kad,cd->cka", weights, emb)  # W_j[c'] · e_c  for every (c, j, c')
    others = held.unsqueeze(0) & ~held.T.unsqueeze(-1)  # c' ∈ C_j and c ∉ C_j   [C, k, C]
    scores = torch.where(others, scores, torch.full_like(scores, float("-inf"))).flatten(1)
    self_score = (emb * emb).sum(1, keepdim=True)
    terms = torch.logsumexp(torch.cat([self_score, scores], dim=1), dim=1) - self_score.squeeze(1)
    return (holders * terms)[holders > 0].sum()


def fresh_heads(heads: Params, seed: int) -> Params:
    """Every client's head weight drawn afresh from U(−1/√D, 1/√D) (nn.Linear's initialisation), the bias zero."""
    n, _, d = heads[WEIGHT].shape
    bound = 1.0 / d ** 0.5
    weights = [torch.empty(heads[WEIGHT].shape[1:]).uniform_(-bound, bound,
                                                            generator=torch_generator(seed, 0, cid, "fedgc-head"))
               for cid in range(n)]
    out = {**heads, WEIGHT: torch.stack(weights).to(heads[WEIGHT].dtype)}
    if BIAS in heads:
        out[BIAS] = torch.zeros_like(heads[BIAS])
    return out


@ALGORITHMS.register("fedgc")
@dataclass(frozen=True)
class FedGC(Algorithm):
    aggregation = "all"  # the server keeps every client's head
    # packs: the held mask from the pack's [n, C] label counts goes into aux, so each slot gets its own row
    needs_homogeneous_head = True
    server_lr: float = hp(0.005, ge=0, help="lr of the server's correction step (PFLlib: local lr · λ)")
    pfllib_compat: bool = hp(False, help="PFLlib's heads: no bias, drawn afresh per client")

    def validate_for_model(self, init_params: Params) -> None:
        if WEIGHT not in init_params or init_params[WEIGHT].dim() != 2:
            raise ConfigError("fedgc needs a model whose head is one linear layer (a 'head.weight' matrix)")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        n, c = federation.num_clients, init_params[WEIGHT].shape[0]
        head = tree_select(init_params, lambda k: not is_body(k))
        heads = repeated(head, n)
        if self.pfllib_compat:
            heads = fresh_heads(heads, int(getattr(init_params, "seed", 0)))
        extra = {"heads": heads, "held": torch.zeros(n, c, dtype=torch.bool)}
        state = ServerState(params=tree_clone(tree_select(init_params, is_body)), extra=extra)
        return ServerResult(state, self.broadcast(state))

    @staticmethod
    def broadcast(state: ServerState) -> Broadcast:
        n = state.extra["held"].shape[0]
        return Broadcast(params=state.params, personal={cid: {"head": row(state.extra["heads"], cid)}
                                                        for cid in range(n)})

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        held = (ctx.train_label_counts() > 0).to(torch.float32)
        start = {**broadcast.params, **broadcast.personal["head"]}
        no_bias = (lambda k: k != BIAS) if self.pfllib_compat else None  # PFLlib: nn.Linear(..., bias=False)
        trained, metrics = ctx.local_sgd(start, batch_loss=self.own_class_loss(ctx), aux={"held": held},
                                         trainable=no_bias)
        upload = {"body": tree_sub(tree_select(trained, is_body), broadcast.params),
                  "head": tree_select(trained, lambda k: not is_body(k)), "held": held > 0}
        return ClientResult(upload=upload, state=state, weight=ctx.num_train_samples, metrics=metrics)

    @staticmethod
    def own_class_loss(ctx: ClientContext) -> Any:
        def loss(params: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            return ctx.task_loss(own_class_logits(ctx.apply(params, x), aux["held"]), y)

        return loss

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        items = uploads.all()
        if not items:
            state = server.replace(round=server.round + 1)
            return ServerResult(state, self.broadcast(state))
        total = sum(w for _, _, w in items)
        body = tree_add(server.params, {k: sum(w * up["body"][k] for _, up, w in items) / total
                                        for k in server.params})
        heads = with_rows(server.extra["heads"], {cid: up["head"] for cid, up, _ in items})
        held = server.extra["held"].clone()
        for cid, up, _ in items:
            held[cid] = up["held"]
        heads[WEIGHT], reg = self.corrected(heads[WEIGHT], held)
        state = server.replace(params=body, round=server.round + 1, extra={"heads": heads, "held": held})
        return ServerResult(state, self.broadcast(state), {"spread_out": reg})

    def corrected(self, weights: torch.Tensor, held: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(the weights after one SGD step of the spread-out regularizer on the clients heard from, Reg)."""
        seen = held.any(1)
        w = weights[seen].clone().requires_grad_(True)
        reg = spread_out(w, held[seen])
        if not reg.requires_grad or self.server_lr == 0:
            return weights, float(reg.detach())
        (grad,) = torch.autograd.grad(reg, w)
        out = weights.clone()
        out[seen] = (w - self.server_lr * grad).detach()
        return out, float(reg.detach())

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Predictor:
        held = (ctx.train_label_counts() > 0).to(torch.float32)
        return Predictor({"params": {**broadcast.params, **broadcast.personal["head"]}, "held": held},
                         own_class_predict)


def own_class_predict(apply: Any, tree: Tree, x: torch.Tensor) -> torch.Tensor:
    """Logits with every class the client does not hold set just below its lowest held logit (never chosen,
    finite loss)."""
    logits = apply(tree["params"], x)
    held = tree["held"] > 0
    low = logits.masked_fill(~held, float("inf")).amin(1, keepdim=True) - 1
    return torch.where(held, logits, low.expand_as(logits))
