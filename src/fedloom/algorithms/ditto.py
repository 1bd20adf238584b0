"""Ditto (Li, Hu, Beirami, Smith, "Ditto: Fair and Robust Federated Learning Through Personalization",
ICML 2021).

Client i keeps a personal model v_i. Each round, from the received global θ:
  1. v_i ← ``personal_epochs`` epochs of SGD on CE(v) + (μ/2)‖v − θ‖² (the personal objective, anchored at θ);
  2. w_i ← E epochs of plain SGD on CE(w) from θ (the global objective: exactly FedAvg's client).
Upload w_i − θ; server: FedAvg. The client is scored with v_i. Order and squared norm as in PFLlib
(``ptrain`` then ``train``; PerturbedGradientDescent adds μ(v − θ) to the gradient).

Defaults: ``mu`` = 0.1 (the paper tunes λ over {0.05, 0.1, 0.2, 1, 2}; PFLlib's argparse default 0 would make
the personal model plain local training), ``personal_epochs`` = 1 (PFLlib ``-pls``). PFLlib also appends the
global model's accuracy to the same curve it takes the best of; we score only v_i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms._naming import sq_dist
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_sub
from fedloom.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("ditto")
@dataclass(frozen=True)
class Ditto(FedAvg):
    personalized = True
    mu: float = 0.1
    personal_epochs: int = 1

    def validate(self) -> None:
        if not self.mu >= 0:
            raise ConfigError(f"ditto.mu must be >= 0, got {self.mu}")
        if self.personal_epochs < 1:  # 0 would score every client with its never-trained initial model
            raise ConfigError(f"ditto.personal_epochs must be >= 1, got {self.personal_epochs}")

    def init_client_state(self, init_params: Params) -> Optional[Tree]:
        return {"personal": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        anchor = broadcast.params  # shared by every client: a closure is allowed
        personal = state["personal"]
        if self.personal_epochs:
            personal, _ = ctx.local_sgd(personal, epochs=self.personal_epochs, purpose="personal",
                                        extra_loss=lambda v, aux: 0.5 * self.mu * sq_dist(v, anchor))
        trained, metrics = ctx.local_sgd(broadcast.params)
        return ClientResult(upload=tree_sub(trained, broadcast.params), state={"personal": personal},
                            weight=ctx.num_train_samples, metrics=metrics)

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["personal"]
