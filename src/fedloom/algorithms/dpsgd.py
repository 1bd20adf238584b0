"""D-PSGD (Lian, Zhang, Zhang, Hsieh, Zhang, Liu, "Can Decentralized Algorithms Outperform Centralized
Algorithms? A Case Study for Decentralized Parallel Stochastic Gradient Descent", NeurIPS 2017), run with
``--pattern gossip --topology ring``.

Every node i holds x_i. One iteration, all nodes in parallel:
    x_i ← Σ_j W_ij x_j − γ ∇F_i(x_i; ξ_i)
i.e. the gradient is taken at the node's *own* current model and added to the neighbourhood average of the
current models (Algorithm 1 of the paper). One round is one such iteration: the node sends x_i (its message to
the neighbours), takes ``steps`` minibatch SGD steps of ``--batch-size`` samples from x_i (1: the paper's
single stochastic gradient; the minibatches are drawn from the node's seeded stream), keeps
Δ_i = x_i' − x_i, and after the gossip sets x_i ← Σ_j W_ij x_j + Δ_i. ``steps = 0`` takes ``--local-epochs``
full epochs instead: local updates computed at x_i but added to the neighbourhood average grow stale with many
steps, so node models then drift apart (the consensus distance grows) while their average still learns.
Nodes are scored with their own x_i; the run also reports the average model and the consensus distance
(fedloom.patterns.gossip).

``order`` picks the variant: ``cta`` (combine-then-adapt, the above, the default) or ``atc`` (adapt-then-combine:
the node sends its trained model and takes the neighbourhood average of the trained models,
x_i ← Σ_j W_ij (x_j + Δ_j); the "gradient first, then gossip" form, cf. Sayed, "Adaptive Networks", Proc. IEEE
2014).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

import torch

from fedloom.algorithms.base import ALGORITHMS, Algorithm, Broadcast, ClientResult, ServerResult, ServerState
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@dataclass(frozen=True)
class GossipNode(Algorithm):
    """What every gossip algorithm shares: the node's state holds its model, one round takes ``steps`` minibatch
    SGD steps (0: ``--local-epochs`` epochs), nodes are scored with their own model and there is no server."""

    aggregation: ClassVar[str] = "all"  # the gossip pattern mixes every node's message itself
    patterns: ClassVar[tuple[str, ...]] = ("gossip",)
    steps: int = hp(1, ge=0, help="minibatch SGD steps per iteration (0: --local-epochs full epochs)")

    def validate(self) -> None:
        if isinstance(self.steps, bool) or self.steps < 0:
            raise ConfigError(f"{self.registry_name}.steps must be an integer >= 0 (0: --local-epochs full "
                              f"epochs), got {self.steps}")
        super().validate()

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"params": tree_clone(init_params)}

    def local_step(self, ctx: "ClientContext", current: Params) -> tuple[Params, dict[str, float]]:
        """The node's SGD from ``current``: ``steps`` minibatches, or full epochs when ``steps`` is 0."""
        if self.steps:
            return ctx.local_sgd(current, indices=self._minibatches(ctx), epochs=1)
        return ctx.local_sgd(current)

    def _minibatches(self, ctx: "ClientContext") -> torch.Tensor:
        """``steps`` minibatches of the node's training samples, drawn without replacement (wrapping around
        when the node holds fewer samples than ``steps · batch_size``)."""
        own = ctx.train_indices
        need = self.steps * ctx.sgd.batch_size
        order = torch.cat([torch.randperm(own.numel(), generator=ctx.generator("dpsgd-minibatch"))
                           for _ in range(-(-need // own.numel()))])
        return own[order[:need]]

    @staticmethod
    def node_params(state: Tree) -> Params:
        return state["params"]

    def eval_params(self, ctx: "ClientContext", broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return broadcast.params if state is None else state["params"]

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        raise ConfigError(f"{self.registry_name} has no server step; run it with --pattern gossip")


@ALGORITHMS.register("dpsgd")
@dataclass(frozen=True)
class DPSGD(GossipNode):
    order: str = hp("cta", choices=("cta", "atc"), help="cta: combine-then-adapt (the paper's), atc: "
                    "adapt-then-combine")

    def client_update(self, ctx: "ClientContext", broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        current = state["params"]
        trained, metrics = self.local_step(ctx, current)
        if self.order == "atc":
            return ClientResult(upload=trained, state={"params": trained}, weight=1.0, metrics=metrics)
        return ClientResult(upload=current, state={"params": current, "step": tree_sub(trained, current)},
                            weight=1.0, metrics=metrics)

    def after_gossip(self, state: Optional[Tree], mixed: Params) -> Tree:
        """CTA: x_i ← Σ_j W_ij x_j + Δ_i; ATC: x_i ← Σ_j W_ij (x_j + Δ_j)."""
        if self.order == "atc":
            return {"params": mixed}
        return {"params": tree_add(mixed, state["step"])}
