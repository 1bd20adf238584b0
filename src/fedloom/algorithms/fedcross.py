"""FedCross (M. Hu, P. Zhou, Z. Yue, Z. Ling, Y. Huang, A. Li, Y. Liu, X. Lian, M. Chen, "FedCross: Towards
Accurate Federated Learning via Multi-Model Cross-Aggregation", ICDE 2024, arXiv 2210.08285). PFLlib:
``servercross.py`` / ``clientcross.py``.

The server keeps K *middleware* models instead of one global model. Every round each middleware model is sent
to a client (a fresh random assignment every round, drawn from the (seed, round, "fedcross-assign") stream),
trained there by plain local SGD and sent back. Then every middleware model w_j is cross-aggregated with one
collaborative model w_c chosen among the others:
    w_j ← α·w_j + (1 − α)·w_c,   α = 0.99 by default,
where c is, by the selection strategy, the next model in a rotating order ("in-order": c = (j + o) mod K with
o = r mod (K − 1) + 1 at round r), the least similar one ("lowest", PFLlib's default) or the most similar one
("highest"), similarity being the cosine of the flattened models. During the first ``first_stage_bound`` rounds
every middleware model is replaced by the FedAvg of the uploads instead.

The global model, used only for inference (it is what a client is scored with), is the federated average of the
round's trained middleware models (the paper's deployment step; PFLlib's ``aggregate_parameters``, sample
weights); clients never download it, so a client's
download is its one middleware model (a personal broadcast) and its upload the trained model.
K = ``models`` (0: one per client, PFLlib's K = number of joining clients at join ratio 1). With K < N, client
c trains middleware perm(c) mod K; a middleware model trained by several clients of the cohort becomes their
sample-weighted mean, one trained by nobody stays as it was.

PFLlib deviations (``pfllib_compat=True`` follows PFLlib): its similarity is a sum of cosines over consecutive
pairs of parameter tensors (weight and bias of each layer) instead of one cosine over the whole model, and it
scores each client with the middleware model that client trained last, not the global model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms._stacks import repeated, row, with_rows
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.pipeline.wire import Compact
from fedloom.seeding import torch_generator

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

STRATEGIES = ("in-order", "highest", "lowest")


def similarity(stack: Params, layer_pairs: bool = False) -> torch.Tensor:
    """[K, K] cosine similarity of the K stacked models (flattened); ``layer_pairs``: PFLlib's sum of the
    cosines of consecutive pairs of tensors (and of the last pair once more when the count is odd)."""
    if not layer_pairs:
        flat = torch.cat([v.flatten(1) for v in stack.values()], dim=1).double()
        unit = F.normalize(flat, dim=1)
        return unit @ unit.T
    names, total = list(stack), 0
    for start in range(0, len(names), 2):
        flat = torch.cat([stack[n].flatten(1) for n in names[start:start + 2]], dim=1).double()
        unit = F.normalize(flat, dim=1)
        total = total + unit @ unit.T
    if len(names) % 2 == 1:  # PFLlib adds its last (unpaired) chunk a second time after the loop
        unit = F.normalize(stack[names[-1]].flatten(1).double(), dim=1)
        total = total + unit @ unit.T
    return total


def collaborator(sim: torch.Tensor, strategy: str, round_: int) -> torch.Tensor:
    """[K] index of the collaborative model of each middleware model (never itself, K ≥ 2)."""
    k = sim.shape[0]
    if strategy == "in-order":
        return (torch.arange(k) + round_ % (k - 1) + 1) % k
    eye = torch.eye(k, dtype=torch.bool)
    if strategy == "highest":
        return sim.masked_fill(eye, float("-inf")).argmax(1)
    return sim.masked_fill(eye, float("inf")).argmin(1)


def cross_aggregate(stack: Params, partner: torch.Tensor, alpha: float) -> Params:
    """w_j ← α w_j + (1 − α) w_partner(j), every middleware model at once."""
    return {n: alpha * v + (1 - alpha) * v[partner] for n, v in stack.items()}


@ALGORITHMS.register("fedcross")
@dataclass(frozen=True)
class FedCross(Algorithm):
    aggregation = "all"  # each upload updates its own middleware model
    alpha: float = hp(0.99, gt=0, le=1, help="α, weight a middleware model keeps in cross-aggregation (1: none)")
    strategy: str = hp("lowest", choices=STRATEGIES, help="how the collaborative model is chosen")
    first_stage_bound: int = hp(0, ge=0, help="rounds in which every middleware model is reset to FedAvg")
    models: int = hp(0, ge=0, help="K, number of middleware models (0: one per client)")
    pfllib_compat: bool = False  # True: PFLlib's layer-pair similarity; score each client's last trained model

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        k = self.models or federation.num_clients
        extra = {"middleware": repeated(init_params, k), "seed": torch.tensor(getattr(init_params, "seed", 0)),
                 "assign": torch.zeros(federation.num_clients, dtype=torch.long)}
        state = ServerState(params=tree_clone(init_params), extra=extra)
        return ServerResult(state, self.broadcast(state))

    def broadcast(self, state: ServerState) -> Broadcast:
        """Client c gets middleware model perm(c) mod K; the global model (params) is the server's, not sent."""
        n, stack = state.extra["assign"].numel(), state.extra["middleware"]
        k = next(iter(stack.values())).shape[0]
        gen = torch_generator(int(state.extra["seed"]), state.round, -1, "fedcross-assign")
        assign = torch.randperm(n, generator=gen) % k
        state.extra["assign"] = assign
        personal = {cid: {"model": row(stack, int(assign[cid]))} for cid in range(n)}
        return Broadcast(params=state.params, personal=personal, wire=Compact({}, dict))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"model": tree_clone(init_params)} if self.pfllib_compat else None

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        trained, metrics = ctx.local_sgd(broadcast.personal["model"])
        new_state = {"model": trained} if self.pfllib_compat else state
        return ClientResult(upload=trained, state=new_state, weight=ctx.num_train_samples, metrics=metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        items, stack = uploads.all(), server.extra["middleware"]
        extra = dict(server.extra)
        params = server.params
        if items:
            total = sum(w for _, _, w in items)
            params = {n: sum(w * up[n] for _, up, w in items) / total for n in server.params}
            stack = self.trained_middleware(stack, items, server.extra["assign"])
            if server.round < self.first_stage_bound:
                stack = repeated(params, next(iter(stack.values())).shape[0])
            elif next(iter(stack.values())).shape[0] > 1 and self.alpha < 1:
                partner = collaborator(similarity(stack, self.pfllib_compat), self.strategy, server.round)
                stack = cross_aggregate(stack, partner, self.alpha)
        extra["middleware"] = stack
        state = server.replace(params=params, round=server.round + 1, extra=extra)
        return ServerResult(state, self.broadcast(state))

    @staticmethod
    def trained_middleware(stack: Params, items: list, assign: torch.Tensor) -> Params:
        """Each middleware model replaced by the sample-weighted mean of the cohort's models trained from it."""
        groups: dict[int, list] = {}
        for cid, up, w in items:
            groups.setdefault(int(assign[cid]), []).append((up, w))
        rows = {j: {n: sum(w * up[n] for up, w in group) / sum(w for _, w in group) for n in stack}
                for j, group in groups.items()}
        return with_rows(stack, rows)

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        if self.pfllib_compat and state is not None:
            return state["model"]
        return broadcast.params
