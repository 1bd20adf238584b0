"""FedCAC (Wu, Sun, Bi, Xu, Chen, "Bold but Cautious: Unlocking the Potential of Personalized Federated
Learning through Cautiously Aggressive Collaboration", ICCV 2023).

Client i starts from w = m_i ⊙ c_i + (1 − m_i) ⊙ θ: its *critical* parameters (mask m_i from its previous
round) from the customized model c_i the server made for it, the rest from the global model θ (θ alone before
its first upload). After E epochs of SGD it marks as critical, in every tensor, the top-τ fraction of the
sensitivity |(w' − w) ⊙ w'| (when that τ-quantile is ≤ 1e-10, every nonzero sensitivity at or above the
smallest nonzero one, as the official code), and uploads w' with its mask.
Server (memory: each client's latest model and mask): θ = Σ n_i w'_i / Σ n_i over the round's uploads; the
overlap of two masks o_ij = 1 − ‖m_i − m_j‖₁ / (2‖m_i‖₁); after the t-th round (t = 1, 2, …),
    threshold = avg_{i≠j} o_ij + t/β · (max_{i≠j} o_ij − avg)
(PFLlib's (epoch + 1)/β at the end of its 0-based iteration epoch = t − 1),
and c_i = the unweighted mean of the models of i and of every j with o_ij ≥ threshold (the threshold rises
every round: collaboration on critical parameters narrows from everyone to similar clients, then to none).
c_i goes to client i only (a personal download, counted). A client is scored with its start model w, right
after the download (PFLlib's evaluation point).

PFLlib quirk (``pfllib_compat=True`` reproduces it): its server skips the customization while its round counter
is 0, which is also the case at the end of its first round, so after round 1 every client takes its critical
parameters from its *initial* customized model (a copy of the initial global model) instead of an aggregate:
PFLlib's accuracy after round 1 is near chance (6.6% on the parity subsample). Default: customize from round 1
on, as the paper's algorithm does.

Defaults τ = 0.5, β = 170 (the official code's). Overlaps are taken over every client the server has heard
from (PFLlib's server reads every client's mask each round; with partial participation this uses each
absent client's latest upload). Masks travel as one byte per parameter (bool tensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from fedloom.algorithms._stacks import repeated, with_rows
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

ZERO_SENSITIVITY = 1e-10  # the official code's "threshold is zero" guard
NONZERO = 1e-20  # what counts as a nonzero sensitivity in its fallback


def critical_mask(sensitivity: torch.Tensor, tau: float) -> torch.Tensor:
    """Top-τ fraction of one tensor's sensitivities (ties included), with the official zero-threshold fallback."""
    flat = sensitivity.flatten()
    count = int(tau * flat.numel())
    if count == 0:
        return torch.zeros_like(sensitivity, dtype=torch.bool)
    thresh = torch.topk(flat, count).values[-1]
    if thresh <= ZERO_SENSITIVITY:
        nonzero = flat[flat > NONZERO]
        if nonzero.numel() > 0:
            thresh = nonzero.min()
    return sensitivity >= thresh


def overlaps(masks: torch.Tensor) -> torch.Tensor:
    """[k, P] bool masks -> [k, k] o_ij = 1 − ‖m_i − m_j‖₁ / (2‖m_i‖₁) (row i normalised by client i's count)."""
    m = masks.to(torch.float64)
    differ = torch.cdist(m, m, p=1)
    return 1 - differ / (2 * m.sum(1, keepdim=True)).clamp_min(1)


def collaborators(overlap: torch.Tensor, rounds_done: int, beta: int) -> torch.Tensor:
    """[k, k] bool: j collaborates with i (i itself always) under the threshold after ``rounds_done`` rounds."""
    k = overlap.shape[0]
    off = ~torch.eye(k, dtype=torch.bool)
    if k < 2:
        return ~off
    avg, top = overlap[off].mean(), overlap[off].max()
    threshold = avg + rounds_done / beta * (top - avg)
    return (overlap >= threshold) & off | ~off


@ALGORITHMS.register("fedcac")
@dataclass(frozen=True)
class FedCAC(Algorithm):
    aggregation = "all"
    vectorizable = False  # the per-tensor top-k threshold and its fallback are data-dependent
    tau: float = hp(0.5, gt=0, le=1, help="τ, fraction of each tensor marked critical")
    beta: int = hp(170, ge=1, help="β, how slowly the collaboration threshold rises (rounds to reach the max)")
    pfllib_compat: bool = False  # True: after round 1, critical parameters from the initial model (PFLlib)

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        n = federation.num_clients
        extra = {"models": repeated(init_params, n),
                 "masks": {k: torch.zeros(n, *v.shape, dtype=torch.bool) for k, v in init_params.items()},
                 "seen": torch.zeros(n, dtype=torch.bool)}
        params = tree_clone(init_params)
        return ServerResult(ServerState(params=params, extra=extra), Broadcast(params=params))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"critical": {k: torch.zeros_like(v, dtype=torch.bool) for k, v in init_params.items()}}

    def start_model(self, broadcast: Broadcast, state: Tree) -> Params:
        customized = broadcast.params if broadcast.personal is None else broadcast.personal["customized"]
        return {k: torch.where(state["critical"][k], customized[k], g) for k, g in broadcast.params.items()}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        start = self.start_model(broadcast, state)
        trained, metrics = ctx.local_sgd(start)
        mask = {k: critical_mask(((trained[k] - start[k]) * trained[k]).abs(), self.tau) for k in trained}
        return ClientResult(upload={"params": trained, "critical": mask}, state={"critical": mask},
                            weight=ctx.num_train_samples, metrics=metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        items = uploads.all()
        if not items:
            state = server.replace(round=server.round + 1)
            return ServerResult(state, Broadcast(params=server.params))
        total = sum(w for _, _, w in items)
        params = {k: sum(w * up["params"][k] for _, up, w in items) / total for k in server.params}
        models = with_rows(server.extra["models"], {cid: up["params"] for cid, up, _ in items})
        masks = with_rows(server.extra["masks"], {cid: up["critical"] for cid, up, _ in items})
        seen = server.extra["seen"].clone()
        seen[[cid for cid, _, _ in items]] = True
        ids = torch.nonzero(seen).flatten()
        flat = torch.cat([masks[k][ids].flatten(1) for k in masks], dim=1)
        together = collaborators(overlaps(flat), server.round + 1, self.beta).to(torch.float32)
        weights = together / together.sum(1, keepdim=True)  # an unweighted mean over each client's group
        if self.pfllib_compat and server.round == 0:  # PFLlib's unchanged customized model: the initial one
            weights, models_of = torch.eye(len(ids)), server.extra["models"]
        else:
            models_of = models
        personal = {int(cid): {"customized": {k: torch.tensordot(weights[row], models_of[k][ids], dims=1)
                                              for k in models}}
                    for row, cid in enumerate(ids)}
        extra = {"models": models, "masks": masks, "seen": seen}
        state = server.replace(params=params, round=server.round + 1, extra=extra)
        return ServerResult(state, Broadcast(params=params, personal=personal))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return self.start_model(broadcast, state)
