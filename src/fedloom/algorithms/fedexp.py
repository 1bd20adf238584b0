"""FedExP (Jhunjhunwala, Wang, Joshi, "FedExP: Speeding Up Federated Averaging via Extrapolation", ICLR 2023).

Clients as FedAvg, plus the squared norm of their update ‖Δ_i‖² (4 bytes) so that the server step stays one
weighted mean. Server, Δ̄ = Σ p_i Δ_i:
    η_g = max(1, Σ p_i ‖Δ_i‖² / (2 (‖Δ̄‖² + ε))),     θ ← θ + η_g Δ̄
(the paper's adaptive extrapolation; its clients are weighted equally, p_i = 1/M, here p_i = n_i/Σn like
FedAvg, which is the paper's rule when the clients hold equal data).

Evaluation (``eval_average``): the extrapolated iterates oscillate (a large η_g overshoots, the next round's
small one comes back), and the official code (Divyansh03/FedExP, ``main.py``) therefore evaluates the average
of the last two global models, (θ_t + θ_{t−1})/2 from the second round on, while training goes on from θ_t.
Off by default (the last iterate, as every other algorithm here); the average is the server's own model, so
the bytes counted stay those of θ_t, the only model a client trains from. The official code's denominator is
‖Δ̄‖² + M·ε with ε decayed by 0.998² per round (and the local lr by 0.998); this file keeps the paper's
‖Δ̄‖² + ε and the run's fixed lr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult, ServerResult, ServerState
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_scale, tree_sq_norm, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.pipeline.wire import Compact

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fedexp")
@dataclass(frozen=True)
class FedExP(FedAvg):
    eps: float = hp(1e-3, gt=0, help="ε, keeps the step bounded when the mean update is tiny")
    eval_average: bool = hp(False, help="evaluate (θ_t + θ_{t−1})/2, the official code's reported model, "
                                        "instead of the last iterate (training is unchanged)")

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        trained, metrics = ctx.local_sgd(broadcast.params)
        delta = tree_sub(trained, broadcast.params)
        upload = {"delta": delta, "sq_norm": ctx.per_client(tree_sq_norm, delta)}
        return ClientResult(upload=upload, state=state, weight=ctx.num_train_samples, metrics=metrics)

    def server_step(self, mean: Tree) -> float:
        """η_g from the mean squared client norm and the mean update."""
        spread = float(mean["sq_norm"]) / (2 * (float(tree_sq_norm(mean["delta"])) + self.eps))
        return max(1.0, spread)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        if mean is None:
            state = server.replace(round=server.round + 1)
            return ServerResult(state, Broadcast(params=state.params))
        eta = self.server_step(mean)
        params = tree_add(server.params, tree_scale(mean["delta"], eta))
        state = server.replace(params=params, round=server.round + 1)
        return ServerResult(state, self.broadcast(params, server.params, server.round), {"eta_g": eta})

    def broadcast(self, params: Params, previous: Params, round_: int) -> Broadcast:
        """θ_t; with ``eval_average`` also the model evaluated, carried beside it but not counted (the wire
        form is θ_t alone), since it is the server's and changes nothing a client sends or trains."""
        if not self.eval_average or round_ == 0:  # the first round has no earlier iterate worth averaging
            return Broadcast(params=params)
        mid = tree_scale(tree_add(params, previous), 0.5)
        return Broadcast(params=params, extra={"evaluated": mid}, wire=Compact(dict(params), dict))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return broadcast.extra.get("evaluated", broadcast.params)

    def check_deployable(self) -> None:
        if self.eval_average:
            raise ConfigError("fedexp.eval_average evaluates a model the server keeps to itself; a deployment "
                              "evaluates it on the server, so run without it on real transports")
