"""Sample-level DP-SGD in local training (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, "Deep Learning
with Differential Privacy", CCS 2016): every local step clips each sample's gradient to L2 norm C, sums them, adds
N(0, (z·C)²) and divides by the batch size B. Per-sample gradients come from ``torch.func`` (vmap over the batch
of grad of the one-sample loss).

``--transform sample-dp`` turns it on for any algorithm that trains with ``ctx.local_sgd`` (the local-training
loop asks :func:`sample_privacy` for the client's privatizer); it does not change the upload. Its server stage
reports ε at δ for the client with the fewest samples, the one whose batches sample its data at the highest rate,
assuming it trained in every round (no credit for client sampling) and accounting each step as a Poisson-sampled
Gaussian with rate B/n (the usual approximation of shuffled batches). Serial engine only: a vectorized pack
raises NotVectorizable and the engine falls back to serial.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import torch

from fedloom.algorithms.tree import Params, Tree, tree_map
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.pipeline.aggregators import Aggregator, Items
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.privacy.accountant import ACCOUNTANTS, PrivacyPlan
from fedloom.pipeline.transforms import TRANSFORMS, UploadTransform
from fedloom.seeding import torch_generator


@TRANSFORMS.register("sample-dp")
@dataclass(frozen=True)
class SampleLevelDP(UploadTransform):
    """DP-SGD's options (Abadi et al., CCS 2016): per-sample clipping bound and noise multiplier."""

    clip: float = hp(1.0, gt=0, help="L2 bound C of every sample's gradient")
    noise_multiplier: float = hp(1.0, ge=0, help="z: noise std z·C on the sum of a batch's clipped gradients")
    delta: Optional[float] = hp(None, gt=0, lt=1, help="δ of the reported ε (default: 1 / the smallest client's "
                                                       "sample count)")
    accountant: str = hp("rdp", choices=ACCOUNTANTS, help="dp-accounting's RDP or PLD accountant")

    def bind(self, cfg: Any, num_clients: int) -> "SampleLevelDP":
        PrivacyPlan(1.0, 2, 1, 0.5, self.accountant).event(1)  # the accountant's package: one clear error now
        return self

    def server_stage(self, aggregator: Optional[Any], algorithm: Any) -> Aggregator:
        if getattr(algorithm, "couples_batch_samples", False):
            raise ConfigError(f"--transform sample-dp cannot run {type(algorithm).__name__}: its local loss couples "
                              "the samples of a batch, so clipping per-sample gradients does not bound one "
                              "sample's influence")
        return SampleDpReport(self, aggregator)

    def privatizer(self, seed: int, round_: int, client_id: int) -> "PerSampleClipper":
        return PerSampleClipper(self.clip, self.noise_multiplier * self.clip,
                                torch_generator(seed, round_, client_id, "dp-sgd"))

    def plan(self, sizes: list[int], batch_size: int, epochs: int) -> PrivacyPlan:
        """The accounting of the client with the fewest samples n: rate B/n, E·ceil(n/B) steps per round."""
        n = max(1, min(sizes))
        batch = min(batch_size, n)
        return PrivacyPlan(self.noise_multiplier, n, batch, self.delta if self.delta is not None else 1.0 / n,
                           self.accountant, "poisson", epochs * math.ceil(n / batch))


def uses_sample_dp(pipeline: Any) -> bool:
    return any(isinstance(t, SampleLevelDP) for _, t in getattr(pipeline, "transforms", ()))


def sample_privacy(pipeline: Any, seed: int, round_: int, client_id: int) -> Optional["PerSampleClipper"]:
    """The client's DP-SGD privatizer when the run's chain has ``sample-dp`` (None otherwise)."""
    for _, transform in getattr(pipeline, "transforms", ()):
        if isinstance(transform, SampleLevelDP):
            return transform.privatizer(seed, round_, client_id)
    return None


@dataclass
class PerSampleClipper:
    """One client's DP-SGD gradient in one round: clip every sample's gradient, sum, add noise, divide by B."""

    clip: float
    noise_std: float
    generator: torch.Generator

    def gradients(self, loss_fn: Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor], work: Params,
                  names: list[str], xb: torch.Tensor, yb: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, ...]:
        fixed = {n: t.detach() for n, t in work.items() if n not in names}

        def one(trained: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return loss_fn({**fixed, **trained}, x.unsqueeze(0), y.unsqueeze(0))

        trained = {n: work[n].detach() for n in names}
        per_sample = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(trained, xb, yb)
        flat = torch.cat([per_sample[n].reshape(xb.shape[0], -1) for n in names], dim=1)
        factor = (self.clip / flat.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        out = []
        for n in names:
            g = (per_sample[n] * factor.reshape(-1, *([1] * (per_sample[n].dim() - 1)))).sum(0)
            noise = torch.randn(g.shape, generator=self.generator, dtype=torch.float32).to(g.device, g.dtype)
            out.append((g + self.noise_std * noise) / batch_size)  # fixed denominator: the configured B
        return tuple(out)


@dataclass(frozen=True)
class SampleDpReport(Aggregator):
    """The configured aggregation unchanged (the plain mean, or ``inner``), plus ε of sample-level DP."""

    dp: SampleLevelDP = dataclasses.field(default_factory=SampleLevelDP)
    inner: Optional[Any] = None
    reduces: ClassVar[bool] = True

    @property
    def needs_all(self) -> bool:  # type: ignore[override]
        return self.inner is not None and self.inner.needs_all

    def check_cohort(self, size: int) -> None:
        if self.inner is not None:
            self.inner.check_cohort(size)

    def reduce(self, total: Optional[Tree], total_weight: float, count: int,
               ctx: Optional[AggregationContext] = None) -> Optional[Tree]:
        self._report(ctx)
        if self.inner is not None and getattr(self.inner, "reduces", False):
            return self.inner.reduce(total, total_weight, count, ctx)
        if total is None or total_weight <= 0:
            return None
        return tree_map(lambda s: (s / total_weight).to(torch.float32), total)  # the plain weighted mean

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        self._report(ctx)
        return self.inner.aggregate(items, ctx)

    def _report(self, ctx: Optional[AggregationContext]) -> None:
        runtime = getattr(ctx, "services", None)
        if ctx is None or runtime is None:
            return
        sizes = [int(idx.numel()) for idx in runtime.data.train_idx]
        plan = self.dp.plan(sizes, runtime.sgd.batch_size, runtime.sgd.epochs)
        ctx.metrics.update({"sample_dp_epsilon": plan.epsilon(ctx.round), "sample_dp_delta": plan.delta,
                            "sample_dp_noise_multiplier": self.dp.noise_multiplier})

