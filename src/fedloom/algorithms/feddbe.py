"""FedDBE (J. Zhang, Y. Hua, J. Cao, H. Wang, T. Song, Z. Xue, R. Ma, H. Guan, "Eliminating Domain Bias for
Federated Learning in Representation Space", NeurIPS 2023): FedAvg + DBE. Official code: TsingZ0/DBE (same as
PFLlib's).

DBE adds to FedAvg, for client i with feature extractor φ and head h (both shared, averaged as in FedAvg):
  * PRBM, the Personalized Representation Bias Memory: a D-vector r̄_i, initialised to 0, trained with the model
    (its own SGD at the same learning rate in the official code) and never uploaded;
  * MR, Mean Regularization: a running mean of the batch representations, reset to 0 at the start of every
    round, μ ← (1 − m)μ + m · mean_batch(φ(x)), detached after each step so only the current batch carries a
    gradient, pulled toward the global mean ḡ:
        loss = CE(h(φ(x) + r̄_i), y) + κ · mean_d(½(μ − ḡ)²);
  * inference h(φ(x) + r̄_i).
ḡ comes from an initialization period before federated training: every client trains one round (E epochs) of
plain CE from the initial model while tracking μ and uploads μ (D floats); the server sends
ḡ = Σ_i (n_i/n) μ_i, fixed from then on. The models trained in that period are discarded (the official code
overwrites them with the global model). In fedloom the initialization period is round 1: its upload is only
μ_i, the global model stays the initial one, and FedAvg + DBE rounds follow (fedloom round r + 1 = official
round r). ḡ is kept by the server and sent with every broadcast (D floats, so that clients sampled later get it
too; the official code hands it to every client once).

Evaluation follows PFLlib: after download, before training (``eval_params`` after server step r): global φ and
h with the client's r̄_i. Defaults are the official run script's (momentum m = 1, κ = 50; PFLlib's argparse
defaults are 0.1 and 0). No known difference between the paper and PFLlib, so there is no compat switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms._naming import model_part, tag_name
from fedloom.algorithms.base import (ALGORITHMS, ApplyFn, Broadcast, ClientResult, Predictor, ServerResult,
                                     ServerState)
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_select, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.models.base import is_body, is_head

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

PRBM = "prbm"  # the PRBM's key in the client state and the Predictor tree
PRBM_PARAM = tag_name("feddbe", PRBM)  # its entry in the flat training dict (see _naming)


@ALGORITHMS.register("feddbe")
@dataclass(frozen=True)
class FedDBE(FedAvg):
    # the running mean is threaded through batches (local_sgd_carry) and evaluation is a Predictor
    vectorizable = False

    momentum: float = hp(1.0, gt=0, le=1, help="m of the running mean (-mo; official run_me.sh 1, PFLlib 0.1)")
    kl_weight: float = hp(50.0, ge=0, help="κ, weight of the mean regularization (-klw; run_me.sh 50)")

    # ------------------------------------------------------------------ client
    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        weight = next(t for n, t in init_params.items() if is_head(n) and t.dim() == 2)
        return {PRBM: weight.new_zeros(weight.shape[1])}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        if "global_mean" not in broadcast.extra:
            return self._initialization(ctx, broadcast, state)
        start = {**broadcast.params, PRBM_PARAM: state[PRBM]}
        zero = torch.zeros_like(state[PRBM])
        trained, _, metrics = ctx.local_sgd_carry(start, zero, self._loss_hook(ctx.apply, broadcast.extra))
        model = model_part(trained)
        return ClientResult(upload=tree_sub(model, broadcast.params), state={PRBM: trained[PRBM_PARAM]},
                            weight=ctx.num_train_samples, metrics=metrics)

    def _initialization(self, ctx: ClientContext, broadcast: Broadcast, state: Tree) -> ClientResult:
        """One round of plain CE tracking the running mean; only the mean is uploaded, the model discarded."""
        zero = torch.zeros_like(state[PRBM])
        _, mean, metrics = ctx.local_sgd_carry(broadcast.params, zero, self._init_hook(ctx.apply))
        return ClientResult(upload={"mean": mean}, state=state, weight=ctx.num_train_samples, metrics=metrics)

    def _running(self, carry: torch.Tensor, rep: torch.Tensor) -> torch.Tensor:
        return (1 - self.momentum) * carry + self.momentum * rep.mean(dim=0)

    def _init_hook(self, apply: ApplyFn) -> Any:
        def loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any, carry: Any) -> tuple[torch.Tensor, Any]:
            rep = apply(w, x, "body")
            return F.cross_entropy(apply(w, rep, "head"), y, reduction="none"), self._running(carry, rep)

        return loss

    def _loss_hook(self, apply: ApplyFn, extra: dict) -> Any:
        global_mean = extra["global_mean"]  # ḡ is the broadcast, shared by every client: closure allowed

        def loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any, carry: Any) -> tuple[torch.Tensor, Any]:
            model = model_part(w)  # functional_call takes model names only
            rep = apply(model, x, "body")
            running = self._running(carry, rep)
            regularizer = torch.mean(0.5 * (running - global_mean) ** 2)
            out = apply(model, rep + w[PRBM_PARAM], "head")
            return F.cross_entropy(out, y, reduction="none") + self.kl_weight * regularizer, running

        return loss

    # ------------------------------------------------------------------ server
    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        if mean is not None and "mean" in mean:  # end of the initialization period: ḡ = Σ (n_i/n) μ_i
            extra = {"global_mean": mean["mean"]}
            state = server.replace(extra=extra, round=server.round + 1)
            return ServerResult(state=state, broadcast=Broadcast(params=state.params, extra=extra))
        params = server.params if mean is None else tree_add(server.params, mean)
        state = server.replace(params=params, round=server.round + 1)
        return ServerResult(state=state, broadcast=Broadcast(params=params, extra=server.extra))

    # ------------------------------------------------------------------ evaluation
    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Predictor:
        state = state if state is not None else self.init_client_state(broadcast.params, ctx.client_id)
        return Predictor({"params": broadcast.params, PRBM: state[PRBM]}, predict)


def predict(apply: ApplyFn, tree: Tree, x: torch.Tensor) -> torch.Tensor:
    """h(φ(x) + r̄_i)."""
    params = tree["params"]
    return apply(tree_select(params, is_head), apply(tree_select(params, is_body), x, "body") + tree[PRBM], "head")
