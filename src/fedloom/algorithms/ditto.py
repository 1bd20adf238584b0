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
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_sq_dist, tree_sub
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("ditto")
@dataclass(frozen=True)
class Ditto(FedAvg):
    mu: float = hp(0.1, ge=0, help="μ, the pull of the personal model toward the global one")
    # 0 would score every client with its never-trained initial model
    personal_epochs: int = hp(1, ge=1, help="epochs of the personal model per round")

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"personal": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        anchor = broadcast.params  # shared by every client: a closure is allowed
        personal = state["personal"]
        if self.personal_epochs:
            personal, _ = ctx.local_sgd(personal, epochs=self.personal_epochs, purpose="personal",
                                        extra_loss=lambda v, aux: 0.5 * self.mu * tree_sq_dist(v, anchor))
        trained, metrics = ctx.local_sgd(broadcast.params)
        return ClientResult(upload=tree_sub(trained, broadcast.params), state={"personal": personal},
                            weight=ctx.num_train_samples, metrics=metrics)

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["personal"]
