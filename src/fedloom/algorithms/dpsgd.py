"""D-PSGD (Lian, Zhang, Zhang, Hsieh, Zhang, Liu, "Can Decentralized Algorithms Outperform Centralized
Algorithms? A Case Study for Decentralized Parallel Stochastic Gradient Descent", NeurIPS 2017), run with
``--pattern gossip --topology ring``.

Every node i holds x_i. One iteration, all nodes in parallel:
    x_i ← Σ_j W_ij x_j − γ ∇F_i(x_i; ξ_i)
i.e. the gradient is taken at the node's *own* current model and added to the neighbourhood average of the
current models (Algorithm 1 of the paper). Here the gradient step is the run's local SGD (``--local-epochs``,
``--batch-size``; one minibatch step per iteration is ``--batch-size`` = the node's data size or fewer
samples per node), so a node sends x_i (its message to the neighbours) and keeps Δ_i = local_sgd(x_i) − x_i,
and after the gossip sets x_i ← Σ_j W_ij x_j + Δ_i. Nodes are scored with their own x_i; the run also reports
the average model and the consensus distance (fedloom.patterns.gossip).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from fedloom.algorithms.base import ALGORITHMS, Algorithm, Broadcast, ClientResult, ServerResult, ServerState
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("dpsgd")
@dataclass(frozen=True)
class DPSGD(Algorithm):
    aggregation: ClassVar[str] = "all"  # the gossip pattern mixes every node's message itself
    patterns: ClassVar[tuple[str, ...]] = ("gossip",)

    def init_client_state(self, init_params: Params) -> Optional[Tree]:
        return {"params": tree_clone(init_params)}

    def client_update(self, ctx: "ClientContext", broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        current = state["params"]
        trained, metrics = ctx.local_sgd(current)
        return ClientResult(upload=current, state={"params": current, "step": tree_sub(trained, current)},
                            weight=1.0, metrics=metrics)

    def after_gossip(self, state: Optional[Tree], mixed: Params) -> Tree:
        """x_i ← Σ_j W_ij x_j + Δ_i."""
        return {"params": tree_add(mixed, state["step"])}

    @staticmethod
    def node_params(state: Tree) -> Params:
        return state["params"]

    def eval_params(self, ctx: "ClientContext", broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return broadcast.params if state is None else state["params"]

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        raise ConfigError("dpsgd has no server step; run it with --pattern gossip")

