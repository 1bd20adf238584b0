"""The attack seam: a threat model is an upload transform (or, for data-level attacks, a batch transform)
applied only to a malicious subset of clients, fixed by the seed. ``--attack signflip --attack.fraction 0.2``.

The trust issue adds backdoors, model replacement and the Snowball/FLAME defenses on this seam; defenses are
aggregators (fedloom.pipeline.aggregators).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from fedloom.algorithms.tree import Tree, tree_map
from fedloom.config import check_fields, hp
from fedloom.pipeline.context import TransformContext
from fedloom.registry import Registry
from fedloom.seeding import numpy_generator

ATTACKS: Registry[type] = Registry("attack")
#: The threat model's option table (``--attack.fraction``), shared by every attack.
THREATS: Registry[type] = Registry("threat model")
THREAT_NAMESPACE = "attack"


@THREATS.register(THREAT_NAMESPACE)
@dataclass(frozen=True)
class ThreatModel:
    """The ``[attack]`` options shared by every attack: which share of the clients is malicious."""

    fraction: float = hp(0.1, gt=0, le=1, help="share of the clients that are malicious")

    def validate(self) -> None:
        """Raise ConfigError for invalid options: the ranges the fields declare with ``config.hp``."""
        check_fields(self)

    def malicious_clients(self, seed: int, num_clients: int) -> frozenset[int]:
        """round(fraction·N) client ids (at least one), drawn once from the run seed's own stream."""
        count = max(1, min(num_clients, round(self.fraction * num_clients)))
        rng = numpy_generator(seed, 0, -1, "malicious-clients")
        return frozenset(int(c) for c in rng.choice(num_clients, size=count, replace=False))


@dataclass(frozen=True)
class Attack:
    """Base class: what a malicious client does to its upload (identity here)."""

    def validate(self) -> None:
        """Raise ConfigError for invalid options: the ranges the fields declare with ``config.hp``."""
        check_fields(self)

    def corrupt(self, tctx: TransformContext, upload: Tree) -> Tree:
        return upload

    def corrupt_batch(self, tctx: TransformContext, x: torch.Tensor,
                      y: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Data-level attacks change a malicious client's batches; None: this attack does not."""
        return None


@ATTACKS.register("signflip")
@dataclass(frozen=True)
class SignFlip(Attack):
    """Sign flipping (a standard Byzantine update attack, e.g. Damaskinos et al. 2018; Li et al., RSA, AAAI 2019):
    the malicious client uploads −scale·Δ instead of Δ."""

    scale: float = hp(1.0, gt=0, help="the malicious upload is −scale·Δ")

    def corrupt(self, tctx: TransformContext, upload: Tree) -> Tree:
        return tree_map(lambda u: -self.scale * u, upload)
