"""FedLC (Zhang, Li, Li, Zhang, Xu, Gao, "Federated Learning with Label Distribution Skew via Logits
Calibration", ICML 2022).

Client i trains from the global model θ on the calibrated cross-entropy
    ℓ(x, y) = CE(z(x) − τ·n_i^{−1/4}, y),   n_i = client i's training label counts (per class),
i.e. every logit is lowered by a margin that shrinks with the class's local frequency, so that the local
minimiser stops pushing rare classes down (the paper's Eq. 8, one softmax over all classes as in the official
code and PFLlib). A class the client does not hold has an infinite margin: its logit leaves the softmax
(the limit of the formula), so local training never pushes it down at all. Upload w_i − θ; server: FedAvg.

PFLlib deviation: its server sums the label counts of *every* client into one global calibration vector before
training (``serverlc.py``), which needs each client's label histogram at the server; the paper and this file use
the client's own counts, which never leave it. ``pfllib_compat = True`` reproduces PFLlib: the server calibrates
with the federation's counts (``Federation.label_counts``) and sends that vector (C floats) with every
broadcast. Default τ = 1 (PFLlib's and the paper's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch

from fedloom.algorithms.base import ALGORITHMS, Broadcast, ClientResult, Federation, ServerResult, ServerState
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import Params, Tree, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext


def calibration(label_counts: torch.Tensor, tau: float) -> torch.Tensor:
    """τ·n_c^{−1/4} per class (a trailing class axis; +inf where n_c = 0)."""
    return tau * label_counts.pow(-0.25)


@ALGORITHMS.register("fedlc")
@dataclass(frozen=True)
class FedLC(FedAvg):
    tau: float = hp(1.0, gt=0, help="τ, scale of the calibration margin τ·n_c^(-1/4)")
    pfllib_compat: bool = hp(False, help="calibrate with the label counts of every client summed (PFLlib's server "
                                         "reads them all) instead of the client's own")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        result = super().init_server(init_params, federation)
        if not self.pfllib_compat:
            return result
        if not federation.label_counts:
            raise ConfigError("fedlc.pfllib_compat needs the federation's label counts (a classification task)")
        shared = calibration(torch.tensor(federation.label_counts, dtype=torch.float32), self.tau)
        state = result.state.replace(extra={**result.state.extra, "calibration": shared})
        return ServerResult(state, Broadcast(result.broadcast.params, extra={"calibration": shared}))

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        result = super().server_update(server, uploads)
        if "calibration" not in server.extra:
            return result
        return ServerResult(result.state, Broadcast(result.broadcast.params,
                                                    extra={"calibration": server.extra["calibration"]}))

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Tree) -> ClientResult:
        counts = ctx.train_label_counts()
        if self.pfllib_compat:  # the shared vector, given the client axis a pack's counts carry
            margin = torch.broadcast_to(broadcast.extra["calibration"].to(counts.device), counts.shape).clone()
        else:
            margin = calibration(counts, self.tau)
        aux = {"calibration": margin}  # per client: through aux
        trained, metrics = ctx.local_sgd(broadcast.params, batch_loss=self.calibrated_loss(ctx), aux=aux)
        return ClientResult(upload=tree_sub(trained, broadcast.params), state=state,
                            weight=ctx.num_train_samples, metrics=metrics)

    @staticmethod
    def calibrated_loss(ctx: ClientContext) -> Callable[..., torch.Tensor]:
        def loss(params: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            return ctx.task_loss(ctx.apply(params, x) - aux["calibration"], y)

        return loss
