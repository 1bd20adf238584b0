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
from fedloom.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fedavg-ft")
@dataclass(frozen=True)
class FedAvgFT(FedAvg):
    personalized = True
    ft_epochs: int = 1
    ft_lr: Optional[float] = None  # None: the run's --lr

    def validate(self) -> None:
        if self.ft_epochs < 0:
            raise ConfigError(f"fedavg-ft.ft_epochs must be >= 0, got {self.ft_epochs}")
        if self.ft_lr is not None and not self.ft_lr > 0:
            raise ConfigError(f"fedavg-ft.ft_lr must be > 0, got {self.ft_lr}")

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        if self.ft_epochs == 0:
            return broadcast.params
        tuned, _ = ctx.local_sgd(broadcast.params, epochs=self.ft_epochs, lr=self.ft_lr, purpose="finetune")
        return tuned
