"""Small convolutional members of HtFLlib's and FedTGP's families (Zhang et al., HtFLlib, KDD 2025; FedTGP,
AAAI 2024): the 4-layer FedAvgCNN (fedloom's ``cnn`` body, fc1 = 512) and FedTGP's ``CNN(num_cov, hidden_dims)``
of the HCNNs8 family: 1 or 2 blocks of conv5x5(32 / 64)-ReLU-maxpool2, flatten, then Linear-ReLU layers
through ``hidden_dims`` to 512 (``fc1``), its classifier ``fc`` replaced by the feature pooling. The flattened
width is computed from the input shape (FedTGP fixes 28x28, 1 channel).
"""

from __future__ import annotations

import torch
from torch import nn

from fedloom.models.cnn import FedAvgCNN
from fedloom.models.families.common import FeaturePool


def fedavg_cnn(input_shape: tuple[int, ...], feature_dim: int) -> nn.Module:
    """fedloom's FedAvgCNN body (conv-conv-fc1(512)-ReLU) followed by the pooling to ``feature_dim``."""
    body = FedAvgCNN(feature_dim=512).build(tuple(input_shape), 2).body
    return nn.Sequential(*body, FeaturePool(feature_dim))


class HCNN(nn.Module):
    """FedTGP's ``CNN(num_cov, hidden_dims)``; parameter names ``conv.0.0.weight``, ``fc1.1.weight`` ..."""

    def __init__(self, input_shape: tuple[int, ...], convs: int, hidden: tuple[int, ...], feature_dim: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        blocks, cin = [], channels
        for i in range(convs):
            cout = 32 * 2 ** i
            blocks.append(nn.Sequential(nn.Conv2d(cin, cout, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2)))
            height, width, cin = (height - 4) // 2, (width - 4) // 2, cout
        self.conv = nn.Sequential(*blocks)
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = cin * height * width
        for dim in (*hidden, 512):  # FedTGP appends its feature_dim (512) to hidden_dims
            layers += [nn.Linear(fan_in, dim), nn.ReLU()]
            fan_in = dim
        self.fc1 = nn.Sequential(*layers)
        self.fc = FeaturePool(feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc1(self.conv(x)))
