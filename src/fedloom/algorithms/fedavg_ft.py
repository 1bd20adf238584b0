"""FedAvg-FT: FedAvg training; before evaluation each client fine-tunes the received global model on its own
training data for ``ft_epochs`` epochs and is scored with the fine-tuned copy.

This is the "FedAvg + local fine-tuning" baseline (FedAvg-C in Zhang et al., FedALA, AAAI 2023; definition (b)
of the reference notes). The fine-tuned copy is transient: it is never uploaded and never kept, so training
is exactly FedAvg's; only what each client is evaluated with changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fedloom.algorithms.base import ALGORITHMS, Broadcast
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fedavg-ft")
@dataclass(frozen=True)
class FedAvgFT(FedAvg):
    ft_epochs: int = hp(1, ge=0, help="fine-tuning epochs before evaluation (0: score the global model)")
    ft_lr: Optional[float] = hp(None, gt=0, help="fine-tuning learning rate (None: the run's --lr)")

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        if self.ft_epochs == 0:
            return broadcast.params
        tuned, _ = ctx.local_sgd(broadcast.params, epochs=self.ft_epochs, lr=self.ft_lr, purpose="finetune")
        return tuned
