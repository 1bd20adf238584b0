"""Data-level attacks: a malicious client trains on poisoned batches (label flipping, BadNets, DBA).

The poisoned samples of a client are a fixed share ``pdr`` of its training samples, drawn once from its own
seeded stream (Snowball builds its poisoned local datasets once, the same way); every batch that contains one
of them trains on the poisoned version. The backdoors also carry model replacement's two options (``gamma``,
``norm_bound``) to scale the poisoned update they upload (Bagdasaryan et al., AISTATS 2020).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional

import torch

from fedloom.algorithms.tree import Tree
from fedloom.config import hp
from fedloom.errors import ConfigError
from fedloom.pipeline.attacks.base import ATTACKS, Attack, BatchPoison, PoisonContext, PoisonedTestView
from fedloom.pipeline.attacks.triggers import LAYOUTS, Trigger, image_shape, pixel_mask
from fedloom.pipeline.attacks.update import scale_and_bound
from fedloom.pipeline.context import TransformContext

Cells = tuple[tuple[int, int], ...]


# ------------------------------------------------------------------------------------------------ helpers
@dataclass
class ChosenSamples:
    """The poisoned sample ids of one client, kept on every device a batch comes from (no copy per batch)."""

    ids: torch.Tensor
    on_device: dict[str, torch.Tensor] = field(default_factory=dict)

    def mask(self, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Which samples of a batch are poisoned (by id), as a mask on ``device``."""
        key = str(indices.device)
        if key not in self.on_device:
            self.on_device[key] = self.ids.to(indices.device)
        return torch.isin(indices, self.on_device[key]).to(device)


def chosen_samples(pctx: PoisonContext, pdr: float) -> ChosenSamples:
    """The sorted ids of floor(pdr·n) of the client's n training samples (all of them when pdr = 1)."""
    indices = pctx.train_indices.detach().cpu()
    count = int(indices.numel() * pdr + 1e-9)
    if count >= indices.numel():
        return ChosenSamples(indices.sort().values)
    order = torch.randperm(indices.numel(), generator=pctx.generator("samples"))
    return ChosenSamples(indices[order[:count]].sort().values)


@lru_cache(maxsize=64)
def _mask(input_shape: tuple[int, ...], cells: Cells) -> torch.Tensor:
    return pixel_mask(input_shape, list(cells), "trigger")


def stamp(x: torch.Tensor, cells: Cells, value: float) -> torch.Tensor:
    """``x`` [B, *input_shape] with the trigger pixels set to ``value`` (on every channel)."""
    mask = _mask(tuple(x.shape[1:]), cells).to(x.device)
    return x.masked_fill(mask, value)


# ------------------------------------------------------------------------------------------------ poisons
@dataclass
class RelabelPoison(BatchPoison):
    """Chosen samples get label ``mapping[y]`` (a lookup table over the classes)."""

    chosen: ChosenSamples
    mapping: torch.Tensor

    def corrupt_batch(self, indices: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.chosen.mask(indices, y.device)
        return x, torch.where(mask, self.mapping.to(y.device)[y], y)


@dataclass
class TriggerPoison(BatchPoison):
    """Chosen samples get the trigger pixels ``cells`` set to ``value`` and the label ``target``."""

    chosen: ChosenSamples
    cells: Cells
    value: float
    target: int

    def corrupt_batch(self, indices: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.chosen.mask(indices, x.device)
        if not bool(mask.any()):
            return x, y
        x = torch.where(mask.view(-1, *([1] * (x.dim() - 1))), stamp(x, self.cells, self.value), x)
        return x, torch.where(mask.to(y.device), torch.full_like(y, self.target), y)


@dataclass
class FlipView(PoisonedTestView):
    """Test samples of a source class, labelled with its target (the targeted flip rate)."""

    mapping: torch.Tensor
    sources: torch.Tensor

    def keep(self, y: torch.Tensor) -> torch.Tensor:
        return torch.isin(y, self.sources.to(y.device))

    def relabel(self, y: torch.Tensor) -> torch.Tensor:
        return self.mapping.to(y.device)[y]


# ------------------------------------------------------------------------------------------------ attacks
@dataclass(frozen=True)
class Poisoning(Attack):
    """Options every data-level attack shares: the poisoned share of a client's samples and model replacement's
    scaling of the poisoned update (γ = 1, no bound: the update is uploaded as trained)."""

    pdr: float = hp(0.3, gt=0, le=1, help="poisoned data ratio: share of a malicious client's samples poisoned")
    gamma: float = hp(1.0, gt=0, help="model replacement: upload γ·Δ (Bagdasaryan et al. 2020); 1: as trained")
    norm_bound: float = hp(0.0, ge=0, help="constrain-and-scale: clip the scaled update to this L2 norm (0: no)")

    def corrupt(self, tctx: TransformContext, upload: Tree) -> Tree:
        return scale_and_bound(upload, self.gamma, self.norm_bound)


@ATTACKS.register("labelflip")
@dataclass(frozen=True)
class LabelFlip(Poisoning):
    """Label flipping (Tolpegin, Truex, Gursoy, Liu, "Data Poisoning Attacks Against Federated Learning
    Systems", ESORICS 2020): malicious clients train with every label y turned into C−1−y, or, with ``pairs``,
    only the listed source classes turned into their targets ("5:3" is CIFAR-10's dog → cat). With pairs, ``asr``
    is the share of source-class test samples the model assigns to the target."""

    pdr: float = hp(1.0, gt=0, le=1, help="share of a malicious client's samples relabelled")
    pairs: str = hp("", help="source:target pairs, comma-separated (e.g. 5:3); empty: every y → C−1−y")

    def validate(self) -> None:
        super().validate()
        self.parsed_pairs()

    def parsed_pairs(self) -> dict[int, int]:
        mapping: dict[int, int] = {}
        for part in filter(None, (p.strip() for p in self.pairs.split(","))):
            source, sep, target = part.partition(":")
            if not sep or not source.strip().isdigit() or not target.strip().isdigit():
                raise ConfigError(f"labelflip.pairs {self.pairs!r}: write source:target pairs such as 5:3,1:7")
            if int(source) in mapping:
                raise ConfigError(f"labelflip.pairs {self.pairs!r} maps class {int(source)} twice")
            mapping[int(source)] = int(target)
        return mapping

    def check_data(self, input_shape: tuple[int, ...], num_classes: int, dtype: torch.dtype) -> None:
        for label in (label for pair in self.parsed_pairs().items() for label in pair):
            if label >= num_classes:
                raise ConfigError(f"labelflip.pairs names class {label}, but the dataset has {num_classes} "
                                  f"classes (0..{num_classes - 1})")

    def mapping(self, num_classes: int) -> torch.Tensor:
        pairs = self.parsed_pairs()
        if not pairs:
            return torch.arange(num_classes - 1, -1, -1)
        table = torch.arange(num_classes)
        for source, target in pairs.items():
            table[source] = target
        return table

    def poisoner(self, pctx: PoisonContext) -> Optional[BatchPoison]:
        return RelabelPoison(chosen_samples(pctx, self.pdr), self.mapping(pctx.num_classes))

    def test_view(self) -> Optional[PoisonedTestView]:
        pairs = self.parsed_pairs()
        if not pairs:
            return None  # untargeted: its effect is the main-task accuracy
        size = max(max(pairs), max(pairs.values())) + 1
        return FlipView(self.mapping(size), torch.tensor(sorted(pairs)))


@ATTACKS.register("badnets")
@dataclass(frozen=True)
class BadNets(Poisoning):
    """BadNets pixel-trigger backdoor (Gu, Dolan-Gavitt, Garg, "BadNets", arXiv 1708.06733, 2017; in FL as in
    Bagdasaryan et al. 2020 and Qin et al., Snowball, AAAI 2024): a malicious client stamps a size x size
    square (every channel set to ``value``) on a share ``pdr`` of its samples and relabels them ``target``.
    Defaults are Snowball's: a 3x3 trigger one pixel from the bottom-right corner (rows/cols 24..26 of 28x28),
    PDR 0.3, target 1; value 1.0 is white in fedloom's [-1, 1] image scaling."""

    size: int = hp(3, ge=1, help="trigger side in pixels")
    row: int = hp(-4, help="trigger's top row (negative: counted from the bottom, -4 = Snowball's 24 of 28)")
    col: int = hp(-4, help="trigger's left column (negative: counted from the right)")
    value: float = hp(1.0, help="pixel value of the trigger after normalisation (1.0: white in [-1, 1])")
    target: int = hp(1, ge=0, help="backdoor target class")

    @property
    def trigger(self) -> Trigger:
        return Trigger(self.size, self.row, self.col, self.value)

    def check_data(self, input_shape: tuple[int, ...], num_classes: int, dtype: torch.dtype) -> None:
        name = self.registry_name  # type: ignore[attr-defined]
        if not dtype.is_floating_point:
            raise ConfigError(f"{name} stamps a pixel trigger, but this dataset's inputs are {dtype} (tokens), "
                              f"not images; choose an image dataset or another attack")
        self.trigger.check(image_shape(input_shape, name), name)
        if self.target >= num_classes:
            raise ConfigError(f"{name}.target must be a class of the dataset (0..{num_classes - 1}), "
                              f"got {self.target}")

    def cells_of(self, pctx: PoisonContext, input_shape: tuple[int, ...]) -> Cells:
        """The pixels this client stamps (the whole trigger; DBA: its piece)."""
        return tuple(self.trigger.cells(image_shape(input_shape, "trigger")))

    def poisoner(self, pctx: PoisonContext) -> Optional[BatchPoison]:
        cells = self.cells_of(pctx, pctx.input_shape)
        return TriggerPoison(chosen_samples(pctx, self.pdr), cells, self.value, self.target)

    def test_view(self) -> Optional[PoisonedTestView]:
        return _FullTriggerView(self)


@ATTACKS.register("dba")
@dataclass(frozen=True)
class DBA(BadNets):
    """Distributed backdoor attack (Xie, Huang, Chen, Li, "DBA: Distributed Backdoor Attacks against Federated
    Learning", ICLR 2020): the trigger is split into pieces and each attacker stamps only its own, the piece of
    index (its rank among the malicious ids) mod (number of pieces); the success rate is measured with the whole
    trigger. The default "triangles" layout is Snowball's 3-piece split of the 3x3 trigger (Snowball draws the
    piece at random; here it follows the rank, so every piece is used)."""

    layout: str = hp("triangles", choices=LAYOUTS, help="how the square splits into pieces: triangles "
                                                        "(below/on/above the diagonal) | rows | columns")

    def cells_of(self, pctx: PoisonContext, input_shape: tuple[int, ...]) -> Cells:
        pieces = self.trigger.pieces(image_shape(input_shape, "trigger"), self.layout)
        return tuple(pieces[pctx.rank % len(pieces)])


@dataclass
class _FullTriggerView(PoisonedTestView):
    """The whole trigger of a BadNets/DBA attack, its pixels resolved on the first batch's shape."""

    attack: BadNets

    def keep(self, y: torch.Tensor) -> torch.Tensor:
        return y != self.attack.target

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        cells = tuple(self.attack.trigger.cells(image_shape(tuple(x.shape[1:]), "trigger")))
        return stamp(x, cells, self.attack.value)

    def relabel(self, y: torch.Tensor) -> torch.Tensor:
        return torch.full_like(y, self.attack.target)
