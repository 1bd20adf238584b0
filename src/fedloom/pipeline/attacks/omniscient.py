"""Omniscient (colluding) update attacks: the malicious clients of a round all upload one vector computed from
the round's benign uploads. They run on the server, just before aggregation: :class:`Colluding` wraps the run's
aggregator (the plain mean included), replaces the malicious uploads with ``attack.craft(benign, n, f)`` and hands
the result to the wrapped rule. The crafted vector replaces what the server receives (after any client-side
upload transforms: an attacker controls what it sends)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Optional

import torch

from fedloom.algorithms.tree import Tree
from fedloom.config import hp
from fedloom.pipeline.aggregators import Aggregator, Items
from fedloom.pipeline.attacks.base import ATTACKS, Attack
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.wire import flatten, unflatten

DIRECTIONS = ("unit", "std", "sign")


# ------------------------------------------------------------------------------------------------ flattening
def flat_vector(tree: Tree) -> torch.Tensor:
    """A tree as one float64 vector, leaves in sorted path order."""
    leaves = flatten(tree)
    return torch.cat([leaves[key].detach().reshape(-1).double().cpu() for key in sorted(leaves)])


def from_vector(vector: torch.Tensor, like: Tree) -> Tree:
    """Inverse of :func:`flat_vector`, with ``like``'s shapes, dtypes and devices."""
    leaves, parts, start = flatten(like), {}, 0
    for key in sorted(leaves):
        leaf = leaves[key]
        parts[key] = vector[start:start + leaf.numel()].reshape(leaf.shape).to(leaf.device, leaf.dtype)
        start += leaf.numel()
    return unflatten(parts, like)


# ------------------------------------------------------------------------------------------------ the wrapper
@dataclass(frozen=True)
class Colluding(Aggregator):
    """``inner`` aggregating the round's uploads after the malicious ones were replaced by ``attack.craft``.
    Statistics come from the benign uploads (from every upload when a round has no benign client)."""

    attack: Attack = None  # type: ignore[assignment]
    inner: Aggregator = None  # type: ignore[assignment]

    def check_cohort(self, size: int) -> None:
        self.inner.check_cohort(size)

    def aggregate(self, items: Items, ctx: Optional[AggregationContext] = None) -> Tree:
        malicious = ctx.malicious if ctx is not None else frozenset()
        bad = [cid for cid, _, _ in items if cid in malicious]
        if bad:
            benign = [tree for cid, tree, _ in items if cid not in malicious] or [tree for _, tree, _ in items]
            vector = self.attack.craft(torch.stack([flat_vector(t) for t in benign]), len(items), len(bad))
            crafted = from_vector(vector, items[0][1])
            items = [(cid, crafted if cid in malicious else tree, w) for cid, tree, w in items]
        return self.inner.aggregate(items, ctx)


# ------------------------------------------------------------------------------------------------ attacks
def alie_z(n: int, f: int) -> float:
    """ALIE's z_max = Φ⁻¹((n − s)/n) with s = ⌊n/2 + 1⌋ − f the supporters the attackers need (n = 50, f = 12:
    s = 14, z ≈ 0.58). s is kept ≥ 1: with a malicious majority the paper's quantile would be ≥ 1."""
    s = max(1, math.floor(n / 2 + 1) - f)
    return NormalDist().inv_cdf((n - s) / n)


@ATTACKS.register("alie")
@dataclass(frozen=True)
class ALIE(Attack):
    """"A Little Is Enough" (Baruch, Baruch, Goldberg, NeurIPS 2019): every attacker uploads μ − z·σ, with μ and σ
    the per-coordinate mean and standard deviation of the benign uploads and z from n and f (:func:`alie_z`)."""

    omniscient = True
    z: float = hp(0.0, ge=0, help="deviation in standard deviations; 0: z_max from n and f as in the paper")

    def craft(self, benign: torch.Tensor, n: int, f: int) -> torch.Tensor:
        z = self.z or alie_z(n, f)
        std = benign.std(dim=0, unbiased=benign.shape[0] > 1)
        return benign.mean(dim=0) - z * std


@ATTACKS.register("ipm")
@dataclass(frozen=True)
class IPM(Attack):
    """Inner product manipulation (Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by
    Inner Product Manipulation", UAI 2020): every attacker uploads −ε times the mean of the benign uploads."""

    omniscient = True
    epsilon: float = hp(0.1, gt=0, help="ε: the attackers upload −ε·mean(benign)")

    def craft(self, benign: torch.Tensor, n: int, f: int) -> torch.Tensor:
        return -self.epsilon * benign.mean(dim=0)


@dataclass(frozen=True)
class _Shejwalkar(Attack):
    """Min-Max / Min-Sum (Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning Attacks
    and Defenses for Federated Learning", NDSS 2021, AGR-agnostic attacks): the attackers upload μ + γ·p with μ
    the benign mean and p = −unit(μ), −std or −sign(μ), γ the largest value the halving search from γ_init finds
    that keeps the crafted upload within the benign uploads' spread (``within``)."""

    omniscient = True
    direction: str = hp("unit", choices=DIRECTIONS, help="perturbation p: unit (−μ/‖μ‖) | std (−σ) | sign (−sign μ)")
    gamma_init: float = hp(10.0, gt=0, help="the γ search starts here")
    tolerance: float = hp(1e-5, gt=0, help="the γ search stops when its step is this small")

    def perturbation(self, benign: torch.Tensor) -> torch.Tensor:
        mean = benign.mean(dim=0)
        if self.direction == "unit":
            return -mean / mean.norm().clamp_min(1e-12)
        if self.direction == "sign":
            return -torch.sign(mean)
        return -benign.std(dim=0, unbiased=benign.shape[0] > 1)

    def within(self, crafted: torch.Tensor, benign: torch.Tensor, pairwise: torch.Tensor) -> bool:
        raise NotImplementedError

    def gamma(self, benign: torch.Tensor) -> float:
        """The halving search: step up by half the last step on success, down on failure, from γ_init."""
        mean, p = benign.mean(dim=0), self.perturbation(benign)
        pairwise = torch.cdist(benign, benign)
        gamma, step, best = self.gamma_init, self.gamma_init / 2, 0.0
        while abs(best - gamma) > self.tolerance:
            if self.within(mean + gamma * p, benign, pairwise):
                best, gamma = gamma, gamma + step
            else:
                gamma = gamma - step
            step /= 2
        return best

    def craft(self, benign: torch.Tensor, n: int, f: int) -> torch.Tensor:
        return benign.mean(dim=0) + self.gamma(benign) * self.perturbation(benign)


@ATTACKS.register("minmax")
@dataclass(frozen=True)
class MinMax(_Shejwalkar):
    """Min-Max (Shejwalkar & Houmansadr, NDSS 2021): μ + γ·p with γ as large as keeps the crafted upload's largest
    distance to a benign upload ≤ the largest distance between two benign uploads."""

    def within(self, crafted: torch.Tensor, benign: torch.Tensor, pairwise: torch.Tensor) -> bool:
        return bool((benign - crafted).norm(dim=1).max() <= pairwise.max())


@ATTACKS.register("minsum")
@dataclass(frozen=True)
class MinSum(_Shejwalkar):
    """Min-Sum (Shejwalkar & Houmansadr, NDSS 2021): μ + γ·p with γ as large as keeps the crafted upload's sum of
    squared distances to the benign uploads ≤ the largest such sum of a benign upload."""

    def within(self, crafted: torch.Tensor, benign: torch.Tensor, pairwise: torch.Tensor) -> bool:
        return bool((benign - crafted).pow(2).sum() <= pairwise.pow(2).sum(dim=1).max())
