"""SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, "SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning", ICML 2020), with option II control variates.

Server state: the global model θ and the server control c (sent with θ, so it counts as download bytes).
Client i keeps its control c_i (zeros at first). From y ← θ it takes K local steps on the corrected gradient
    y ← y − η (g_i(y) − c_i + c)
(the loop's ``grad_correction`` hook; c is shared and captured, c_i is per-client and comes through ``aux``),
then, option II:  c_i⁺ = c_i − c + (θ − y)/(K η).
It uploads Δy_i = y − θ and Δc_i = c_i⁺ − c_i.
Server (S the sampled clients, N all clients):  θ ← θ + η_g · (1/|S|) Σ Δy_i,  c ← c + (|S|/N) · (1/|S|) Σ Δc_i.
Clients are weighted equally, as in the paper and PFLlib; the mean is ``uploads.weighted_mean()`` so a
robust ``--aggregator`` replaces it. K is the number of steps actually taken (E epochs of batches); PFLlib
divides by the batches of one epoch only, which is the same for E = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

from fedloom.algorithms._fedopt import as_count, per_client_scale
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_scale, tree_sub, tree_zeros_like
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("scaffold")
@dataclass(frozen=True)
class Scaffold(Algorithm):
    global_lr: float = hp(1.0, gt=0, help="η_g, the server's step on the mean model update")

    # ------------------------------------------------------------------ server
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        params = tree_clone(init_params)
        extra = {"control": tree_zeros_like(params), "clients": torch.tensor(float(federation.num_clients))}
        state = ServerState(params=params, extra=extra)
        return ServerResult(state, self._broadcast(state))

    @staticmethod
    def _broadcast(state: ServerState) -> Broadcast:
        # the client count stays on the server; the control travels with the model
        return Broadcast(params=state.params, extra={"control": state.extra["control"]})

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        if mean is None:
            state = server.replace(round=server.round + 1)
            return ServerResult(state, self._broadcast(state))
        params = tree_add(server.params, tree_scale(mean["delta"], self.global_lr))
        share = uploads.count / float(server.extra["clients"])  # |S| / N
        control = tree_add(server.extra["control"], tree_scale(mean["control"], share))
        state = server.replace(params=params, round=server.round + 1, extra={**server.extra, "control": control})
        return ServerResult(state, self._broadcast(state))

    # ------------------------------------------------------------------ client
    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"control": tree_zeros_like(dict(init_params))}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        theta, c = broadcast.params, broadcast.extra["control"]
        own = state["control"]
        # c − c_i once per round: the hook adds it to every step's gradient
        correction = tree_sub(c, own)

        def corrected(params: Params, grads: Params, aux: Any) -> Params:
            return {name: g + aux["correction"][name] for name, g in grads.items()}

        trained, metrics = ctx.local_sgd(theta, grad_correction=corrected, aux={"correction": correction})
        delta = tree_sub(trained, theta)
        k_eta = as_count(metrics["steps"]) * ctx.sgd.lr
        # option II: c_i⁺ = c_i − c + (θ − y)/(Kη); Δc_i = c_i⁺ − c_i = −c − Δy/(Kη)
        drift = per_client_scale(ctx, delta, -1.0 / k_eta)
        new_own = tree_add(tree_sub(own, c), drift)
        upload = {"delta": delta, "control": tree_sub(new_own, own)}
        return ClientResult(upload=upload, state={"control": new_own}, weight=1.0, metrics=metrics)
