"""FedBABU (Oh, Kim, Yun, "FedBABU: Towards Enhanced Representation for Federated Image Classification",
ICLR 2022).

During federation the head stays at its random initialisation (identical on every client, since all start
from the same initial model) and only the body is trained: E epochs of SGD on CE(h_0 ∘ φ) with h_0 frozen;
upload φ_i − φ; server FedAvg on the body. Until the last round a client is scored with [φ, h_0]. In the last
round (``ctx.round == ctx.total_rounds``) every client first fine-tunes the whole model (body and head, as
PFLlib's ``fine_tune()``) for ``finetune_epochs`` epochs from [φ, h_0] and is scored with the result, which is
how the paper and PFLlib report FedBABU. Default ``finetune_epochs`` = 10 (PFLlib ``-fte``). No deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fedloom.algorithms._body_sharing import BodySharing
from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.tree import Params, Tree
from fedloom.config import hp
from fedloom.models.base import is_body

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fedbabu")
@dataclass(frozen=True)
class FedBABU(BodySharing):
    finetune_epochs: int = hp(10, ge=0, help="epochs of whole-model fine-tuning in the last round")

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        trained, metrics = ctx.local_sgd(self.local_model(broadcast, state), trainable=is_body)
        return self.body_result(ctx, broadcast, trained, metrics)

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        model = self.local_model(broadcast, state)
        if ctx.round < ctx.total_rounds or self.finetune_epochs == 0:
            return model
        tuned, _ = ctx.local_sgd(model, epochs=self.finetune_epochs, purpose="finetune")
        return tuned
