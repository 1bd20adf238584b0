"""Model families by name (``--model-family HtFE-img-8``): HtFLlib's heterogeneous-model settings (Zhang et al.,
"HtFLlib: A Comprehensive Heterogeneous Federated Learning Library and Benchmark", KDD 2025) and FedTGP's
HCNNs8 (Zhang et al., AAAI 2024). Client i gets ``assignment()[i mod len]``: the i-th architecture round-robin,
and in the HtC families the (i mod 4)-th head as well.

Every member is a SplitModel whose body ends with a parameter-free pooling to the family's ``feature_dim``
(HtFLlib's AdaptiveAvgPool1d in place of the network's classifier) and whose head is a fresh classifier; see
docs/heterogeneous.md for the interface methods rely on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from fedloom.config import check_fields, hp
from fedloom.errors import ConfigError
from fedloom.models.base import SplitModel
from fedloom.models.families.architectures import ARCHITECTURES, build_head
from fedloom.registry import Registry
from fedloom.seeding import derive_seed

FAMILIES: Registry[type] = Registry("model family")


@dataclass(frozen=True)
class ModelFamily:
    """Options shared by every family; subclasses name their members (labels of ARCHITECTURES) and heads."""

    feature_dim: int = hp(512, ge=1, help="the common feature dimension D every body is pooled to (HtFLlib -fd)")

    members: ClassVar[tuple[str, ...]] = ()
    #: HtC families: the head of client i is heads[i mod len]; else "linear" (ViTs: "vit")
    heads: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_fields(self)

    def assignment(self) -> tuple[tuple[str, str], ...]:
        """(architecture, head) of clients 0, 1, ... over one period; client i has entry i mod len."""
        period = math.lcm(len(self.members), len(self.heads) or 1)
        return tuple((self.members[i % len(self.members)], self.head_of(i)) for i in range(period))

    def head_of(self, index: int) -> str:
        if self.heads:
            return self.heads[index % len(self.heads)]
        return "vit" if self.members[index % len(self.members)].startswith("vit") else "linear"

    def labels(self) -> tuple[str, ...]:
        """One label per entry of the assignment: the architecture, with its head when not linear."""
        return tuple(arch if head == "linear" else f"{arch}+{head}" for arch, head in self.assignment())

    def build_member(self, label: str, input_shape: tuple[int, ...], num_classes: int, seed: int,
                     vocab_size: Optional[int] = None) -> SplitModel:
        """One member with parameters from the (seed, 'model-init') stream, as every fedloom model."""
        arch, _, head = label.partition("+")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, -1, -1, "model-init"))
            body = ARCHITECTURES[arch](tuple(input_shape), self.feature_dim, vocab_size)
            return SplitModel(body, build_head(head or "linear", self.feature_dim, num_classes),
                              feature_dim=self.feature_dim)


def family(name: str, members: tuple[str, ...], heads: tuple[str, ...] = (), description: str = "") -> type:
    """Register a family: a ModelFamily subclass (its options table is ``[<name>]``, ``--<name>.feature-dim``)."""
    cls = type(name.replace("-", "_"), (ModelFamily,), {"members": members, "heads": heads,
                                                        "description": description, "__doc__": description})
    cls = dataclass(frozen=True)(cls)
    for arch in members:
        assert arch in ARCHITECTURES, arch
    return FAMILIES.register(name)(cls)


def build_family(name: str, options: dict) -> ModelFamily:
    from fedloom.config import make_component

    return make_component(FAMILIES, name, options)


def head_shapes(model: SplitModel) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in model.head.named_parameters()}


def check_homogeneous_heads(models: list[SplitModel], algorithm: str, what: str) -> None:
    """One ConfigError when an algorithm that needs one head shape meets architectures whose heads differ."""
    shapes = [head_shapes(m) for m in models]
    if any(s != shapes[0] for s in shapes[1:]):
        raise ConfigError(f"{algorithm} needs every client to have the same head (it shares or overwrites the "
                          f"classifier), but {what} gives clients heterogeneous heads; use a family with a "
                          f"homogeneous head (an HtFE family, e.g. HtFE-img-8) or another algorithm")


from fedloom.models.families import catalog  # noqa: E402,F401  (registration)

__all__ = ["FAMILIES", "ModelFamily", "build_family", "check_homogeneous_heads", "ARCHITECTURES"]
