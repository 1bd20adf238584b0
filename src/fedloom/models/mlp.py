"""Multi-layer perceptron: flatten, ``layers`` hidden ReLU layers of width ``hidden`` (the body), linear head.

The defaults (two hidden layers of 200) are McMahan et al.'s "2NN" (AISTATS 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fedloom.config import check_fields, hp
from fedloom.models.base import MODELS, SplitModel, flat_size


@MODELS.register("mlp")
@dataclass(frozen=True)
class MLP:
    hidden: int = hp(200, ge=1, help="width of every hidden layer")
    layers: int = hp(2, ge=1, help="hidden layers")

    def __post_init__(self) -> None:
        check_fields(self)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> SplitModel:
        blocks: list[nn.Module] = [nn.Flatten()]
        width = flat_size(input_shape)
        for _ in range(self.layers):
            blocks += [nn.Linear(width, self.hidden), nn.ReLU()]
            width = self.hidden
        return SplitModel(nn.Sequential(*blocks), nn.Linear(width, num_classes), feature_dim=width)
