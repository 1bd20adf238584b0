"""FedAvgCNN, the "4-layer CNN" of McMahan et al. (AISTATS 2017) as used by PFLlib.

conv5x5(32)-ReLU-maxpool2, conv5x5(64)-ReLU-maxpool2, flatten, fc(dim->512)-ReLU | head fc(512->C).
dim = 1024 for 1x28x28 and 1600 for 3x32x32 (computed from the input shape). The body ends after the
fc-512 layer, so ``feature_dim`` = 512 as in PFLlib's BaseHeadSplit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedloom.errors import ConfigError
from fedloom.models.base import MODELS, SplitModel
from fedloom.models.batched import fedavg_cnn_batched


def _conv_out(size: int) -> int:
    return ((size - 4) // 2 - 4) // 2  # two (5x5 valid conv, 2x2 pool) stages


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d whose inference pass pools in channels_last layout.

    PyTorch's CPU max-pool kernel for NCHW tensors is slow at these shapes (1 thread: 0.8 ms for 10x32x24x24,
    25 ms for 256x32x24x24, against 0.05 and 6 ms in channels_last), which made pooling cost as much as the
    convolutions in evaluation. A maximum is exact in any layout and the result is returned in the input's
    layout, so outputs are bit-identical; training keeps the stock path (the channels_last backward is no
    faster there, measured).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.dim() != 4:
            return super().forward(x)
        pooled = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), self.kernel_size, self.stride,
                              self.padding, self.dilation, ceil_mode=self.ceil_mode)
        return pooled.contiguous()


@MODELS.register("cnn")
@dataclass(frozen=True)
class FedAvgCNN:
    feature_dim: int = 512

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> SplitModel:
        if len(input_shape) != 3 or min(input_shape[1:]) < 16:
            raise ConfigError(
                f"model 'cnn' needs images of at least 16x16 (C x H x W); this dataset has input shape "
                f"{tuple(input_shape)}. Use --model mlp or --model logreg.")
        channels, height, width = input_shape
        dim = 64 * _conv_out(height) * _conv_out(width)
        body = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=5), nn.ReLU(), MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5), nn.ReLU(), MaxPool2d(2),
            nn.Flatten(), nn.Linear(dim, self.feature_dim), nn.ReLU(),
        )
        return SplitModel(body, nn.Linear(self.feature_dim, num_classes), feature_dim=self.feature_dim,
                          batched_forward=fedavg_cnn_batched)
