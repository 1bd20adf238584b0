"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018) with
torchvision's ``features`` module structure (``features.0.0.weight``, ``features.1.conv.0.0.weight`` ...), so
its parameter names and shapes equal torchvision's ``mobilenet_v2().features``. The classifier (torchvision's
``classifier``, HtFLlib's own copy calls it ``fc``) is replaced by a pooling to the feature dimension, as
HtFLlib (Zhang et al., KDD 2025) does; its dropout is left out. Batch normalisation uses batch statistics.
"""

from __future__ import annotations

import torch
from torch import nn

from fedloom.models.families.common import FeaturePool, ToChannels, batch_norm_2d

#: (expansion t, channels c, repeats n, first stride s), the paper's Table 2
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         batch_norm_2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.residual = stride == 1 and cin == cout
        layers: list[nn.Module] = [conv_bn_relu(cin, hidden, kernel=1)] if expand != 1 else []
        layers += [conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), batch_norm_2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """The feature extractor (width multiplier 1); native width 1280, pooled to ``feature_dim``."""

    width = 1280

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.to_rgb = ToChannels(3)
        layers: list[nn.Module] = [conv_bn_relu(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu(cin, self.width, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = FeaturePool(feature_dim)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.to_rgb(x))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
