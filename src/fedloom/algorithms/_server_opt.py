"""Server optimizers over FedAvg's clients (Reddi et al., "Adaptive Federated Optimization", ICLR 2021, the
FedOpt framework): the server treats the weighted mean client update Δ = Σ p_i (w_i − θ) as a pseudo-gradient
(a descent direction with the sign flipped) and applies its own optimizer, whose moments live in
``ServerState.extra``. Subclasses give the moments' initial value and one step."""

from __future__ import annotations

from dataclasses import dataclass

from fedloom.algorithms.base import Broadcast, Federation, ServerResult, ServerState
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone
from fedloom.algorithms.uploads import Uploads


@dataclass(frozen=True)
class ServerOptimizer(FedAvg):
    """FedAvg's client; the server step θ ← θ + step(Δ, moments)."""

    def init_moments(self, params: Params) -> dict[str, Tree]:
        raise NotImplementedError

    def step(self, delta: Params, moments: dict[str, Tree]) -> tuple[Params, dict[str, Tree]]:
        """The update added to θ, and the new moments."""
        raise NotImplementedError

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        params = tree_clone(init_params)
        state = ServerState(params=params, extra=self.init_moments(params))
        return ServerResult(state, Broadcast(params=params))

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        delta = uploads.weighted_mean()
        if delta is None:  # nobody uploaded: no pseudo-gradient, the moments stay
            state = server.replace(round=server.round + 1)
        else:
            update, moments = self.step(delta, server.extra)
            state = server.replace(params=tree_add(server.params, update), round=server.round + 1, extra=moments)
        return ServerResult(state, Broadcast(params=state.params))
