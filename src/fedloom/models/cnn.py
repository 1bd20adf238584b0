"""FedAvgCNN, the "4-layer CNN" of McMahan et al. (AISTATS 2017) as used by PFLlib.

conv5x5(32)-ReLU-maxpool2, conv5x5(64)-ReLU-maxpool2, flatten, fc(dim->512)-ReLU | head fc(512->C) (each pool
runs before its ReLU here: the same function, cheaper).
dim = 1024 for 1x28x28 and 1600 for 3x32x32 (computed from the input shape). The body ends after the
fc-512 layer, so ``feature_dim`` = 512 as in PFLlib's BaseHeadSplit. ``split = "conv"`` ends the body after the
convolutions instead (the head is fc-512-ReLU-fc and sees the dim-wide flattened features): a deeper split for
methods that train the part after it on other data (FedImpro splits ResNet-18 after layer2). The layers are
created in the same order either way, so both splits start from the same weights for a seed and compute the
same function; only the parameter names (``body.7`` -> ``head.0``, ``head`` -> ``head.2``) and the boundary move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedloom.config import check_fields, hp
from fedloom.errors import ConfigError
from fedloom.models.base import MODELS, SplitModel
from fedloom.models.batched import fedavg_cnn_batched


def _conv_out(size: int) -> int:
    return ((size - 4) // 2 - 4) // 2  # two (5x5 valid conv, 2x2 pool) stages


def flat_features(name: str, input_shape: tuple[int, ...]) -> int:
    """Width of FedAvgCNN's flattened conv output for ``input_shape`` (C x H x W); one clear error for inputs
    the two conv stages cannot take (shared by ``cnn`` and its BatchNorm variant ``cnn-bn``)."""
    if len(input_shape) != 3 or min(input_shape[1:]) < 16:
        raise ConfigError(
            f"model '{name}' needs images of at least 16x16 (C x H x W); this dataset has input shape "
            f"{tuple(input_shape)}. Use --model mlp or --model logreg.")
    return 64 * _conv_out(input_shape[1]) * _conv_out(input_shape[2])


class ChannelsLastConv2d(nn.Conv2d):
    """nn.Conv2d whose output is laid out channels_last, so that the ReLU, max-pool and convolution after it
    run in that layout (same parameters, same names, same values up to float rounding).

    Why: PyTorch's CPU max-pool kernel is slow for NCHW tensors at these shapes (1 thread: 0.8 ms for
    10x32x24x24, 25 ms for 256x32x24x24, against 0.05 and 6 ms channels_last), which made pooling cost as much
    as the convolutions. Converting only around the pool does not pay in training (the ReLU backward then
    mixes layouts and gets slow); converting once after the first convolution does: ~10% per training step of
    FedAvgCNN at batch 10 and ~1.4x in evaluation (measured, docs/benchmarks.md). The first convolution itself
    cannot take a channels_last input usefully (one input channel makes both layouts the same).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if out.dim() != 4:
            return out
        try:
            return out.contiguous(memory_format=torch.channels_last)
        except RuntimeError:  # inside torch.func.vmap, which cannot change memory formats: keep the layout
            return out


@MODELS.register("cnn")
@dataclass(frozen=True)
class FedAvgCNN:
    feature_dim: int = hp(512, ge=1, help="width of the fc layer before the classifier")
    split: str = hp("head", choices=("head", "conv"),
                    help="where the body ends and the head begins: head (before the classifier, PFLlib's split) "
                         "| conv (after the convolutions: the head is fc-ReLU-classifier)")

    def __post_init__(self) -> None:
        check_fields(self)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> SplitModel:
        dim = flat_features("cnn", input_shape)
        channels = input_shape[0]
        convs = [
            # pool before ReLU: the same values and gradients as ReLU-then-pool (ReLU is monotone, so it commutes
            # with max; ties and zeros included, checked bit for bit), on a quarter of the elements: ~3% of a
            # training step at batch 10 (benchmarks/w1_kernels.py --variants fedloom relu-first)
            ChannelsLastConv2d(channels, 32, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
        ]
        fc = [nn.Linear(dim, self.feature_dim), nn.ReLU()]
        classifier = nn.Linear(self.feature_dim, num_classes)  # created last in both splits: the same init
        if self.split == "conv":
            return SplitModel(nn.Sequential(*convs), nn.Sequential(*fc, classifier), feature_dim=dim)
        return SplitModel(nn.Sequential(*convs, *fc), classifier, feature_dim=self.feature_dim,
                          batched_forward=fedavg_cnn_batched)
