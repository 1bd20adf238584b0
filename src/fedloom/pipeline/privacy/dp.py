"""Client-level differential privacy: DP-FedAvg (McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private
Recurrent Language Models", ICLR 2018), composed around any averaging algorithm without editing it.

``--transform dp`` has two halves on the two seams:

* client side (this transform): every update is clipped to L2 norm S; in ``distributed`` mode each client also
  adds N(0, (z·S)²/m) so that the m clients' noise sums to the central amount (for use with secure aggregation,
  where the server never sees an individual update);
* server side (``server_stage``): the aggregation step adds N(0, (z·S)²) to the *sum* of the clipped updates
  (``central`` mode) and divides by the fixed denominator m, the expected cohort size (the paper's
  fixed-denominator estimator, sensitivity S/m). The noise goes on the reduced sum, after the engines' partial
  sums are merged, so packs and workers keep reducing as before. Every client counts once (weight 1).

The noise multiplier z is given (``--dp.noise-multiplier``) or calibrated before training so that ε after the
planned rounds is ``--dp.target-epsilon`` (``accountant.PrivacyPlan.calibrate``); ε at δ after each round is
reported as ``server_dp_epsilon`` in metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from fedloom.algorithms.tree import Tree, tree_map, tree_sq_norm
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.pipeline.aggregators import Aggregator, Items
from fedloom.pipeline.context import AggregationContext, TransformContext
from fedloom.pipeline.privacy.accountant import ACCOUNTANTS, SAMPLINGS, PrivacyPlan, check_plan
from fedloom.pipeline.privacy.sampling import PoissonSampler
from fedloom.pipeline.transforms import TRANSFORMS, UploadTransform

MODES = ("central", "distributed")


def clip_tree(tree: Tree, bound: float) -> tuple[Tree, float]:
    """(tree · min(1, bound / ‖tree‖₂), the norm before clipping): one flat L2 norm over every tensor."""
    norm = float(torch.sqrt(tree_sq_norm(tree)))
    if norm <= bound:
        return tree, norm
    return tree_map(lambda t: t * (bound / norm), tree), norm


def gaussian_like(tree: Tree, std: float, gen: torch.Generator) -> Tree:
    """N(0, std²) noise shaped like ``tree`` (float64 where the tree is: the server's sums are)."""
    return tree_map(lambda t: std * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype),
                    tree)


@TRANSFORMS.register("dp")
@dataclass(frozen=True)
class ClientLevelDP(UploadTransform):
    """DP-FedAvg's options (McMahan et al., ICLR 2018). Built per run by :meth:`bind` into a
    :class:`BoundClientDP` that knows the population, the cohort and z."""

    clip: float = hp(1.0, gt=0, help="L2 bound S of every client's update")
    noise_multiplier: Optional[float] = hp(None, ge=0, help="z: noise std z·S on the sum (default 1.0; "
                                                             "exclusive with target_epsilon)")
    target_epsilon: Optional[float] = hp(None, gt=0, help="calibrate z so that ε after the planned rounds is this")
    delta: Optional[float] = hp(None, gt=0, lt=1, help="δ of the (ε, δ) guarantee (default 1/N)")
    accountant: str = hp("rdp", choices=ACCOUNTANTS, help="dp-accounting's RDP or PLD accountant")
    sampling: str = hp("poisson", choices=SAMPLINGS, help="client sampling: each client with probability "
                                                          "join_ratio (poisson) or join_ratio·N of N (fixed)")
    mode: str = hp("central", choices=MODES, help="noise added by the server to the sum (central) or split "
                                                   "across the clients (distributed, with --aggregator secagg)")
    adaptive: bool = hp(False, help="adapt the clipping bound to a quantile of the update norms (Andrew et al. "
                                    "2021); dp.clip is the first round's bound")
    target_quantile: float = hp(0.5, ge=0, le=1, help="γ: share of updates the adaptive bound should not clip")
    clip_lr: float = hp(0.2, gt=0, help="η_C: C ← C·exp(−η_C·(b̃ − γ))")
    count_noise: Optional[float] = hp(None, gt=0, help="σ_b: noise on the count of unclipped updates (default m/20)")
    uniform_weights: ClassVar[bool] = True

    @property
    def stage(self) -> str:  # type: ignore[override]
        # distributed DP adds its noise on the client: nothing may follow it but the secure sum
        return "noise" if self.mode == "distributed" else "clip"

    def validate(self) -> None:
        super().validate()
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            raise ConfigError("dp.noise-multiplier and dp.target-epsilon exclude each other: give one (the "
                              "target is met by calibrating the noise multiplier)")
        check_plan(self.accountant, self.sampling)
        if self.adaptive and self.mode == "distributed":
            raise ConfigError("dp.adaptive clips on the (trusted) server at the current quantile estimate; it "
                              "cannot be combined with dp.mode distributed")

    def bind(self, cfg: Any, num_clients: int) -> "BoundClientDP":
        from fedloom.pipeline.build import cohort_size

        delta = self.delta if self.delta is not None else 1.0 / num_clients
        cohort = cohort_size(cfg.join_ratio, num_clients)
        plan = PrivacyPlan(1.0, num_clients, cohort, delta, self.accountant, self.sampling)
        if self.target_epsilon is not None:
            z = plan.calibrate(self.target_epsilon, cfg.rounds)
        else:
            z = 1.0 if self.noise_multiplier is None else self.noise_multiplier
            plan.event(1)  # the accountant's package is needed: one clear error now, not after round 1
        return BoundClientDP(self, dataclasses.replace(plan, noise_multiplier=z), *self._split_noise(z, cohort))

    def _split_noise(self, z: float, cohort: int) -> tuple[float, float]:
        """(noise multiplier of the update sum, σ_b of the count). Adaptive clipping spends part of the budget on
        the count (Andrew, Thakkar, McMahan, Ramaswamy, NeurIPS 2021, Thm. 1): z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) keeps
        the pair as private as one Gaussian mechanism of multiplier z."""
        if not self.adaptive or z == 0:
            return z, 0.0
        sigma_b = self.count_noise if self.count_noise is not None else cohort / 20
        if 2 * sigma_b <= z:
            raise ConfigError(f"dp.count-noise σ_b = {sigma_b:g} must exceed z/2 = {z / 2:g} (the noise multiplier "
                              f"in use) for adaptive clipping; raise it or sample more clients (default: m/20)")
        return (z ** -2 - (2 * sigma_b) ** -2) ** -0.5, sigma_b

    def apply(self, tctx: TransformContext, upload: Tree, state: Optional[Tree]) -> tuple[Tree, Optional[Tree]]:
        raise RuntimeError("dp must be bound to a run (UploadTransform.bind) before it processes uploads")


@dataclass(frozen=True)
class BoundClientDP(UploadTransform):
    """The DP transform of one run: options plus the privacy plan (N, m, δ, the noise multiplier in use)."""

    options: ClientLevelDP = dataclasses.field(default_factory=ClientLevelDP)
    plan: PrivacyPlan = PrivacyPlan(1.0, 1, 1, 0.5)
    update_multiplier: float = 1.0  # z_Δ: the plan's z, less what adaptive clipping spends on the count
    count_noise: float = 0.0  # σ_b (adaptive clipping only)
    uniform_weights: ClassVar[bool] = True

    @property
    def stage(self) -> str:  # type: ignore[override]
        return self.options.stage

    @property
    def cohort_sampler(self) -> Optional[PoissonSampler]:
        """The round's client sampler when DP needs Poisson sampling (None: the default fixed-size draw)."""
        return PoissonSampler() if self.options.sampling == "poisson" else None

    @property
    def sum_noise_std(self) -> float:
        """σ = z·S: the noise on the sum of the cohort's clipped updates (fixed clipping)."""
        return self.update_multiplier * self.options.clip

    def apply(self, tctx: TransformContext, upload: Tree, state: Optional[Tree]) -> tuple[Tree, Optional[Tree]]:
        if self.options.adaptive:  # the server clips at its current estimate C_t (trusted-server, central DP)
            return upload, state
        clipped, _ = clip_tree(upload, self.options.clip)
        if self.options.mode == "distributed" and self.sum_noise_std > 0:
            # m clients each add σ²/m of variance: the sum carries N(0, σ²), as central DP would
            std = self.sum_noise_std / self.plan.cohort ** 0.5
            clipped = tree_map(torch.add, clipped, gaussian_like(clipped, std, tctx.generator("dp-noise")))
        return clipped, state

    def server_stage(self, aggregator: Optional[Any], algorithm: Any) -> Aggregator:
        if algorithm.aggregation == "all":
            raise ConfigError(f"--transform dp adds its noise to the sum of the uploads, but "
                              f"{algorithm.registry_name}'s server reads each upload: use an averaging algorithm")
        if aggregator is not None and not getattr(aggregator, "secure_sum", None):
            raise ConfigError(f"--transform dp needs --aggregator mean or secagg (its noise is calibrated to a sum "
                              f"of clipped updates), not '{aggregator.registry_name}'")
        if self.options.mode == "distributed" and aggregator is None:
            raise ConfigError("dp.mode distributed splits the noise across the clients for a secure sum: use "
                              "--aggregator secagg (or dp.mode central)")
        if self.options.adaptive and aggregator is not None:
            raise ConfigError("dp.adaptive clips every upload on the server, which a secure sum hides: use "
                              "--aggregator mean with it")
        return DpAggregation(self, aggregator)


@dataclass(frozen=True)
class DpAggregation(Aggregator):
    """The server half of DP-FedAvg: (Σ clipped updates + N(0, σ²)·[central]) / m, and ε so far.

    On the plain mean it is reducible (``reduce``: the engines' running sum is all it needs); over a secure
    aggregator it receives every upload, lets the secure protocol compute the sum, and post-processes it."""

    dp: BoundClientDP = dataclasses.field(default_factory=BoundClientDP)
    inner: Optional[Any] = None  # a secure-sum aggregator (secagg) or None (the engines' running sum)
    reduces: ClassVar[bool] = True

    @property
    def needs_all(self) -> bool:  # type: ignore[override]
        return self.inner is not None or self.dp.options.adaptive

    def check_cohort(self, size: int) -> None:
        if self.inner is not None:
            self.inner.check_cohort(size)

    def reduce(self, total: Optional[Tree], total_weight: float, count: int,
               ctx: Optional[AggregationContext]) -> Optional[Tree]:
        """The fixed-denominator noisy mean from the sum of the (clipped, weight-1) uploads."""
        if ctx is not None:
            ctx.metrics.update(self.report(ctx.round))
        if total is None:
            return None
        if self.dp.options.mode == "central" and self.dp.sum_noise_std > 0:
            gen = ctx.generator("dp-noise") if ctx is not None else torch.Generator().manual_seed(0)
            total = tree_map(torch.add, total, gaussian_like(total, self.dp.sum_noise_std, gen))
        return tree_map(lambda s: (s / self.dp.plan.cohort).to(torch.float32), total)

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        if self.dp.options.adaptive:
            return self._adaptive(items, ctx if ctx is not None else AggregationContext(0, 0, {}))
        total, weight, count = self.inner.secure_sum(items, ctx)
        return self.reduce(total, weight, count, ctx)

    def _adaptive(self, items: Items, ctx: AggregationContext) -> Tree:
        """Adaptive clipping (Andrew et al., NeurIPS 2021): clip every update at C_t, add N(0, (z_Δ·C_t)²) to the
        sum, count the unclipped ones with N(0, σ_b²) noise, and move C toward the target quantile γ:
        C_{t+1} = C_t·exp(−η_C·(b̃ − γ)), b̃ = noisy count / m. C lives in the aggregator memory (checkpointed)."""
        opts, m = self.dp.options, self.dp.plan.cohort
        bound = float(ctx.state.get("dp_clip", torch.tensor(opts.clip)))
        clipped = [clip_tree(upload, bound) for _, upload, _ in items]
        total = tree_map(lambda *leaves: torch.stack([leaf.double() for leaf in leaves]).sum(0),
                         *[tree for tree, _ in clipped])
        gen = ctx.generator("dp-noise")
        total = tree_map(torch.add, total, gaussian_like(total, self.dp.update_multiplier * bound, gen))
        unclipped = sum(1.0 for _, norm in clipped if norm <= bound)
        noisy = unclipped + self.dp.count_noise * float(torch.randn((), generator=gen, dtype=torch.float64))
        estimate = noisy / m
        ctx.state["dp_clip"] = torch.tensor(bound * math.exp(-opts.clip_lr * (estimate - opts.target_quantile)))
        ctx.metrics.update({**self.report(ctx.round), "dp_clip": bound, "dp_unclipped_estimate": estimate})
        return tree_map(lambda s: (s / m).to(torch.float32), total)

    def report(self, round_: int) -> dict[str, float]:
        """ε at δ after ``round_`` rounds and the mechanism's parameters (server_dp_* in metrics.jsonl)."""
        plan = self.dp.plan
        return {"dp_epsilon": plan.epsilon(round_), "dp_delta": plan.delta,
                "dp_noise_multiplier": plan.noise_multiplier, "dp_clip": self.dp.options.clip}
