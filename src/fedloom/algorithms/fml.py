"""FML, Federated Mutual Learning (T. Shen, J. Zhang, X. Jia, F. Zhang, G. Huang, P. Zhou, K. Kuang, F. Wu,
C. Wu, "Federated Mutual Learning", arXiv 2006.16765, 2020); HtFLlib ``serverfml``/``clientfml``.

Each client keeps its own (heterogeneous) local model and a copy of a small shared "meme" model, of the
federation's first architecture (HtFLlib's ``args.global_model`` default: client 0's). Both are trained on every
batch by deep mutual learning:
    L_local = α·CE(local) + (1 − α)·KL(meme ‖ local),    L_meme = β·CE(meme) + (1 − β)·KL(local ‖ meme),
where KL(p ‖ q) takes p's softmax as the target. The meme model is the only upload; the server averages the
memes without weights and sends the mean, which replaces every client's meme. Inference: the local model.

Defaults α = β = 0.5 (the paper's and HtFLlib's tuned scripts; HtFLlib's argparse 1.0 turns the KL terms off).
Switches where HtFLlib differs: ``detach_targets`` (True: the paper's mutual learning, each model distils toward
the other's fixed output; False: HtFLlib's two backward passes, which let each KL term reach both models) and
``kl`` (``batchmean`` or HtFLlib's ``nn.KLDivLoss()`` default ``mean``, i.e. divided by C). Gradient norms are
clipped at ``clip_norm`` = 10 per model, as HtFLlib does "to prevent divergence" (0 turns it off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _htfl as H
from fedloom.algorithms._naming import tagged, untagged
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

LOCAL, MEME = "local", "meme"


@ALGORITHMS.register("fml")
@dataclass(frozen=True)
class FML(Algorithm):
    shared_architecture = False
    vectorizable = False  # two architectures in one loss

    alpha: float = hp(0.5, ge=0, le=1, help="weight of the local model's CE (1 − α: its KL to the meme)")
    beta: float = hp(0.5, ge=0, le=1, help="weight of the meme model's CE (1 − β: its KL to the local model)")
    detach_targets: bool = hp(True, help="distil toward the other model's fixed output (False: HtFLlib)")
    kl: str = hp("batchmean", choices=("batchmean", "mean"), help="KL reduction (mean: HtFLlib's, /C)")
    clip_norm: float = hp(10.0, ge=0, help="gradient-norm clipping per model (HtFLlib: 10; 0: off)")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        meme = tree_clone(init_params)  # the first architecture's initial parameters
        return ServerResult(state=ServerState(params=meme), broadcast=Broadcast(params=meme))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        return {"params": tree_clone(init_params)}

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        start = {**tagged(LOCAL, state["params"]), **tagged(MEME, broadcast.params)}
        trained, metrics = ctx.local_sgd(start, batch_loss=self.loss(ctx.apply, H.shared_apply(ctx)),
                                         grad_correction=H.clip_groups(self.clip_norm))
        return ClientResult(upload=untagged(MEME, trained), state={"params": untagged(LOCAL, trained)},
                            weight=1.0, metrics=metrics)  # weight 1: the server's mean is unweighted

    def loss(self, apply: Any, meme_apply: Any) -> Any:
        def batch_loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            local, meme = apply(untagged(LOCAL, w), x), meme_apply(untagged(MEME, w), x)
            local_target, meme_target = (meme.detach(), local.detach()) if self.detach_targets else (meme, local)
            l_local = self.alpha * F.cross_entropy(local, y, reduction="none") + (1 - self.alpha) * H.kl(
                local, local_target, self.kl)
            l_meme = self.beta * F.cross_entropy(meme, y, reduction="none") + (1 - self.beta) * H.kl(
                meme, meme_target, self.kl)
            return l_local + l_meme

        return batch_loss

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        meme = uploads.weighted_mean()
        state = server.replace(round=server.round + 1, params=meme if meme is not None else server.params)
        return ServerResult(state=state, broadcast=Broadcast(params=state.params))

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["params"] if state is not None else ctx.init_params
