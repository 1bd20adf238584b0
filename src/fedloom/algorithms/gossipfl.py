"""GossipFL (Tang, Shi, Li, Chu, "GossipFL: A Decentralized Federated Learning Framework With Sparsified and
Adaptive Communication", IEEE TPDS 34(3), 2023; SAPS-PSGD in the official code, wizard1203/GossipFL,
algorithms/SAPS_FL), run with ``--pattern gossip --topology saps`` (the bandwidth-aware matching with its
connectivity window, fedloom.patterns.bandwidth) or ``--topology matching``.

Every iteration each node has exactly one peer (W_t: ½ self, ½ peer). A node takes its local SGD step(s), then
the two peers exchange the same random-k subset of their *model parameters* and average them there:
    x_i[idx] ← ½ x_i[idx] + ½ x_peer[idx];  the other coordinates keep the local value.
The subset is drawn from a seed the pair shares (run seed, iteration, the pair's two node ids), so both
peers select the same coordinates without sending them; the official code seeds numpy identically on every
worker, i.e. one subset for all nodes per iteration — a shared seed per pair is the same rule restricted to
those who talk. ``send_indices`` (default on) also counts k int32 indices per tensor, as the official code
transmits (values, indices); turn it off for the seed-only wire form (half the bytes).

Ratio convention: ``ratio`` is the paper's compression ratio ρ = k/d, the fraction of each tensor's
coordinates kept, k = max(1, ⌊ρ·d⌋) (as the official compression/compression.py RandomK does). The project's
reference notes that the official ``compressors_simple.get_random_k(x, ratio)`` keeps ⌈d(1 − ratio)⌉
elements, i.e. there "ratio" is the fraction dropped (0.99 keeps 1%); we could not read that file to confirm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

from fedloom.algorithms._sparsify import Indices, gather, random_k, scatter, sparse_message
from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.dpsgd import GossipNode
from fedloom.algorithms.tree import Params, Tree
from fedloom.config import hp
from fedloom.seeding import torch_generator

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


def pair_indices(params: Params, ratio: float, seed: int, round_: int, node: int, peer: int) -> Indices:
    """The coordinates a pair exchanges this iteration: the same for both peers (the pair's shared seed)."""
    low, high = min(node, peer), max(node, peer)
    return random_k(params, ratio, torch_generator(seed, round_, low, f"gossipfl-pair-mask/{high}"))


@ALGORITHMS.register("gossipfl")
@dataclass(frozen=True)
class GossipFL(GossipNode):
    vectorizable: ClassVar[bool] = False
    needs_matching: ClassVar[bool] = True
    ratio: float = hp(0.01, gt=0, le=1, help="compression ratio ρ = k/d: fraction of each tensor's parameters "
                      "a pair exchanges")
    send_indices: bool = hp(True, help="count k int32 indices per tensor beside the values (the official wire "
                            "form); off: the shared seed replaces them")

    def client_update(self, ctx: "ClientContext", broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        trained, metrics = self.local_step(ctx, state["params"])
        peer = int(broadcast.extra["peer"][ctx.client_id])
        indices = pair_indices(trained, self.ratio, ctx.runtime.seed, ctx.round, ctx.client_id, peer)
        message = sparse_message(trained, indices, send_indices=self.send_indices)
        return ClientResult(upload=message, state={"params": trained, "indices": indices}, weight=1.0,
                            metrics=metrics)

    def after_gossip(self, state: Optional[Tree], mixed: Params) -> Tree:
        """x[idx] ← ½ x[idx] + ½ x_peer[idx] (the mixed message on the pair's coordinates); the rest stays."""
        indices = state["indices"]
        return {"params": scatter(state["params"], indices, gather(mixed, indices))}
