"""FedALA (J. Zhang, Y. Hua, H. Wang, T. Song, Z. Xue, R. Ma, H. Guan, "FedALA: Adaptive Local Aggregation
for Personalized Federated Learning", AAAI 2023). Official code: TsingZ0/FedALA (also PFLlib's utils/ALA.py).

Adaptive Local Aggregation (ALA), run by a client on receipt of the global model θ, before
local training, with its local model w (the one it trained last round):
  * lower layers (all but the top p parameter tensors): ŵ_l = θ_l;
  * top p tensors: ŵ = w + (θ − w) ⊙ W, with element-wise weights W ∈ [0, 1]^|w| (initialised to 1);
  * W is learned on an s% sample of the local training data, batch by batch:
        W ← clip_[0,1](W − η · ∇_ŵ L(ŵ) ⊙ (θ − w))    (= ∇_W L(ŵ)),  then ŵ is recomputed;
  * in the client's first ALA (the "start phase") passes over the sample repeat until the standard deviation
    of the last ``num_pre_loss`` pass losses (each the loss of the pass's last batch) is below ``threshold``;
    afterwards one pass per round, starting from the W kept from the previous round.
Then w ← ŵ, E epochs of local SGD, upload w (here as w − θ, the same bytes); the server is FedAvg. ALA is
skipped while θ equals w (the first round, when both are the initial model).

Evaluation follows PFLlib: each client is scored with its ALA-initialised model, i.e. after download and
ALA, before training. In fedloom that is ``eval_params`` right after server step r; the same ALA is run again
(with the same random sample, from the stream of round r) at the start of the client's next update, so the
evaluated model is exactly the one it trains from. Under partial participation clients that are not sampled
keep their W (PFLlib runs ALA on every client every round; identical when all clients join, the published
setting).

Paper vs PFLlib: the paper samples s% of the local data at random; PFLlib takes a contiguous slice at a
random offset. Default: a uniformly random subset (kept in the client's data order); ``pfllib_compat=True``:
PFLlib's contiguous slice. The start-phase threshold is 0.1 in the code (the README says 0.01).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree, tree_clone, tree_sub
from fedloom.config import hp
from fedloom.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

SAMPLE_STREAM = "fedala-sample"


@ALGORITHMS.register("fedala")
@dataclass(frozen=True)
class FedALA(FedAvg):
    # the start phase loops until the loss settles: data-dependent Python control flow, not batchable
    vectorizable = False

    eta: float = hp(1.0, gt=0, help="η, the ALA weight learning rate (-et)")
    rand_percent: float = hp(80.0, gt=0, le=100, help="s, the % of local training data ALA learns on (-s)")
    # p (-p): 2 = the classifier's weight and bias; at most the model's tensor count (validate_for_model)
    layer_idx: int = hp(2, ge=0, help="p, top parameter tensors ALA weights (0 = all)")
    threshold: float = hp(0.1, gt=0, help="the start phase stops when the std of the last losses is below this")
    num_pre_loss: int = hp(10, ge=1, help="losses the start-phase std is taken over")
    # a guard only (PFLlib loops without bound) against a loss that never settles
    max_start_passes: int = hp(1000, ge=1, help="most passes of the start phase")
    pfllib_compat: bool = False  # True: a contiguous slice at a random offset instead of a random subset

    def validate_for_model(self, init_params: Params) -> None:
        # a larger p would silently mean "all tensors" (a Python slice past the start)
        if self.layer_idx > len(init_params):
            raise ConfigError(f"fedala.layer_idx must be at most {len(init_params)}, the number of parameter "
                              f"tensors of this model (0 = all), got {self.layer_idx}")

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        params = tree_clone(init_params)
        return {"params": params, "weights": {n: torch.ones_like(params[n]) for n in self._top(params)},
                "start": torch.tensor(True)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        # the ALA that follows server step r - 1 (eval_params already ran it once, with that round's stream)
        local, weights, ran = self.adaptive_local_aggregation(ctx, broadcast.params, state, ctx.round - 1)
        trained, metrics = ctx.local_sgd(local)
        started = bool(state["start"]) and not ran
        new_state = {"params": trained, "weights": weights, "start": torch.tensor(started)}
        return ClientResult(upload=tree_sub(trained, broadcast.params), state=new_state,
                            weight=ctx.num_train_samples, metrics=metrics)

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        state = state if state is not None else self.init_client_state(broadcast.params, ctx.client_id)
        return self.adaptive_local_aggregation(ctx, broadcast.params, state, ctx.round)[0]

    # ------------------------------------------------------------------ ALA
    def adaptive_local_aggregation(self, ctx: ClientContext, global_params: Params, state: Tree,
                                   stream_round: int) -> tuple[Params, Params, bool]:
        """(ŵ, W, whether ALA ran). ``stream_round``: the server step this ALA follows (its sample's stream)."""
        local, weights = state["params"], state["weights"]
        first = next(iter(local))
        if torch.equal(local[first], global_params[first]):
            return local, weights, False  # nothing received yet that differs from the local model
        top = self._top(local)
        delta = {n: global_params[n] - local[n] for n in top}
        sample = self._sample(ctx, ctx.generator(SAMPLE_STREAM, round_=stream_round))
        weights = self._learn_weights(ctx, global_params, local, delta, dict(weights), sample,
                                      bool(state["start"]))
        return {**global_params, **self._blend(local, delta, weights)}, weights, True

    def _learn_weights(self, ctx: ClientContext, global_params: Params, local: Params, delta: Params,
                       weights: Params, sample: torch.Tensor, start_phase: bool) -> Params:
        batches = list(sample.split(ctx.sgd.batch_size))
        if not batches:
            return weights  # too few samples for an s% slice: keep W
        losses: list[float] = []
        while True:
            for batch in batches:
                loss, weights = self._weight_step(ctx, global_params, local, delta, weights, batch)
            losses.append(loss)
            if not start_phase or len(losses) >= self.max_start_passes:
                return weights
            recent = losses[-self.num_pre_loss:]
            if len(losses) > self.num_pre_loss and float(np.std(recent)) < self.threshold:
                return weights

    def _weight_step(self, ctx: ClientContext, global_params: Params, local: Params, delta: Params,
                     weights: Params, batch: torch.Tensor) -> tuple[float, Params]:
        x, y = ctx.data(batch)
        blended = {n: t.requires_grad_(True) for n, t in self._blend(local, delta, weights).items()}
        loss = ctx.task_loss(ctx.apply({**global_params, **blended}, x), y).mean()
        grads = torch.autograd.grad(loss, list(blended.values()))
        with torch.no_grad():
            updated = {n: torch.clamp(weights[n] - self.eta * g * delta[n], 0, 1)
                       for n, g in zip(blended, grads)}
        return loss.item(), updated

    @staticmethod
    def _blend(local: Params, delta: Params, weights: Params) -> Params:
        return {n: (local[n] + delta[n] * weights[n]).detach() for n in delta}

    def _top(self, params: Params) -> list[str]:
        names = list(params)  # model order: body first, the head's tensors last
        return names if self.layer_idx == 0 else names[-self.layer_idx:]

    def _sample(self, ctx: ClientContext, generator: torch.Generator) -> torch.Tensor:
        indices = ctx.train_indices
        size = int(self.rand_percent / 100 * indices.shape[0])
        if self.pfllib_compat:  # random.randint(0, n - size): a contiguous slice at a random offset
            start = int(torch.randint(0, indices.shape[0] - size + 1, (1,), generator=generator))
            return indices[start:start + size]
        chosen = torch.randperm(indices.shape[0], generator=generator)[:size]
        return indices[chosen.sort().values]
