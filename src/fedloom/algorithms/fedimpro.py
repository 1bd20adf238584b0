"""FedImpro (Tang, Zhang, Shi, Tian, Liu, Han, Chu, "FedImpro: Measuring and Improving Client Update in Federated
Learning", ICLR 2024; official code github.com/wizard1203/FedImpro).

The network is split into a low-level part h = φ(x) and a high-level part g(h); the high-level part is also
trained on features drawn from a shared per-class Gaussian estimate N(μ_c, σ_c²) of h, which makes the clients'
high-level updates alike (smaller gradient dissimilarity). Here the split point is the model's body/head
boundary (h = the features the head sees; the repo splits ResNet-18 after layer2).

Client: start from the global estimate (μ, σ) of the broadcast; on every batch, update each class c present in
it with the batch's feature mean and std at weight w_e (σ capped at ``noise_std``), draw one synthetic feature per
class, cycled to at least the batch size, and minimise CE(g(h), y) + w(t)·CE(g(ĥ), ĉ); the synthetic features
reach only g, so φ learns from real data alone. Upload: the model update and the client's per-class
statistics, optionally with N(0, ``stat_noise``²) noise on μ and σ (the repo's DP_degree).
Server: FedAvg on the model; per class, with π_kc = n_kc / Σ_k n_kc the clients' shares of class c,
μ_c = Σ_k π_kc μ_kc and σ_c² = Σ_k π_kc σ_kc² + Σ_k π_kc (μ_kc − μ_c)² (the law of total variance), computed
from the weighted means of n_kc/n_k, (n_kc/n_k)·μ_kc and (n_kc/n_k)·(σ_kc² + μ_kc²), so the server step stays
one reducible weighted sum. Weight schedules (``schedule``): ``gradual2half`` w(t) = min(1, t / T) with the
real weight 1 (the repo's default, T = 500 rounds), ``default`` w = 1, ``gradual`` w(t) for the synthetic and
1 − w(t) for the real loss.

Deviations (docs/algorithms.md): the estimator weight w_e is the official code's effective one,
min(1, d / 5000) with d the feature width (its ``feat_mean_label.size(0)`` is the width of the mean vector, not
the class's sample count); classes absent from a round keep the previous global estimate and only the round's
clients are pooled (the repo keeps every client's last upload; identical when all clients join every round).

Engines: the estimator is the carry of ``ctx.local_sgd_carry``, updated per class with one-hot sums (no
data-dependent control flow), and the synthetic features' noise is the loss's per-step draw (StepDraws, the
client's "fedimpro-synthetic" stream), so the vectorized engine runs FedImpro in packs, partial batches stepped
without padding (the estimator and the synthetic batch's size depend on the batch). ``stat_noise`` draws outside
local SGD from a client's own stream, so with it FedImpro runs serially on that engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
import torch.nn.functional as F

from fedloom.algorithms.base import (ALGORITHMS, Algorithm, Broadcast, ClientResult, Federation, ServerResult,
                                     ServerState)
from fedloom.algorithms.draws import StepDraws
from fedloom.algorithms.tree import Params, Tree, tree_add, tree_clone, tree_sub
from fedloom.algorithms.uploads import Uploads
from fedloom.config import hp
from fedloom.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.engines.context import ClientContext

#: the official code's ``predefined_number_per_class``
PREDEFINED_PER_CLASS = 5000.0


def pooled_statistics(mean_share: torch.Tensor, mean_m: torch.Tensor, mean_s: torch.Tensor,
                      previous_mu: torch.Tensor, previous_sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, σ) per class from the weighted means of n_kc/n_k, (n_kc/n_k)μ_kc and (n_kc/n_k)(σ_kc² + μ_kc²) (weights
    n_k): the pooled mean and the law of total variance. Classes nobody holds keep the previous estimate."""
    share = mean_share[:, None]
    held = share > 0
    mu = torch.where(held, mean_m / share.clamp_min(1e-12), previous_mu)
    var = torch.where(held, mean_s / share.clamp_min(1e-12) - mu ** 2, previous_sigma ** 2)
    return mu, var.clamp_min(0).sqrt()


@ALGORITHMS.register("fedimpro")
@dataclass(frozen=True)
class FedImpro(Algorithm):
    couples_batch_samples: ClassVar[bool] = True  # the per-class estimator of each batch feeds the loss
    schedule: str = hp("gradual2half", choices=("gradual2half", "default", "gradual"),
                       help="weight of the synthetic-feature loss over rounds (the repo's fed_split_loss_weight_type)")
    weight_max_rounds: int = hp(500, ge=1, help="T: rounds over which w(t) = t/T grows to 1 (the repo: 500)")
    loss_weight: float = hp(1.0, ge=0, help="scale of the synthetic-feature loss (fed_split_loss_weight)")
    noise_std: float = hp(0.1, gt=0, help="initial σ and its cap (fed_split_noise_std)")
    stat_noise: float = hp(0.0, ge=0, help="std of Gaussian noise added to the uploaded μ and σ (DP_degree; 0: none)")

    # ------------------------------------------------------------------ server
    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        if federation.num_classes < 1:
            raise ConfigError("fedimpro needs the task's class count (a classification dataset)")
        width = feature_width(init_params)
        g = init_params.generator("fedimpro-estimator") if hasattr(init_params, "generator") else None
        device = next(iter(init_params.values())).device
        mu = torch.rand(federation.num_classes, width, generator=g).to(device)  # the repo: U(0, 1)
        sigma = torch.full((federation.num_classes, width), self.noise_std, device=device)
        state = ServerState(params=tree_clone(init_params), extra={"mu": mu, "sigma": sigma})
        return ServerResult(state, self._broadcast(state))

    @staticmethod
    def _broadcast(state: ServerState) -> Broadcast:
        return Broadcast(params=state.params, extra={"mu": state.extra["mu"], "sigma": state.extra["sigma"]})

    def server_update(self, server: ServerState, uploads: Uploads) -> ServerResult:
        mean = uploads.weighted_mean()
        if mean is None:
            state = server.replace(round=server.round + 1)
            return ServerResult(state, self._broadcast(state))
        params = tree_add(server.params, mean["delta"])
        mu, sigma = pooled_statistics(mean["share"], mean["m"], mean["s"], server.extra["mu"], server.extra["sigma"])
        state = server.replace(params=params, round=server.round + 1, extra={"mu": mu, "sigma": sigma})
        return ServerResult(state, self._broadcast(state), {"sigma_mean": float(sigma.mean())})

    # ------------------------------------------------------------------ client
    def synthetic_weight(self, round_: int) -> tuple[float, float]:
        """(real weight, synthetic weight) of round ``round_`` under the schedule."""
        progress = min(1.0, round_ / self.weight_max_rounds)
        if self.schedule == "default":
            return 1.0, self.loss_weight
        if self.schedule == "gradual":
            return 1.0 - progress, self.loss_weight * progress
        return 1.0, self.loss_weight * progress

    def client_update(self, ctx: ClientContext, broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        start = {"mu": broadcast.extra["mu"].clone(), "sigma": broadcast.extra["sigma"].clone()}
        loss, draws = self.batch_loss(ctx, *start["mu"].shape, *self.synthetic_weight(ctx.round))
        trained, estimate, metrics = ctx.local_sgd_carry(broadcast.params, start, loss, draws=draws, coupled=True)
        mu, sigma = estimate["mu"], estimate["sigma"]
        if self.stat_noise:  # privacy of the uploaded statistics (the repo's DP_degree)
            g = ctx.generator("fedimpro-stat-noise")
            mu = mu + self.stat_noise * torch.randn(mu.shape, generator=g).to(mu.device)
            sigma = (sigma + self.stat_noise * torch.randn(sigma.shape, generator=g).to(sigma.device)).abs()
        # n_kc / n_k, per client (a pack's counts and sizes carry the client axis)
        share = ctx.per_client(torch.div, ctx.train_label_counts(),
                               torch.as_tensor(ctx.num_train_samples, dtype=torch.float32)).to(mu.device)
        upload = {"delta": tree_sub(trained, broadcast.params), "share": share, "m": share[..., None] * mu,
                  "s": share[..., None] * (sigma ** 2 + mu ** 2)}
        return ClientResult(upload=upload, state=state, weight=ctx.num_train_samples, metrics=metrics)

    def batch_loss(self, ctx: ClientContext, classes: int, width: int, real_weight: float,
                   fake_weight: float) -> tuple[Any, StepDraws]:
        """The carry loss of local SGD (the estimator is the carry) and its per-step draws: the synthetic
        features' standard-normal noise, from the client's "fedimpro-synthetic" stream."""
        draws = StepDraws("fedimpro-synthetic", lambda g, batch: synthetic_noise(g, batch, classes, width))

        def loss(w: Params, xb: torch.Tensor, yb: torch.Tensor, aux: Any, carry: Any,
                 noise: torch.Tensor) -> tuple[torch.Tensor, Any]:
            feats = ctx.apply(w, xb, part="body")
            carry = update_estimate(carry, feats.detach(), yb, self.noise_std)
            fake, fake_labels = sample_features(carry, noise)
            real = ctx.task_loss(ctx.apply(w, feats, part="head"), yb)
            synthetic = F.cross_entropy(ctx.apply(w, fake, part="head"), fake_labels)
            return real_weight * real + fake_weight * synthetic, carry

        return loss, draws


def feature_width(init_params: Params) -> int:
    template = getattr(init_params, "template", None)
    if template is not None and hasattr(template, "feature_dim"):
        return int(template.feature_dim)
    if "head.weight" in init_params:
        return int(init_params["head.weight"].shape[1])
    raise ConfigError("fedimpro needs a model with a known feature width (SplitModel.feature_dim)")


def update_estimate(carry: dict, feats: torch.Tensor, labels: torch.Tensor, cap: float) -> dict:
    """The per-class running mean and std after one batch (the official GaussianSynthesisLabel.update): each
    class present moves its mean toward the batch's class mean, and its std toward the batch's class std
    (unbiased) when it has two samples or more (the std of one sample is NaN, skipped as in the code). Written
    with one-hot sums, without data-dependent control flow, so that it runs under vmap."""
    mu, sigma = carry["mu"], carry["sigma"]
    weight = min(1.0, feats.shape[1] / PREDEFINED_PER_CLASS)  # the code's effective weight (see the docstring)
    classes = torch.arange(mu.shape[0], device=labels.device)
    onehot = (labels[:, None] == classes[None]).to(feats.dtype)  # [B, C] (F.one_hot checks its range: no vmap)
    counts = onehot.sum(0)[:, None]  # [C, 1]
    mean = onehot.T @ feats / counts.clamp_min(1)
    centred = (feats[:, None, :] - mean[None]) * onehot[:, :, None]  # [B, C, D], zero outside each class
    std = ((centred ** 2).sum(0) / (counts - 1).clamp_min(1)).sqrt()
    mu = torch.where(counts > 0, (1 - weight) * mu + weight * mean, mu)
    sigma = torch.where(counts > 1, (1 - weight) * sigma + weight * std, sigma)
    return {"mu": mu, "sigma": sigma.clamp_max(cap)}


def synthetic_noise(generator: torch.Generator, batch: int, classes: int, width: int) -> torch.Tensor:
    """Standard-normal noise for (batch // C + 1)·C synthetic features (one step's draw)."""
    return torch.randn(((batch // classes + 1) * classes, width), generator=generator)


def sample_features(carry: dict, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic features ĥ = μ_c + σ_c·noise, one per row of ``noise``, labels cycled over every class."""
    mu, sigma = carry["mu"], carry["sigma"]
    labels = torch.arange(mu.shape[0], device=mu.device).repeat(noise.shape[-2] // mu.shape[0])
    return mu[labels] + sigma[labels] * noise.to(mu.device), labels
