"""DCD-PSGD (Tang, Gan, Zhang, Zhang, Liu, "Communication Compression for Decentralized Training", NeurIPS 2018,
Algorithm 1: difference compression), run with ``--pattern gossip`` on a static ``--topology``.

Every node holds x_i and, because neighbours only ever change by the compressed differences they send, exact
replicas of its neighbours' models. One iteration, all nodes in parallel:
    x_i^{t+½} = Σ_j W_ij x_j − η ∇F_i(x_i; ξ_i)             (``steps`` minibatch SGD steps at x_i)
    z_i = x_i^{t+½} − x_i;   x_i^{t+1} = x_i + C(z_i)       (C: top-k or random-k, ``ratio`` = k/d kept)
    send C(z_i); each neighbour adds it to its replica of x_i
A node keeps m_i = Σ_j W_ij x_j (its neighbourhood average, from the replicas) and updates it with the mixed
messages, m_i ← m_i + Σ_j W_ij C(z_j); that needs a fixed W (``static_mixing``). DCD assumes a compression
error small against the signal: with aggressive sparsification (small ``ratio``) it diverges, as the paper and
the CHOCO paper report — CHOCO-SGD is the method for strong compression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.choco import compress
from fedloom.algorithms.dpsgd import GossipNode
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_sq_norm, tree_sub
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("dcd-psgd")
@dataclass(frozen=True)
class DCDPSGD(GossipNode):
    vectorizable: ClassVar[bool] = False
    static_mixing: ClassVar[bool] = True
    ratio: float = hp(0.5, gt=0, le=1, help="fraction of each tensor's coordinates sent (k/d)")
    compressor: str = hp("topk", choices=("topk", "randk"), help="C: top-k magnitudes or random-k")

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        # every node starts from the same x_0, so the neighbourhood average is x_0 too
        return {"params": tree_clone(init_params), "avg": tree_clone(init_params)}

    def client_update(self, ctx: "ClientContext", broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        x = state["params"]
        trained, metrics = self.local_step(ctx, x)
        z = tree_add(tree_sub(state["avg"], x), tree_sub(trained, x))  # Σ_j W_ij x_j − η g − x_i
        _, message = compress(z, self.compressor, self.ratio, ctx, "dcd-randk")
        c = message.decode()
        metrics = {**metrics, "gossip_compression_error": float(tree_sq_norm(tree_sub(z, c)))}
        return ClientResult(upload=message, state={"params": tree_add(x, c), "avg": state["avg"]}, weight=1.0,
                            metrics=metrics)

    def after_gossip(self, state: Optional[Tree], mixed: Params) -> Tree:
        """m_i ← m_i + Σ_j W_ij C(z_j); the model already took its own compressed step."""
        return {"params": state["params"], "avg": tree_add(state["avg"], mixed)}
