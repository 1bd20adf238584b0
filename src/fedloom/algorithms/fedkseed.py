"""FedKSeed and FedKSeed-Pro (Qin, Chen, Qian, Ding, Li, Deng, "Federated Full-Parameter Tuning of Billion-Sized
Language Models with Communication Cost under 18 Kilobytes", ICML 2024; official code zhenqincn/FedKSeed).

Full-parameter zeroth-order federated tuning in which every random direction comes from one of K candidate
seeds that all parties derive from the run seed:

* client: τ two-point ZO steps (see ``_zo.py``), each with a seed drawn from the K candidates (uniformly; -Pro:
  with the server's probabilities); upload = the (seed index, ĝ) of each step, ``steps × (index + scalar)``
  bytes, whatever the model size;
* server: a K-vector A of accumulated scalars, ``A_j += Σ_i ω_i a_i[j] / Σ_i ω_i`` with ``a_i[j]`` the sum of
  client i's ĝ for seed j and ω_i its number of training samples; the model is
  ``w = w0 − η Σ_j A_j z(s_j)`` (no weight decay), i.e. exactly the ω-weighted FedAvg of the clients' ZO
  trajectories. Download = A (K float32), from which a client rebuilds the model (``replay = "client"``), or
  the server's copy of that model (``replay = "server"``, what the official simulation does to save time).
* FedKSeed-Pro: the server keeps, per seed, the history of |ĝ| (clipped to ±1000, starting from one 0) and
  samples seeds with p = softmax(minmax(mean |ĝ|)): seeds whose directions move the loss more are drawn more
  often (p_max/p_min ≤ e). p is K more float32 down.

With K = 4096 and τ = 200: down 4096 × 4 B = 16,384 B, up 200 × (2 B int16 index + 4 B float32) = 1,200 B,
17,584 B in total, under 18 KB (the paper's count uses 4-byte indices: 17,984 B). A client keeps no model
between rounds (no client state).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

import torch

from fedloom.algorithms._zo import (ZOSettings, ZOTrace, apply_seed, candidate_seeds, minibatches,
                                    perturbed_names, zo_steps)
from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.tree import Params, Tree, tree_clone
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.pipeline.wire import Compact, Payload

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

#: FedKSeed-Pro clips every |ĝ| to this before averaging it into a seed's importance (official bias_loss_clip)
PRO_CLIP = 1000.0


def index_dtype(k: int) -> torch.dtype:
    """The smallest integer type that holds a seed index below ``k``."""
    return torch.int16 if k <= 2**15 else torch.int32


def upload_message(trace: ZOTrace, k: int, weight: float, history: bool) -> Compact:
    """The wire form of a client's round: one (seed index, ĝ) pair per applied step."""
    arrays = {"seeds": torch.tensor(trace.positions, dtype=index_dtype(k)),
              "grads": torch.tensor(trace.grads, dtype=torch.float32)}
    return Compact(arrays, functools.partial(decode_upload, k=k, weight=weight, history=history))


def decode_upload(arrays: Payload, k: int, weight: float, history: bool) -> Tree:
    """What the server works with: the client's per-seed sums ``a[j] = Σ ĝ`` (float32 [K]). With ``history``
    (-Pro) also the sum of clipped |ĝ| and the count per seed, divided by the client's weight so that the
    server's weighted sum gives their plain totals (every ĝ counts once in a seed's history)."""
    seeds, grads = arrays["seeds"].long(), arrays["grads"].float()
    tree = {"scalars": torch.zeros(k).index_add_(0, seeds, grads)}
    if history:
        scale = 1.0 / weight
        tree["abs_sum"] = torch.zeros(k).index_add_(0, seeds, grads.abs().clamp(max=PRO_CLIP)) * scale
        tree["count"] = torch.zeros(k).index_add_(0, seeds, torch.ones_like(grads)) * scale
    return tree


def broadcast_message(extra: dict[str, torch.Tensor]) -> Compact:
    """The download's wire form: the K accumulated scalars (and -Pro's K probabilities)."""
    return Compact({key: value.float() for key, value in extra.items()}, dict)


def pro_probabilities(abs_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """FedKSeed-Pro's seed probabilities: a seed's importance is the mean clipped |ĝ| of its history (which
    starts as [0], hence the +1), min-max normalised to [0, 1]; p = softmax of that."""
    importance = abs_sum.double() / (count.double() + 1.0)
    low, high = importance.min(), importance.max()
    normalised = (importance - low) / (high - low + 1e-10)
    p = torch.softmax(normalised, dim=0)
    return (p / p.sum()).float()


@ALGORITHMS.register("fedkseed")
@dataclass(frozen=True)
class FedKSeed(Algorithm):
    vectorizable: ClassVar[bool] = False  # forward passes only, one client at a time
    compact_upload: ClassVar[bool] = True  # (seed index, ĝ) pairs: transforms act on the ĝ (DPZero-style)
    #: whether seeds are drawn with the server's probabilities (FedKSeed-Pro)
    weighted_seeds: ClassVar[bool] = False

    k: int = hp(4096, ge=1, help="number of candidate seeds K shared by every party")
    steps: int = hp(200, ge=1, help="local zeroth-order steps per round (tau), one minibatch each")
    lr: float = hp(3e-7, gt=0, help="ZO learning rate eta (the paper's 3e-7 is for billion-sized models; tiny "
                                    "models need about 1e-4 to 1e-3)")
    eps: float = hp(5e-4, gt=0, help="perturbation scale epsilon of the two-point estimate")
    batch_size: int = hp(1, ge=1, help="samples per ZO step (the paper uses 1)")
    replay: str = hp("server", choices=("server", "client"),
                     help="client: every client rebuilds the model from w0 and the K scalars (faithful, K "
                          "regenerations); server: clients take the server's rebuilt copy (official simulation)")
    max_loss_diff: Optional[float] = hp(None, gt=0, help="skip a step whose |L+ - L-| exceeds this (None: never)")

    # ---------------------------------------------------------------- server
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        seeds = candidate_seeds(getattr(init_params, "seed", 0), self.k)
        extra = {"scalars": torch.zeros(self.k, dtype=torch.float32), "seeds": seeds}
        if self.weighted_seeds:
            extra.update(abs_sum=torch.zeros(self.k, dtype=torch.float64),
                         count=torch.zeros(self.k, dtype=torch.float64))
        state = ServerState(params=tree_clone(init_params), extra=extra)
        return ServerResult(state=state, broadcast=self.broadcast_of(state))

    def broadcast_of(self, state: ServerState) -> Broadcast:
        extra = {"scalars": state.extra["scalars"].clone()}
        if self.weighted_seeds:
            extra["probs"] = pro_probabilities(state.extra["abs_sum"], state.extra["count"])
        return Broadcast(params=state.params, extra=extra, wire=broadcast_message(extra))

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        extra = dict(server.extra)
        params = server.params
        if mean is not None:
            delta = mean["scalars"].float()
            extra["scalars"] = extra["scalars"] + delta
            params = rebuild(params, extra["seeds"], delta, self.lr)  # w_t − η Σ_j ΔA_j z_j
            if self.weighted_seeds:  # plain totals: the decoded history was divided by each client's weight
                extra["abs_sum"] = extra["abs_sum"] + uploads.weighted_sum["abs_sum"]
                extra["count"] = extra["count"] + uploads.weighted_sum["count"]
        state = server.replace(params=params, round=server.round + 1, extra=extra)
        nonzero = float((extra["scalars"] != 0).sum())
        return ServerResult(state=state, broadcast=self.broadcast_of(state), metrics={"seeds_used": nonzero})

    # ---------------------------------------------------------------- the broadcast codec
    def compact_broadcast(self) -> bool:
        """With ``replay = "client"`` the K scalars are all a client needs (``rebuild_broadcast``)."""
        return self.replay == "client"

    def rebuild_broadcast(self, wire: Compact, init_params: Params) -> Broadcast:
        """What a client rebuilds from the download: ``w0 − η Σ_j A_j z(s_j)``. The paper's clients replay the
        scalar history since they last took part; A is that history summed per seed, so a client that missed
        rounds (or never took part) rebuilds the same model from w0 and the latest A alone."""
        extra = wire.decode()
        seeds = candidate_seeds(getattr(init_params, "seed", 0), self.k)
        return Broadcast(params=rebuild(init_params, seeds, extra["scalars"], self.lr), extra=extra, wire=wire)

    def check_deployable(self) -> None:
        if self.replay == "server":
            raise ConfigError(f"{self.registry_name}.replay = \"server\" hands every client the server's dense "
                              f"model (the official simulation's shortcut), which does not travel in the K "
                              f"scalars a device downloads; use --{self.registry_name}.replay client")

    # ---------------------------------------------------------------- client
    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        seeds = candidate_seeds(getattr(ctx.init_params, "seed", 0), self.k)
        params = self.start_params(ctx, broadcast, seeds)
        positions = self.seed_positions(ctx, broadcast)
        batches = minibatches(ctx.train_indices, self.batch_size, self.steps, ctx.generator("zo-batches"))
        losses = [functools.partial(ctx.mean_loss, indices=batch) for batch in batches]
        trace = zo_steps(params, seeds.tolist(), positions.tolist(), losses,
                         ZOSettings(self.lr, self.eps, self.max_loss_diff))
        weight = float(ctx.num_train_samples)
        upload = upload_message(trace, self.k, weight, history=self.weighted_seeds)
        metrics = {"train_loss": sum(trace.losses) / max(len(trace.losses), 1), "zo_skipped": float(trace.skipped),
                   "upload_bytes": float(upload.nbytes())}
        return ClientResult(upload=upload, state=None, weight=weight, metrics=metrics)

    def start_params(self, ctx: ClientContext, broadcast: Broadcast, seeds: torch.Tensor) -> Params:
        """The model this round starts from, as a fresh working copy."""
        if self.replay == "client":
            return rebuild(ctx.init_params, seeds, broadcast.extra["scalars"], self.lr)
        return tree_clone(broadcast.params)

    def seed_positions(self, ctx: ClientContext, broadcast: Broadcast) -> torch.Tensor:
        """Which candidate seed each step uses: uniform (FedKSeed) or the server's probabilities (-Pro)."""
        gen = ctx.generator("fedkseed-seed-choice")
        if self.weighted_seeds:
            return torch.multinomial(broadcast.extra["probs"].double(), self.steps, replacement=True, generator=gen)
        return torch.randint(self.k, (self.steps,), generator=gen)


@ALGORITHMS.register("fedkseed-pro")
@dataclass(frozen=True)
class FedKSeedPro(FedKSeed):
    """FedKSeed with seeds sampled by importance (the paper's FedKSeed-Pro)."""

    weighted_seeds: ClassVar[bool] = True


def rebuild(start: Params, seeds: torch.Tensor, scalars: torch.Tensor, lr: float) -> Params:
    """``start − lr Σ_j scalars[j] z(seeds[j])`` over the nonzero scalars, in index order (a copy): the client's
    rebuild from w0 and A, and the server's update from w_t and the round's ΔA."""
    out = tree_clone(start)
    names = perturbed_names(out)
    for j in torch.nonzero(scalars).flatten().tolist():
        apply_seed(out, names, int(seeds[j]), lr * float(scalars[j]))
    return out
