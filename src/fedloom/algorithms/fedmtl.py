"""FedMTL: federated multi-task learning with a learned task-relation matrix, in the style of MOCHA (Smith,
Chiang, Sanjabi, Talwalkar, "Federated Multi-Task Learning", NeurIPS 2017). PFLlib: ``servermtl.py`` /
``clientmtl.py``.

Every client t learns its own model w_t (kept locally; it is what t is scored with). With W = [w_1 … w_N]
(one flattened model per client) the federation minimises
    Σ_t F_t(w_t) + λ₁·tr(W Ω Wᵀ) + λ₂·‖W‖²_F,
alternating, as the paper does, a W-step on the clients and an Ω-step on the server:
* client t (local SGD, the run's epochs) minimises F_t(w_t) + λ₁(Ω_tt‖w_t‖² + 2⟨w_t, u_t⟩) + λ₂‖w_t‖², the
  terms of the objective that involve w_t, with u_t = Σ_{s≠t} Ω_ts w_s sent by the server (a personal
  download of one model's size plus Ω_tt), and uploads its new w_t;
* server: keeps every client's latest model and, with ``learn_omega`` (default), sets the task covariance to
  the closed form Σ = (WᵀW)^{1/2} / tr((WᵀW)^{1/2}) (Zhang & Yeung's relationship learning, used by MOCHA) and
  Ω = (Σ + εI)^{-1} (ε keeps Ω finite while the models are still nearly identical: then Ω pulls every model
  toward the mean); ``learn_omega=False``: the fixed mean-regularized Ω = I − 11ᵀ/N (tr(WΩWᵀ) = Σ_t‖w_t − w̄‖²).

PFLlib's deviations: its client adds 10^{-f}(‖W‖² + Σ_rows(ω Σ_k W_rk)²) with ω a single scalar (the square
root of one entry of an all-equal matrix: its "Ω" is ``(ones − 11ᵀ/K)**2``), never updates Ω, and never reads its
``-itk`` option (the "iterations for solving quadratic subproblems" of MOCHA's dual solver); here the
W-subproblem is solved by the run's local SGD, so there is no ``itk``. More decisive: PFLlib fills W with
``model.state_dict()`` tensors, which are detached from the parameters, so its regularizer is a constant in the
loss and has no gradient: PFLlib's FedMTL trains exactly as Local. ``pfllib_compat = True`` reproduces that (local
SGD without the regularizer; the reported train loss lacks PFLlib's constant).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

from fedloom.algorithms._stacks import flattened, repeated, row, with_rows
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


def learned_omega(flat: torch.Tensor, eps: float) -> torch.Tensor:
    """Ω = (Σ + εI)^{-1}, Σ = (WᵀW)^{1/2}/tr(·), from the [N, P] flattened client models."""
    gram = flat.double() @ flat.double().T
    values, vectors = torch.linalg.eigh(gram)
    root = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    sigma = root / root.trace().clamp(min=1e-300)
    return torch.linalg.inv(sigma + eps * torch.eye(len(sigma), dtype=sigma.dtype))


def mean_omega(n: int) -> torch.Tensor:
    """The mean-regularized task relation I − 11ᵀ/N (a projection: its square is itself)."""
    return torch.eye(n, dtype=torch.float64) - 1.0 / n


def pull(omega: torch.Tensor, stack: Params) -> Params:
    """u_t = Σ_{s≠t} Ω_ts w_s for every t, as a stack [N, ...]."""
    off = omega - torch.diag(torch.diag(omega))
    return {k: torch.tensordot(off.to(v.dtype), v, dims=1) for k, v in stack.items()}


@ALGORITHMS.register("fedmtl")
@dataclass(frozen=True)
class FedMTL(Algorithm):
    aggregation = "all"  # the server keeps every client's model
    lambda1: float = hp(1e-4, ge=0, help="λ₁, weight of the task-relation term tr(W Ω Wᵀ)")
    lambda2: float = hp(1e-4, ge=0, help="λ₂, weight of ‖W‖²_F")
    learn_omega: bool = True  # False: the fixed mean-regularized Ω = I − 11ᵀ/N
    eps: float = hp(1e-3, gt=0, help="ε added to the task covariance before inverting it")
    pfllib_compat: bool = hp(False, help="PFLlib's regularizer: detached (state_dict), so no gradient: Local")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        n = federation.num_clients
        extra = {"models": repeated(init_params, n), "omega": mean_omega(n)}
        state = ServerState(params=tree_clone(init_params), extra=extra)
        return ServerResult(state, self.broadcast(state))

    @staticmethod
    def broadcast(state: ServerState) -> Broadcast:
        omega, stack = state.extra["omega"], state.extra["models"]
        pulls = pull(omega, stack)
        personal = {t: {"pull": row(pulls, t), "diag": omega[t, t].float()} for t in range(len(omega))}
        return Broadcast(params={}, personal=personal)

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"model": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        state = state if state is not None else self.init_client_state(ctx.init_params, ctx.client_id)
        aux = {"pull": broadcast.personal["pull"], "diag": broadcast.personal["diag"]}
        extra = None if self.pfllib_compat else self.regularizer
        trained, metrics = ctx.local_sgd(state["model"], extra_loss=extra, aux=aux)
        return ClientResult(upload=trained, state={"model": trained}, weight=ctx.num_train_samples,
                            metrics=metrics)

    def regularizer(self, w: Params, aux: Any) -> torch.Tensor:
        """λ₁(Ω_tt‖w‖² + 2⟨w, u_t⟩) + λ₂‖w‖²: the objective's terms that involve client t's model."""
        sq = sum((w[k] * w[k]).sum() for k in aux["pull"])
        cross = sum((w[k] * aux["pull"][k]).sum() for k in aux["pull"])
        return self.lambda1 * (aux["diag"] * sq + 2 * cross) + self.lambda2 * sq

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        items = uploads.all()
        stack = with_rows(server.extra["models"], {cid: up for cid, up, _ in items})
        omega = server.extra["omega"]
        if items and self.learn_omega:
            omega = learned_omega(flattened(stack), self.eps)
        state = server.replace(round=server.round + 1, extra={"models": stack, "omega": omega})
        return ServerResult(state, self.broadcast(state))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["model"] if state is not None else ctx.init_params
