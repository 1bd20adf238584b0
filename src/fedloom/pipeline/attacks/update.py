"""Update-level attacks: a malicious client rewrites its own upload (an update Δ relative to the global model)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from fedloom.algorithms.tree import Tree, tree_map, tree_sq_norm
from fedloom.config import hp
from fedloom.pipeline.attacks.base import ATTACKS, Attack
from fedloom.pipeline.context import TransformContext


def scale_and_bound(upload: Tree, gamma: float, norm_bound: float) -> Tree:
    """γ·Δ, then (when ``norm_bound`` > 0) scaled down to L2 norm ``norm_bound`` if it is longer: the
    constrain-and-scale attacker stays inside a norm-clipping defense's budget. γ = 1 and no bound return the
    upload itself (bit for bit)."""
    if gamma == 1.0 and not norm_bound:
        return upload
    scaled = tree_map(lambda u: u * gamma, upload)
    if norm_bound:
        norm = float(tree_sq_norm(scaled)) ** 0.5
        if norm > norm_bound:
            scaled = tree_map(lambda u: u * (norm_bound / norm), scaled)
    return scaled


@ATTACKS.register("signflip")
@dataclass(frozen=True)
class SignFlip(Attack):
    """Sign flipping (a standard Byzantine update attack, e.g. Damaskinos et al. 2018; Li et al., RSA, AAAI 2019):
    the malicious client uploads −scale·Δ instead of Δ."""

    scale: float = hp(1.0, gt=0, help="the malicious upload is −scale·Δ")

    def corrupt(self, tctx: TransformContext, upload: Tree) -> Tree:
        return tree_map(lambda u: -self.scale * u, upload)


@ATTACKS.register("scaling")
@dataclass(frozen=True)
class Scaling(Attack):
    """Model replacement by scaling (Bagdasaryan, Veit, Hua, Estrin, Shmatikov, "How To Backdoor Federated
    Learning", AISTATS 2020): the attacker uploads γ·Δ so that averaging over n clients with server learning
    rate η = 1 moves the global model (almost) to its own, γ ≈ n/η. With ``norm_bound`` > 0, constrain-and-scale:
    the scaled update is then clipped to that L2 norm. This attack scales the honest update; the backdoors
    (badnets, dba, labelflip) carry the same two options to scale their poisoned update."""

    gamma: float = hp(0.0, ge=0, help="scale factor γ; 0: the cohort size n (γ = n/η with η = 1)")
    norm_bound: float = hp(0.0, ge=0, help="constrain-and-scale: clip the scaled update to this L2 norm (0: no)")

    def bind(self, cohort_size: int) -> Attack:
        return self if self.gamma else dataclasses.replace(self, gamma=float(cohort_size))

    def corrupt(self, tctx: TransformContext, upload: Tree) -> Tree:
        return scale_and_bound(upload, self.gamma or 1.0, self.norm_bound)


@ATTACKS.register("gaussian-attack")
@dataclass(frozen=True)
class GaussianAttack(Attack):
    """Gaussian Byzantine update (the "Gaussian" attacker of Blanchard, El Mhamdi, Guerraoui, Stainer, NeurIPS
    2017): the upload is replaced by N(0, σ²I) noise of its shape, drawn from the client's round stream."""

    sigma: float = hp(200.0, gt=0, help="standard deviation σ of the replacement upload")

    def corrupt(self, tctx: TransformContext, upload: Tree) -> Tree:
        generator = tctx.generator("gaussian-attack")

        def noise(u: torch.Tensor) -> torch.Tensor:
            drawn = torch.randn(u.shape, generator=generator, dtype=torch.float32)
            return (drawn * self.sigma).to(u.device, u.dtype)

        return tree_map(noise, upload)
