"""FedPer (Arivazhagan, Aggarwal, Singh, Choudhary, "Federated Learning with Personalization Layers",
arXiv 1912.00818, 2019).

The model is split into base layers (``body.*``), shared, and personalization layers (``head.*``), local.
Client: w = [φ (received), h_i (own)]; E epochs of SGD on CE over the whole model; upload φ_i − φ only.
Server: φ ← φ + Σ_i (n_i/Σn) (φ_i − φ) (FedAvg on the body). Each client is scored with [φ, h_i] right after
the download, as PFLlib does. PFLlib matches the paper here (its server also sends the head, which clients
ignore; we do not send it, so bytes down count the body only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fedloom.algorithms._body_sharing import BodySharing
from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.tree import Tree

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fedper")
@dataclass(frozen=True)
class FedPer(BodySharing):
    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        trained, metrics = ctx.local_sgd(self.local_model(broadcast, state))
        return self.body_result(ctx, broadcast, trained, metrics)
