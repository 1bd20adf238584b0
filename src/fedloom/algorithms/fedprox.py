"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

Client objective: F_i(w) + (μ/2)‖w − θ‖², θ the received global model, minimized by the same local SGD as
FedAvg (so each step is w ← w − η(∇F_i(w) + μ(w − θ)), PFLlib's "perturbed gradient" step).
Server: FedAvg. μ = 0 recovers FedAvg exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedloom.algorithms.base import ALGORITHMS, Broadcast
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import tree_sq_dist
from fedloom.config import hp


@ALGORITHMS.register("fedprox")
@dataclass(frozen=True)
class FedProx(FedAvg):
    mu: float = hp(0.01, ge=0, help="μ, weight of the proximal term (0: FedAvg)")

    def local_hooks(self, broadcast: Broadcast) -> dict:
        if self.mu == 0:
            return {}
        anchor = broadcast.params
        # the anchor is the broadcast, shared by every client, so a closure is fine here
        return {"extra_loss": lambda w, aux: 0.5 * self.mu * tree_sq_dist(w, anchor)}
