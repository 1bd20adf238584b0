"""FedRep (Collins, Hassani, Mokhtari, Shakkottai, "Exploiting Shared Representations for Personalized
Federated Learning", ICML 2021).

Client, from w = [φ (received), h_i (own)]:
  1. h_i ← argmin_h CE(h ∘ φ) by ``head_epochs`` epochs of SGD with φ frozen;
  2. φ_i ← E epochs of SGD on CE(h_i ∘ φ) with the new h_i frozen.
Upload φ_i − φ (the head never leaves the client). Server: FedAvg on the body. Scored with [φ, h_i] after the
download. Defaults: ``head_epochs`` = 1 as PFLlib's ``-pls`` (the paper uses about 10 head epochs); the head
and body phases use the run's lr (PFLlib: two SGD optimizers with the same lr). No PFLlib deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fedloom.algorithms._body_sharing import BodySharing
from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.tree import Tree
from fedloom.config import hp
from fedloom.models.base import is_body, is_head

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fedrep")
@dataclass(frozen=True)
class FedRep(BodySharing):
    # 0 would train the body under, and score with, a never-trained random head
    head_epochs: int = hp(1, ge=1, help="head epochs (body frozen) before the body epochs")

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        params = self.local_model(broadcast, state)
        if self.head_epochs:
            params, _ = ctx.local_sgd(params, epochs=self.head_epochs, trainable=is_head, purpose="head")
        trained, metrics = ctx.local_sgd(params, trainable=is_body)
        return self.body_result(ctx, broadcast, trained, metrics)
