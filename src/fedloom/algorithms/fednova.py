"""FedNova (Wang, Liu, Liang, Joshi, Poor, "Tackling the Objective Inconsistency Problem in Heterogeneous
Federated Optimization", NeurIPS 2020): normalized averaging.

Client i runs τ_i local steps of SGD from θ and uploads its normalized update d_i = (w_i − θ)/‖a_i‖₁ together
with ‖a_i‖₁, where ‖a_i‖₁ = τ_i for plain SGD and, with the run's momentum ρ (``--momentum``),
‖a_i‖₁ = [τ_i − ρ(1 − ρ^τ_i)/(1 − ρ)]/(1 − ρ) (the paper's momentum case). Server, with p_i = n_i/Σn:
    τ_eff = Σ p_i ‖a_i‖₁,      θ ← θ + η_g τ_eff Σ p_i d_i.
Both sums are one ``uploads.weighted_mean()`` of the upload {d_i, ‖a_i‖₁} with weights n_i. When every client
takes the same number of steps this is FedAvg; ``normalize = false`` is FedAvg under the same local work
(the comparison the paper makes).

Heterogeneous local work (what FedNova is for): the shared local SGD has one epoch count per run, so the
heterogeneity is an option of this algorithm: with ``max_epochs`` > 0 each client draws its epochs uniformly
from {min_epochs, ..., max_epochs} every round, from its own seeded stream (the paper's experiments draw
E_i ∈ [2, 5]); unequal data sizes also give unequal τ_i. The draw needs a per-client generator, which a
vectorized pack cannot give, so with ``max_epochs`` > 0 the vectorized engine runs FedNova serially.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from fedloom.algorithms._fedopt import as_count, per_client_scale
from fedloom.algorithms.base import ALGORITHMS, Algorithm, Broadcast, ClientResult, ServerResult, ServerState
from fedloom.algorithms.tree import Tree, tree_add, tree_scale, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


def momentum_norm(steps: torch.Tensor, rho: float) -> torch.Tensor:
    """‖a‖₁ of τ steps of heavy-ball SGD with momentum ρ (τ itself for ρ = 0)."""
    if rho == 0:
        return steps
    return (steps - rho * (1 - rho ** steps) / (1 - rho)) / (1 - rho)


@ALGORITHMS.register("fednova")
@dataclass(frozen=True)
class FedNova(Algorithm):
    global_lr: float = hp(1.0, gt=0, help="η_g, the server's step on τ_eff Σ p_i d_i")
    normalize: bool = hp(True, help="false: plain FedAvg averaging of the same local work (the baseline)")
    min_epochs: int = hp(1, ge=1, help="heterogeneous work: fewest local epochs a client may draw")
    max_epochs: int = hp(0, ge=0, help="heterogeneous work: most local epochs a client may draw "
                                       "(0: every client runs --local-epochs)")

    def validate(self) -> None:
        super().validate()
        if self.max_epochs and self.max_epochs < self.min_epochs:
            raise ConfigError(f"fednova.max_epochs ({self.max_epochs}) must be >= fednova.min_epochs "
                              f"({self.min_epochs}) or 0")

    def local_epochs(self, ctx: ClientContext) -> Optional[int]:
        """This client's epochs this round: drawn when heterogeneity is on, else the run's (None)."""
        if not self.max_epochs:
            return None
        span = self.max_epochs - self.min_epochs + 1
        return self.min_epochs + int(torch.randint(span, (1,), generator=ctx.generator("fednova-epochs")))

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        trained, metrics = ctx.local_sgd(broadcast.params, epochs=self.local_epochs(ctx))
        delta = tree_sub(trained, broadcast.params)
        a_norm = momentum_norm(as_count(metrics["steps"]), ctx.sgd.momentum)
        normalized = per_client_scale(ctx, delta, 1.0 / a_norm) if self.normalize else delta
        upload = {"d": normalized, "a": a_norm}
        return ClientResult(upload=upload, state=state, weight=ctx.num_train_samples, metrics=metrics)

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        metrics = {}
        if mean is None:
            params = server.params
        else:
            tau_eff = mean["a"] if self.normalize else torch.ones(())
            params = tree_add(server.params, tree_scale(mean["d"], float(tau_eff) * self.global_lr))
            metrics = {"tau_eff": float(mean["a"])}
        state = server.replace(params=params, round=server.round + 1)
        return ServerResult(state, Broadcast(params=params), metrics)
