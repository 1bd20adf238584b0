"""FedPAC (Xu, Tong, Huang, "Personalized Federated Learning with Feature Alignment and Classifier
Collaboration", ICLR 2023).

Client i receives the global body φ, the global class prototypes P̄ (C × D; a class no client has reported is
absent) and, from round 2, its personalized head h_i. With the received φ it first computes its statistics
for the server (the official code's ``statistics_extraction``): p_k its class proportions, μ_k the mean
feature of class k,
    H_i[k] = p_k μ_k,   V_i = [Σ_k p_k tr(F_kᵀF_k / n_k) − Σ_k p_k² ‖μ_k‖²] / n_i   (F_k: class-k features).
Training: one epoch of the head alone, then E epochs of the body alone on CE + λ·‖φ(x) − P̄_y‖²/D (the
feature-alignment term, for classes with a global prototype). It uploads Δφ, its trained head, its class
prototypes (mean features under the trained body) and V_i, H_i.
Server (needs every upload): φ ← FedAvg of the bodies; P̄_c = unweighted mean of the uploaded prototypes of
class c; for each uploader i the classifier-collaboration weights
    α_i = argmin_{α ∈ simplex} αᵀ(diag(V) + D_i)α,   D_i[j, l] = Σ_k (H_i[k] − H_j[k])·(H_i[k] − H_l[k]),
with weights below 1e-3 zeroed (not renormalised, as the official code), and h_i = Σ_j α_ij head_j goes to
client i alone. A client is scored with (φ, its head) right after the download, as PFLlib.

The quadratic programme is solved by projected gradient descent on the simplex (the matrix is positive
semidefinite: a Gram matrix plus a non-negative diagonal) rather than with cvxpy; a client that never got a
combination keeps its own head. Default λ = 1 (PFLlib's ``-lam``).

``pfllib_compat = True`` reproduces how PFLlib's server hands out the heads (serverpac.py at d832e76), which
differs from the paper twice: (1) it solves the α's in the order the clients were selected but assigns and mixes
in the order ``receive_models`` drew with ``random.sample`` (a fresh permutation), so the client at position q of
that order gets the weights solved for the client at position q of the other, applied to the heads in the drawn
order; (2) its uploaded heads are the clients' own modules, so each new head overwrites one of them before the next
combination is formed (a sweep, not a simultaneous update). The permutation comes from the run's seed and round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_select, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.seeding import torch_generator
from fedloom.models.base import is_body, is_head

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

CHUNK = 512
SMALL_WEIGHT = 1e-3  # the official code zeroes collaboration weights below this
QP_STEPS = 2000


def class_features(ctx: ClientContext, body: Params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class over the client's training data: counts [C], feature sums [C, D], sums of ‖z‖² [C]."""
    classes = ctx.train_label_counts().shape[-1]
    counts, sums, squares = torch.zeros(classes), None, torch.zeros(classes)
    for start in range(0, ctx.num_train_samples, CHUNK):
        x, y = ctx.data(ctx.train_indices[start:start + CHUNK])
        with torch.no_grad():
            z = ctx.apply(body, x, part="body").flatten(1)
        onehot = torch.nn.functional.one_hot(y, classes).to(z.dtype)
        sums = onehot.T @ z if sums is None else sums + onehot.T @ z
        counts, squares = counts + onehot.sum(0), squares + onehot.T @ z.pow(2).sum(1)
    return counts, sums, squares


def statistics(counts: torch.Tensor, sums: torch.Tensor, squares: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(V_i, H_i) from class counts, feature sums and sums of squared norms (see the module docstring)."""
    n = counts.sum()
    p = counts / n
    means = sums / counts.clamp_min(1).unsqueeze(1)
    v = (p * squares / counts.clamp_min(1)).sum() - (p.pow(2) * means.pow(2).sum(1)).sum()
    return v / n, p.unsqueeze(1) * means


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto {α ≥ 0, Σα = 1} (sort-based)."""
    u, _ = torch.sort(v, descending=True)
    cumulative = torch.cumsum(u, 0) - 1
    ks = torch.arange(1, len(v) + 1, dtype=v.dtype)
    rho = int(torch.nonzero(u - cumulative / ks > 0).max())
    return (v - cumulative[rho] / (rho + 1)).clamp_min(0)


def solve_simplex_qp(matrix: torch.Tensor, steps: int = QP_STEPS) -> torch.Tensor:
    """argmin_{α ∈ simplex} αᵀ M α for a positive semidefinite M, by projected gradient descent."""
    m = matrix.to(torch.float64)
    lipschitz = 2 * torch.linalg.eigvalsh(m).max().clamp_min(1e-12)
    alpha = torch.full((m.shape[0],), 1.0 / m.shape[0], dtype=torch.float64)
    for _ in range(steps):
        alpha = project_simplex(alpha - 2 * (m @ alpha) / lipschitz)
    return alpha


def collaboration_weights(variances: torch.Tensor, h: torch.Tensor, i: int) -> torch.Tensor:
    """α_i for uploader i from every uploader's V [n] and H [n, C, D], small weights zeroed."""
    diff = (h[i].unsqueeze(0) - h).flatten(1).to(torch.float64)  # [n, C·D]: H_i − H_j
    matrix = torch.diag(variances.to(torch.float64)) + diff @ diff.T
    alpha = solve_simplex_qp(matrix)
    return torch.where(alpha > SMALL_WEIGHT, alpha, torch.zeros_like(alpha))


def mix(alpha: torch.Tensor, heads: list[Params]) -> Params:
    """Σ_j α_j head_j."""
    return {k: sum(float(a) * head[k] for a, head in zip(alpha, heads)) for k in heads[0]}


def pfllib_heads(alphas: list[torch.Tensor], heads: list[Params], ids: list[int], order: list[int]) -> dict:
    """PFLlib's hand-out (module docstring): position q of the drawn order gets alphas[q] over the heads in that
    order, and its new head replaces its old one before position q + 1 is mixed."""
    current = [heads[j] for j in order]
    personal = {}
    for q, j in enumerate(order):
        current[q] = mix(alphas[q], current)
        personal[ids[j]] = {"head": current[q]}
    return personal


@ALGORITHMS.register("fedpac")
@dataclass(frozen=True)
class FedPAC(Algorithm):
    aggregation = "all"
    vectorizable = False  # per-class statistics and a head epoch before the body epochs: the client's own loops
    lamda: float = hp(1.0, ge=0, help="λ, weight of the feature-alignment term")
    pfllib_compat: bool = hp(False, help="PFLlib's head hand-out: α's of a permuted client, mixed in a sweep")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        body = tree_clone(tree_select(init_params, is_body))
        state = ServerState(params=body, extra={"seed": torch.tensor(getattr(init_params, "seed", 0))})
        return ServerResult(state, Broadcast(params=body))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"head": tree_clone(tree_select(dict(init_params), is_head))}

    @staticmethod
    def local_model(broadcast: Broadcast, state: Tree) -> Params:
        head = state["head"] if broadcast.personal is None else broadcast.personal["head"]
        return {**broadcast.params, **head}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        model = self.local_model(broadcast, state)
        v, h = statistics(*class_features(ctx, broadcast.params))
        model, _ = ctx.local_sgd(model, epochs=1, trainable=is_head, purpose="fedpac-head")
        aux = {"protos": broadcast.extra.get("protos", torch.zeros(h.shape)),
               "present": broadcast.extra.get("present", torch.zeros(h.shape[0]))}
        trained, metrics = ctx.local_sgd(model, trainable=is_body, batch_loss=self.aligned_loss(ctx), aux=aux)
        counts, sums, _ = class_features(ctx, tree_select(trained, is_body))
        upload = {"body": tree_sub(tree_select(trained, is_body), broadcast.params),
                  "head": tree_select(trained, is_head), "protos": sums / counts.clamp_min(1).unsqueeze(1),
                  "present": (counts > 0).to(torch.float32), "V": v, "H": h}
        return ClientResult(upload=upload, state={"head": tree_select(trained, is_head)},
                            weight=ctx.num_train_samples, metrics=metrics)

    def aligned_loss(self, ctx: ClientContext) -> Any:
        lamda = self.lamda

        def loss(params: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            z = ctx.apply(tree_select(params, is_body), x, part="body")
            logits = ctx.apply(tree_select(params, is_head), z, part="head")
            gap = (z.flatten(1) - aux["protos"][y]).pow(2).mean(1) * aux["present"][y]
            return ctx.task_loss(logits, y) + lamda * gap

        return loss

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        items = uploads.all()
        if not items:
            return ServerResult(server.replace(round=server.round + 1), Broadcast(params=server.params))
        total = sum(w for _, _, w in items)
        body = tree_add(server.params, {k: sum(w * up["body"][k] for _, up, w in items) / total
                                        for k in server.params})
        present = torch.stack([up["present"] for _, up, _ in items])  # [n, C]
        protos = torch.stack([up["protos"] for _, up, _ in items])  # [n, C, D]
        reported = present.sum(0)
        global_protos = (present.unsqueeze(2) * protos).sum(0) / reported.clamp_min(1).unsqueeze(1)
        variances = torch.stack([torch.as_tensor(up["V"]) for _, up, _ in items])
        h = torch.stack([up["H"] for _, up, _ in items])
        heads = [up["head"] for _, up, _ in items]
        alphas = [collaboration_weights(variances, h, row) for row in range(len(items))]
        ids = [cid for cid, _, _ in items]
        if self.pfllib_compat:
            order = torch.randperm(len(items), generator=torch_generator(
                int(server.extra["seed"]), server.round, -1, "fedpac-pfllib-order")).tolist()
            personal = pfllib_heads(alphas, heads, ids, order)
        else:
            personal = {cid: {"head": mix(alpha, heads)} for cid, alpha in zip(ids, alphas)}
        extra = {"protos": global_protos, "present": (reported > 0).to(torch.float32)}
        state = server.replace(params=body, round=server.round + 1)
        return ServerResult(state, Broadcast(params=body, extra=extra, personal=personal))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return self.local_model(broadcast, state)
