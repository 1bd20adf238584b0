"""The MNIST / Fashion-MNIST CNN of the Snowball paper's experiments (Qin, Chen, Zhi, Yan, Deng, "Resisting
Backdoor Attacks in Federated Learning via Bidirectional Elections and Individual Perspective", AAAI 2024;
the architecture as in the official code's models/cnn_mnist.py, written here from its description).

conv5x5(32, pad 1, no bias)-ReLU-maxpool2(pad 1), conv5x5(64, pad 1, no bias)-ReLU-maxpool2(pad 1), flatten,
fc(64*7*7 -> 128, no bias)-ReLU | head fc(128 -> C, no bias). On 1x28x28: 28 -> 26 -> 14 -> 12 -> 7.
No layer has a bias, so Snowball's election layers (the first and the last) are one tensor each: the first
convolution (800 values) and the classifier (1,280), as the paper's code elects on ``conv1`` and ``fc2``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fedloom.config import check_fields, hp
from fedloom.errors import ConfigError
from fedloom.models.base import MODELS, SplitModel
from fedloom.models.cnn import ChannelsLastConv2d


def _stage(size: int) -> int:
    """One (5x5 conv with padding 1, 2x2 max-pool with padding 1) stage."""
    return (size - 2) // 2 + 1


@MODELS.register("snowball-cnn")
@dataclass(frozen=True)
class SnowballCNN:
    hidden: int = hp(128, ge=1, help="width of the fc layer before the classifier (the representation)")

    def __post_init__(self) -> None:
        check_fields(self)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> SplitModel:
        if len(input_shape) != 3 or min(input_shape[1:]) < 8:
            raise ConfigError(f"model 'snowball-cnn' needs images of at least 8x8 (C x H x W); this dataset has "
                              f"input shape {tuple(input_shape)}. Use --model mlp or --model logreg.")
        height, width = (_stage(_stage(s)) for s in input_shape[1:])
        body = nn.Sequential(
            ChannelsLastConv2d(input_shape[0], 32, kernel_size=5, padding=1, bias=False), nn.ReLU(),
            nn.MaxPool2d(2, padding=1),
            nn.Conv2d(32, 64, kernel_size=5, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2, padding=1),
            nn.Flatten(), nn.Linear(64 * height * width, self.hidden, bias=False), nn.ReLU(),
        )
        return SplitModel(body, nn.Linear(self.hidden, num_classes, bias=False), feature_dim=self.hidden)
