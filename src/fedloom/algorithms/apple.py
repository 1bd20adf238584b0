"""APPLE (Luo, Wu, "Adapt to Adaptation: Learning Personalization for Cross-Silo Federated Learning",
IJCAI 2022).

Every client i owns a core model c_i (uploaded) and a directed-relationship vector p_i ∈ ℝ^N (local, starts at
1/N). The server keeps every client's latest core and sends all N of them to everyone (N·|M| bytes down).
Client i's personalized model is w_i = Σ_j p_ij c_j, with its own core c_i the one being trained. Each batch,
with g = ∇_w CE(w_i):
    c_i  ← c_i − η p_ii g                                       (the chain rule through w_i)
    p_ij ← p_ij − η_p (⟨g, c_j⟩ + λ_t μ (p_ij − p0_j))           (p0 = the clients' sample fractions)
where λ_t = (1 + cos(π (t − 1) / (L·R))) / 2 for the first L·R rounds, then 0. Upload c_i; the server stores
it. Scored with Σ_j p_ij c_j over the cores just downloaded. PFLlib trains all N clients every round: run
APPLE with --join-ratio 1 (the default) for that; with partial participation the others' cores stay as last
uploaded.

Defaults: ``dr_lr`` (η_p) = 0.01, ``mu`` = 0.1, ``L`` = 1.0. PFLlib's argparse has η_p = 0 and μ = 0, which
turns the method off, so these are ours, to tune. ``pfllib_compat = True`` reproduces PFLlib's client: the
core lr is multiplied by N; λ lags by one round (PFLlib sets it at the end of a round for the next); the
p-gradient is the per-layer *mean* of g ⊙ c_j averaged over layers instead of the inner product; after the
round the client's core is replaced by its personalized model Σ_j p_ij c_j; and a client is scored with that
model, its own new core (PFLlib evaluates each client's ``model``, the mix of its last batch; re-mixing the new
cores, which are themselves every client's mix, with p_i gives a near-global model: 7.3 → 13.1% over 10 rounds
on the parity subsample against PFLlib's 9.5 → 58.0%, docs/results/pfllib-parity.md).
PFLlib's clients also train one after another on shared core objects: a client reads the cores that clients
before it in the round have already trained, and the mixes replace the cores only when the round ends. Run
``--pattern cyclic`` for that sweep: the compat client uploads its trained core and its mix (two models), the
server publishes the core at once and the mix at the round's last step. In the star pattern the round has one
step, so the mixes replace the cores at once, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms._naming import model_part, tag_name
from fedloom.algorithms._stacks import repeated, row, weighted_rows, with_rows
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

DR = tag_name("apple", "p")  # the DR vector's entry in the flat training dict (see _naming)


@ALGORITHMS.register("apple")
@dataclass(frozen=True)
class APPLE(Algorithm):
    aggregation = "all"
    dr_lr: float = hp(0.01, ge=0, help="η_p, learning rate of the DR vector")
    mu: float = hp(0.1, ge=0, help="μ, pull of p toward the sample fractions p0")
    L: float = hp(1.0, ge=0, help="share of the rounds over which the pull anneals to 0")
    pfllib_compat: bool = False

    # ------------------------------------------------------------------ server
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        sizes = torch.tensor(federation.train_sizes, dtype=torch.float32)
        extra = {"cores": repeated(init_params, federation.num_clients), "p0": sizes / sizes.sum()}
        return ServerResult(ServerState(params={}, extra=extra), Broadcast(params={}, extra=extra))

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        items = uploads.all()
        if not self.pfllib_compat:
            cores = with_rows(server.extra["cores"], {cid: upload for cid, upload, _ in items})
            extra = {"cores": cores, "p0": server.extra["p0"]}
            state = server.replace(round=server.round + 1, extra=extra)
            return ServerResult(state, Broadcast(params={}, extra=extra))
        # PFLlib: a client's trained core is what later clients of the round read; its mix replaces it when the
        # round ends (with every step at once in the star pattern, the mixes at once)
        cores = with_rows(server.extra["cores"], {cid: up["core"] for cid, up, _ in items})
        pending = with_rows(server.extra.get("pending", server.extra["cores"]),
                            {cid: up["mix"] for cid, up, _ in items})
        if uploads.context is None or uploads.context.ends_round:
            cores = pending
        extra = {"cores": cores, "pending": pending, "p0": server.extra["p0"]}
        down = {"cores": cores, "p0": server.extra["p0"]}
        return ServerResult(server.replace(round=server.round + 1, extra=extra), Broadcast(params={}, extra=down))

    # ------------------------------------------------------------------ client
    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        cores, p0 = broadcast.extra["cores"], broadcast.extra["p0"]
        n = p0.shape[0]
        core_lr = ctx.sgd.lr * (n if self.pfllib_compat else 1)
        own = F.one_hot(torch.tensor(ctx.client_id), n).to(p0.dtype)
        start = {**row(cores, ctx.client_id), DR: self.dr_vector(state, n)}
        trained, metrics = ctx.local_sgd(
            start, lr=core_lr, batch_loss=self.personal_loss(cores, own, ctx),
            extra_loss=self.dr_penalty(ctx, p0), grad_correction=self.dr_rate(core_lr))
        core, p = model_part(trained), trained[DR]
        if self.pfllib_compat:  # the trained core (read by the round's later clients) and the client's mix
            upload = {"core": core, "mix": weighted_rows(p, with_own_core(cores, core, own))}
        else:
            upload = core
        return ClientResult(upload=upload, state={"p": p}, weight=ctx.num_train_samples, metrics=metrics)

    @staticmethod
    def dr_vector(state: Optional[Tree], n: int) -> torch.Tensor:
        return torch.full((n,), 1.0 / n) if state is None else state["p"]

    def personal_loss(self, cores: Params, own: torch.Tensor, ctx: ClientContext):
        # PFLlib's p-gradient averages g ⊙ c_j per layer, then over layers; the paper's is the inner product
        scale = ({name: 1.0 / (len(cores) * value[0].numel()) for name, value in cores.items()}
                 if self.pfllib_compat else {name: 1.0 for name in cores})
        # per-client tensors in a closure are safe here: ctx.client_id already keeps APPLE off the vectorized path
        others = without_own_core(cores, own)  # constant all round: no N×|M| tensor per batch

        def loss(params: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            p, core = params[DR], model_part(params)
            personal = {}
            for name, stack in others.items():
                # value Σ_j p_j c_j (own row = the live core); ∂/∂core = p_own g, ∂/∂p_j = scale·⟨g, c_j⟩
                scaled_p = p.detach() + (p - p.detach()) * scale[name]
                personal[name] = (torch.tensordot(scaled_p, stack, dims=1)
                                  + (scaled_p * own).sum() * core[name])
            return ctx.task_loss(ctx.apply(personal, x), y)

        return loss

    def dr_penalty(self, ctx: ClientContext, p0: torch.Tensor):
        strength = self.mu * self.anneal(ctx)  # shared by every client
        return lambda params, aux: 0.5 * strength * (params[DR] - p0).pow(2).sum()

    def anneal(self, ctx: ClientContext) -> float:
        horizon = int(self.L * ctx.total_rounds)
        # PFLlib's client sets λ at the end of its round for the next one, so its λ lags the paper's by one round
        elapsed = max(ctx.round - 2, 0) if self.pfllib_compat else ctx.round - 1
        return (math.cos(math.pi * elapsed / horizon) + 1) / 2 if elapsed < horizon else 0.0

    def dr_rate(self, core_lr: float):
        ratio = self.dr_lr / core_lr  # p steps with η_p although the loop steps with the core's lr

        def correct(params: Params, grads: Params, aux: Any) -> Params:
            return {**grads, DR: grads[DR] * ratio}

        return correct

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        cores = broadcast.extra["cores"]
        if self.pfllib_compat:  # PFLlib scores a client's `model`: its own mix, which is also its new core
            return row(cores, ctx.client_id)
        return weighted_rows(self.dr_vector(state, broadcast.extra["p0"].shape[0]), cores)


def without_own_core(cores: Params, own: torch.Tensor) -> Params:
    """The stack of cores with row ``own`` (a one-hot vector) zeroed: the live core enters the mix separately."""
    return {name: value * (1 - own).view(-1, *([1] * (value.dim() - 1))) for name, value in cores.items()}


def with_own_core(cores: Params, core: Params, own: torch.Tensor) -> Params:
    """The stack of cores with row ``own`` (a one-hot vector) replaced by this client's current core."""
    return {name: value + own.view(-1, *([1] * core[name].dim())) * (core[name] - value)
            for name, value in cores.items()}
