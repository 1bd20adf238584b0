"""The threat model and the attack base class.

A threat model (``--attack NAME --attack.fraction 0.2 --attack.sampling exact``) fixes a malicious subset of the
clients from the seed and, optionally, how many of them each round's cohort holds. An attack acts at up to three
places, each a hook of :class:`Attack` that does nothing unless an attack overrides it:

* data level: :meth:`Attack.poisoner` gives a malicious client's :class:`BatchPoison`, applied to every batch
  of its local training (serial loop and vectorized packs alike);
* update level: :meth:`Attack.corrupt` rewrites the malicious client's upload (``UploadPipeline.finish``);
* omniscient: :meth:`Attack.craft` replaces the malicious uploads on the server with a vector computed from the
  round's benign uploads (``attacks.omniscient.Colluding`` wraps the aggregator).

A backdoor also gives a :class:`PoisonedTestView`: the evaluation's "poisoned" split, from which the attack
success rate (``asr`` in metrics.jsonl) is computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import torch

from fedloom.algorithms.tree import Tree
from fedloom.config import check_fields, hp
from fedloom.pipeline.context import TransformContext
from fedloom.registry import Registry
from fedloom.seeding import numpy_generator

ATTACKS: Registry[type] = Registry("attack")
#: The threat model's option table (``--attack.fraction``), shared by every attack.
THREATS: Registry[type] = Registry("threat model")
THREAT_NAMESPACE = "attack"
#: The evaluation split of trigger-stamped test samples (engines pass it through like "test" and "train").
POISONED_SPLIT = "poisoned"


@THREATS.register(THREAT_NAMESPACE)
@dataclass(frozen=True)
class ThreatModel:
    """The ``[attack]`` options shared by every attack: which share of the clients is malicious, and whether
    every cohort holds exactly its share of them (Snowball's protocol) or whatever plain sampling gives."""

    fraction: float = hp(0.1, ge=0, lt=1, help="share of the clients that are malicious, in [0, 1)")
    sampling: str = hp("plain", choices=("plain", "exact"),
                       help="plain: cohorts sampled uniformly; exact: round(k·fraction) attackers in every "
                            "cohort of k, the rest benign (Qin et al., Snowball, AAAI 2024)")

    def validate(self) -> None:
        """Raise ConfigError for invalid options: the ranges the fields declare with ``config.hp``."""
        check_fields(self)

    def malicious_clients(self, seed: int, num_clients: int) -> frozenset[int]:
        """round(fraction·N) client ids (at least one unless the fraction is 0), drawn once from the run seed's
        own stream."""
        if self.fraction == 0:
            return frozenset()
        count = max(1, min(num_clients, round(self.fraction * num_clients)))
        rng = numpy_generator(seed, 0, -1, "malicious-clients")
        return frozenset(int(c) for c in rng.choice(num_clients, size=count, replace=False))

    def sampler(self, malicious: frozenset[int]) -> Optional["ExactSampler"]:
        """The cohort sampler this threat model asks for (None: the round's plain uniform sampling)."""
        return ExactSampler(malicious, self.fraction) if self.sampling == "exact" else None


@dataclass(frozen=True)
class ExactSampler:
    """Cohorts of k with exactly round(k·fraction) malicious clients (as Snowball's main.py draws them, which
    floors): attackers drawn from the malicious ids, the others from the benign ids, both from the round's own
    seeded stream. The count is clamped to what the two pools can give."""

    malicious: frozenset[int]
    fraction: float

    def attackers(self, size: int, num_clients: int) -> int:
        count = min(len(self.malicious), round(size * self.fraction))
        benign_pool = num_clients - len(self.malicious)
        return max(count, size - benign_pool)  # too few benign clients: the rest must be malicious

    def __call__(self, num_clients: int, size: int, seed: int, round_: int) -> list[int]:
        if size >= num_clients:
            return list(range(num_clients))
        bad = np.array(sorted(self.malicious), dtype=np.int64)
        good = np.array(sorted(set(range(num_clients)) - self.malicious), dtype=np.int64)
        count = self.attackers(size, num_clients)
        rng = numpy_generator(seed, round_, -1, "client-sampling-exact")
        chosen = list(rng.choice(bad, size=count, replace=False)) if count else []
        chosen += list(rng.choice(good, size=size - count, replace=False)) if size > count else []
        return sorted(int(c) for c in chosen)


@dataclass(frozen=True)
class PoisonContext:
    """What a data-level attack knows of one malicious client: its id, its rank among the malicious ids (DBA
    hands out trigger pieces by it), its training sample ids into the pooled dataset, the number of classes and
    the shape of one input.
    Randomness only through :meth:`generator` (the client's round-0 stream: the poisoned samples stay fixed
    for the whole run, as in Snowball, whose poisoned datasets are built once)."""

    seed: int
    client_id: int
    rank: int
    train_indices: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]

    def generator(self, purpose: str) -> torch.Generator:
        return TransformContext(self.seed, 0, self.client_id, True).generator(f"poison:{purpose}")


class BatchPoison:
    """A malicious client's batch transform. ``corrupt_batch(indices, x, y)`` receives a batch's sample ids
    into the pooled dataset and the batch itself (a copy: it may be changed in place) and returns the batch
    trained on. Whether a sample is poisoned depends on its id only, never on the batch it falls in, so the
    serial loop and a vectorized pack poison exactly the same samples."""

    def corrupt_batch(self, indices: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class PoisonedTestView:
    """The evaluation's poisoned split: ``keep(y)`` selects the test samples that count (a backdoor excludes
    those whose true label is already the target), ``stamp(x)`` the inputs the model sees, ``relabel(y)`` what
    the attacker wants them classified as. Accuracy on this view is the attack success rate."""

    def keep(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def relabel(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Attack:
    """Base class: an attack that does nothing. Subclasses override the hooks of the level they act at."""

    #: True: the malicious uploads are replaced on the server from the round's benign uploads (see ``craft``)
    omniscient: ClassVar[bool] = False

    def validate(self) -> None:
        """Raise ConfigError for invalid options: the ranges the fields declare with ``config.hp``."""
        check_fields(self)

    def bind(self, cohort_size: int) -> "Attack":
        """This attack with defaults that depend on the cohort size resolved (model replacement's γ = n)."""
        return self

    def check_data(self, input_shape: tuple[int, ...], num_classes: int, dtype: torch.dtype) -> None:
        """Raise ConfigError, before training, if the attack cannot act on this dataset (a trigger outside the
        image, a target class the dataset lacks)."""

    # ------------------------------------------------------------------ data level
    def poisoner(self, pctx: PoisonContext) -> Optional[BatchPoison]:
        """The malicious client's batch transform; None: this attack leaves the data alone."""
        return None

    def test_view(self) -> Optional[PoisonedTestView]:
        """The poisoned test split (None: the attack has no success rate beyond the main-task accuracy)."""
        return None

    # ------------------------------------------------------------------ update level
    def corrupt(self, tctx: TransformContext, upload: Tree) -> Tree:
        """What the malicious client uploads instead of ``upload`` (the honest one)."""
        return upload

    # ------------------------------------------------------------------ omniscient (server side)
    def craft(self, benign: torch.Tensor, n: int, f: int) -> torch.Tensor:
        """The vector every malicious client of the round uploads, from the benign uploads ``benign`` [m, d]
        (float64, flattened), with ``n`` uploads in the round of which ``f`` are malicious."""
        raise NotImplementedError
