"""FedAvg of zeroth-order (MeZO) local training with unrestricted seeds: the full-parameter ZO baseline that
FedKSeed (Qin et al., ICML 2024) compresses. MeZO: Malladi et al., "Fine-Tuning Language Models with Just Forward
Passes", NeurIPS 2023.

Client: τ two-point ZO steps from the global model, each with a fresh seed from its own (round, client) stream
(so a direction can be any of ~10^11, not one of K); upload = the dense model delta (the full model's bytes).
Server: FedAvg of the deltas (θ ← θ + Σ ω_i Δ_i / Σ ω_i, ω_i = training samples). Same estimator, step count, lr
and ε as FedKSeed; only the seed space and the wire form differ.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

import numpy as np

from fedloom.algorithms._zo import SEED_HIGH, ZOSettings, minibatches, zo_steps
from fedloom.algorithms.base import ALGORITHMS, Algorithm, Broadcast, ClientResult, ServerResult, ServerState
from fedloom.algorithms.tree import Tree, tree_add, tree_clone, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


@ALGORITHMS.register("fedavg-zo")
@dataclass(frozen=True)
class FedAvgZO(Algorithm):
    vectorizable: ClassVar[bool] = False

    steps: int = hp(200, ge=1, help="local zeroth-order steps per round (tau), one minibatch each")
    lr: float = hp(3e-7, gt=0, help="ZO learning rate eta")
    eps: float = hp(5e-4, gt=0, help="perturbation scale epsilon of the two-point estimate")
    batch_size: int = hp(1, ge=1, help="samples per ZO step")
    max_loss_diff: Optional[float] = hp(None, gt=0, help="skip a step whose |L+ - L-| exceeds this (None: never)")

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        params = tree_clone(broadcast.params)
        seeds = self.fresh_seeds(ctx)
        batches = minibatches(ctx.train_indices, self.batch_size, self.steps, ctx.generator("zo-batches"))
        losses = [functools.partial(ctx.mean_loss, indices=batch) for batch in batches]
        trace = zo_steps(params, seeds, list(range(len(batches))), losses,
                         ZOSettings(self.lr, self.eps, self.max_loss_diff))
        metrics = {"train_loss": sum(trace.losses) / max(len(trace.losses), 1), "zo_skipped": float(trace.skipped)}
        return ClientResult(upload=tree_sub(params, broadcast.params), state=None,
                            weight=float(ctx.num_train_samples), metrics=metrics)

    def fresh_seeds(self, ctx: ClientContext) -> list[int]:
        """One unrestricted seed per step, from this client's own stream of this round."""
        gen = ctx.generator("mezo-seeds")
        rng = np.random.default_rng(int(gen.initial_seed()))
        return [int(s) for s in rng.integers(1, SEED_HIGH, size=self.steps)]

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean_delta = uploads.weighted_mean()
        params = server.params if mean_delta is None else tree_add(server.params, mean_delta)
        state = server.replace(params=params, round=server.round + 1)
        return ServerResult(state=state, broadcast=Broadcast(params=params))
