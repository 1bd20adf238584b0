"""FedKD (C. Wu, F. Wu, L. Lyu, Y. Huang, X. Xie, "Communication-efficient federated learning via knowledge
distillation", Nature Communications 13, 2032 (2022), arXiv 2108.13323); HtFLlib ``serverkd``/``clientkd``.

Each client keeps its own (heterogeneous) mentor model and a local projection W_h: Linear(D, D, no bias); a small
mentee model of the federation's first architecture (HtFLlib's ``args.global_model`` default) is shared. On every
batch, with CE = CE(mentor) + CE(mentee) (batch means):
    L_mentor = CE(mentor) + KL(mentee ‖ mentor)/CE + MSE(φ_mentor, W_h φ_mentee)/CE
    L_mentee = CE(mentee) + KL(mentor ‖ mentee)/CE + MSE(φ_mentor, W_h φ_mentee)/CE
and one SGD step on L_mentor + L_mentee moves the mentor, the mentee and W_h (HtFLlib's three optimizers after
two backward passes: the same gradients; its ``-mlr`` is not used by its training loop, so the mentee has the
client's lr here too).

Upload: the mentee, SVD-compressed. Every tensor with two or more dimensions, seen as a matrix (its first
dimension × the rest), keeps its k largest singular values, k the smallest count whose energy Σσ²_{≤k} exceeds
the fraction T of Σσ² (sent as U_k, σ_k, V_k, or dense when that is smaller); vectors are sent dense. The
server decodes, takes the unweighted mean, compresses it with the same T and sends it; clients overwrite their
mentee with the decoded broadcast. T follows the paper's schedule, linear from T_start to T_end over the run:
round r (1-based, R = the run's rounds) uses T = T_start + (r − 1)/R · (T_end − T_start) (HtFLlib updates the
energy after each round the same way). The schedule is known to both sides; the decoded upload carries the
round's T beside the mentee (not counted: nothing of it is sent) because the server is not told R.
Inference: the mentor.

Defaults: T_start 0.95, T_end 0.98 (paper and HtFLlib); ``kl`` = batchmean (the paper's KL) or HtFLlib's
``nn.KLDivLoss()`` mean over B×C. Differences kept: HtFLlib decomposes a 4-D convolution weight per kernel slice
(numpy's batched SVD over its last two axes); fedloom uses the out × (in·k·k) matrix, the paper's description of
compressing a weight matrix. Gradient norms are clipped at ``clip_norm`` = 10 per module (mentor, mentee, W_h).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms import _htfl as H
from fedloom.algorithms._naming import tag_name, tagged, untagged
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.pipeline.wire import Compact, Payload
from fedloom.seeding import torch_generator

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

MENTOR, MENTEE, WH = "mentor", "mentee", "fedkd/wh"


@ALGORITHMS.register("fedkd")
@dataclass(frozen=True)
class FedKD(Algorithm):
    shared_architecture = False
    needs_common_feature_dim = True  # W_h maps the mentee's features onto the mentor's (D × D)
    vectorizable = False

    t_start: float = hp(0.95, gt=0, le=1, help="energy fraction T kept by the SVD in the first round")
    t_end: float = hp(0.98, gt=0, le=1, help="energy fraction T kept by the SVD in the last round")
    kl: str = hp("batchmean", choices=("batchmean", "mean"), help="KL reduction (mean: HtFLlib's, /C)")
    clip_norm: float = hp(10.0, ge=0, help="gradient-norm clipping per module (HtFLlib: 10; 0: off)")

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        mentee = tree_clone(init_params)  # the first architecture's initial parameters
        return ServerResult(state=ServerState(params=mentee), broadcast=Broadcast(params=mentee))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        dim = init_params.template.feature_dim if getattr(init_params, "template", None) is not None else None
        if dim is None:
            raise ConfigError("fedkd needs a model with a feature dimension (a SplitModel template)")
        gen = torch_generator(getattr(init_params, "seed", 0), -1, client_id, "fedkd-wh")
        bound = 1 / math.sqrt(dim)  # nn.Linear's default initialisation
        device = next(iter(init_params.values())).device
        wh = ((torch.rand(dim, dim, generator=gen) * 2 - 1) * bound).to(device)
        return {"params": tree_clone(init_params), "wh": wh}

    def energy(self, round_: int, total_rounds: int) -> float:
        return self.t_start + (round_ - 1) / max(total_rounds, 1) * (self.t_end - self.t_start)

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        start = {**tagged(MENTOR, state["params"]), **tagged(MENTEE, broadcast.params), WH: state["wh"]}
        trained, metrics = ctx.local_sgd(start, batch_loss=self.loss(ctx.apply, H.shared_apply(ctx)),
                                         grad_correction=H.clip_groups(self.clip_norm))
        energy = self.energy(ctx.round, ctx.total_rounds)
        upload = compress(untagged(MENTEE, trained), energy)
        return ClientResult(upload=upload, state={"params": untagged(MENTOR, trained), "wh": trained[WH]},
                            weight=1.0, metrics=metrics)

    def loss(self, apply: Any, mentee_apply: Any) -> Any:
        def batch_loss(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            mentor, mentee = untagged(MENTOR, w), untagged(MENTEE, w)
            rep, rep_g = H.body(apply, mentor, x), H.body(mentee_apply, mentee, x)
            out, out_g = apply(mentor, rep, "head"), mentee_apply(mentee, rep_g, "head")
            ce, ce_g = F.cross_entropy(out, y), F.cross_entropy(out_g, y)
            norm = ce + ce_g
            hidden = F.mse_loss(rep, F.linear(rep_g, w[WH])) / norm
            l_mentor = ce + H.kl(out, out_g, self.kl).mean() / norm + hidden
            l_mentee = ce_g + H.kl(out_g, out, self.kl).mean() / norm + hidden
            # a batch-level objective (divided by batch means): the loop's mean over the batch returns it
            return (l_mentor + l_mentee).expand(y.shape[0])

        return batch_loss

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        state = server.replace(round=server.round + 1)
        if mean is None:
            return ServerResult(state=state, broadcast=Broadcast(params=server.params))
        message = compress(mean["mentee"], float(mean["energy"]))
        params = message.decode()["mentee"]
        state.params = params
        return ServerResult(state=state, broadcast=Broadcast(params=params, wire=message),
                            metrics={"energy": float(mean["energy"])})

    def eval_params(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> Params:
        return state["params"] if state is not None else ctx.init_params


# ------------------------------------------------------------------------------------------------ SVD codec
def kept_rank(sigma: torch.Tensor, energy: float) -> int:
    """The smallest k with Σ_{i≤k} σ_i² > energy · Σ σ_i² (all of them when the energy is 1)."""
    sq = sigma.double().pow(2)
    total = float(sq.sum())
    if total == 0:
        return 1
    above = (sq.cumsum(0) > energy * total).nonzero()
    return int(above[0]) + 1 if above.numel() else int(sigma.numel())


def compress(params: Params, energy: float) -> Compact:
    """The SVD wire form of ``params`` at energy fraction ``energy`` (see the module docstring)."""
    arrays: Payload = {}
    shapes = {}
    for name, value in params.items():
        shapes[name] = tuple(value.shape)
        if value.dim() < 2:
            arrays[name] = value.detach().float()
            continue
        matrix = value.detach().float().reshape(value.shape[0], -1)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        k = kept_rank(s, energy)
        m, n = matrix.shape
        if k * (m + n + 1) < m * n:
            arrays.update({tag_name(name, "u"): u[:, :k].contiguous(), tag_name(name, "s"): s[:k].contiguous(),
                           tag_name(name, "v"): vh[:k].contiguous()})
        else:
            arrays[name] = value.detach().float()
    return Compact(arrays, functools.partial(decompress, shapes=shapes, energy=energy))


def decompress(arrays: Payload, shapes: dict, energy: float) -> Tree:
    out = {}
    for name, shape in shapes.items():
        if name in arrays:
            out[name] = arrays[name]
        else:
            u, s, v = (arrays[tag_name(name, part)] for part in "usv")
            out[name] = ((u * s) @ v).reshape(shape)
    return {"mentee": out, "energy": torch.tensor(float(energy), device=next(iter(arrays.values())).device)}
