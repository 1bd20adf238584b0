"""CHOCO-SGD (Koloskova, Stich, Jaggi, "Decentralized Stochastic Optimization and Gossip Algorithms with
Compressed Communication", ICML 2019, Algorithm 2), run with ``--pattern gossip`` on a static ``--topology``.

Every node i holds its model x_i and a public copy x̂_i that all its neighbours track exactly (they apply the
same compressed increments). One iteration, all nodes in parallel:
    x_i^{t+½} = x_i − η ∇F_i(x_i; ξ_i)                     (``steps`` minibatch SGD steps, as D-PSGD)
    q_i = Q(x_i^{t+½} − x̂_i)                               (top-k or random-k, ``ratio`` = k/d kept)
    send q_i;  x̂_j ← x̂_j + q_j for j ∈ N_i ∪ {i}
    x_i^{t+1} = x_i^{t+½} + γ Σ_j W_ij (x̂_j − x̂_i)         (consensus step size γ = ``gamma``)
A node keeps s_i = Σ_j W_ij x̂_j instead of every neighbour's copy (s_i ← s_i + Σ_j W_ij q_j, which is what the
gossip pattern's mix of the messages gives), so Σ_j W_ij (x̂_j − x̂_i) = s_i − x̂_i; this needs a fixed W
(``static_mixing``: time-varying topologies and lost messages are refused). x̂ and s start at 0, as in the
paper. Messages are the k values and k indices per tensor (``Compact``: bytes are those arrays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

from fedloom.algorithms._sparsify import random_k, sparse_message, top_k
from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.dpsgd import GossipNode
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_map, tree_sq_norm, tree_sub
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


def compress(params: Params, compressor: str, ratio: float, ctx: "ClientContext", purpose: str):
    """(indices, Compact message) of ``params`` under top-k or random-k (random-k from the node's own stream)."""
    indices = top_k(params, ratio) if compressor == "topk" else random_k(params, ratio, ctx.generator(purpose))
    return indices, sparse_message(params, indices)


def choco_consensus(half: Params, hat: Params, mixed_sum: Params, gamma: float) -> Params:
    """x^{t+1} = x^{t+½} + γ (s − x̂): the compressed consensus step."""
    return tree_add(half, tree_map(lambda s, h: gamma * (s - h), mixed_sum, hat))


@ALGORITHMS.register("choco")
@dataclass(frozen=True)
class ChocoSGD(GossipNode):
    vectorizable: ClassVar[bool] = False
    static_mixing: ClassVar[bool] = True
    gamma: float = hp(0.5, gt=0, le=1, help="consensus step size γ")
    ratio: float = hp(0.1, gt=0, le=1, help="fraction of each tensor's coordinates sent (k/d)")
    compressor: str = hp("topk", choices=("topk", "randk"), help="Q: top-k magnitudes or random-k")

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        zeros = tree_map(lambda t: t * 0, init_params)
        return {"params": tree_clone(init_params), "hat": zeros, "s": tree_clone(zeros)}

    def client_update(self, ctx: "ClientContext", broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        half, metrics = self.local_step(ctx, state["params"])
        diff = tree_sub(half, state["hat"])
        indices, message = compress(diff, self.compressor, self.ratio, ctx, "choco-randk")
        q = message.decode()
        metrics = {**metrics, "gossip_compression_error": float(tree_sq_norm(tree_sub(diff, q)))}
        return ClientResult(upload=message, state={"params": half, "hat": tree_add(state["hat"], q),
                                                   "s": state["s"]}, weight=1.0, metrics=metrics)

    def after_gossip(self, state: Optional[Tree], mixed: Params) -> Tree:
        """s ← s + Σ_j W_ij q_j; x ← x^{t+½} + γ (s − x̂)."""
        s = tree_add(state["s"], mixed)
        return {"params": choco_consensus(state["params"], state["hat"], s, self.gamma), "hat": state["hat"], "s": s}
