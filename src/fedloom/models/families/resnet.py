"""ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) with torchvision's module
structure, so that parameter names and shapes equal ``torchvision.models.resnetN().named_parameters()``
(``conv1.weight``, ``bn1.weight``, ``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight`` ...), less the
classifier ``fc``, which HtFLlib (Zhang et al., KDD 2025) replaces by a feature pooling to the federation's
feature dimension.

HtFLlib's small ResNet-10/8/6/4 (its ``flcore/trainmodel/resnet.py``) keep the stem and use 4/3/2/1 stages of
one BasicBlock each (widths 64, 128, 256, 512); torchvision has no such models, so their stages are named like
torchvision's (``layer1`` ... ``layerK``). Batch normalisation uses batch statistics (see common.py).
"""

from __future__ import annotations

import torch
from torch import nn

from fedloom.models.families.common import FeaturePool, ToChannels, batch_norm_2d

#: depth -> (block, blocks per stage); torchvision's ResNet-18..152 and HtFLlib's ResNet-10/8/6/4
DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    4: ("basic", (1,)), 6: ("basic", (1, 1)), 8: ("basic", (1, 1, 1)), 10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3)),
}
WIDTHS = (64, 128, 256, 512)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, planes, stride), batch_norm_2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), batch_norm_2d(planes)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride sits on the 3x3 convolution."""
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv1x1(cin, planes), batch_norm_2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), batch_norm_2d(planes)
        self.conv3, self.bn3 = conv1x1(planes, planes * 4), batch_norm_2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """The feature extractor: stem, stages, global average pool, then ``fc`` = FeaturePool(feature_dim)."""

    def __init__(self, depth: int, feature_dim: int) -> None:
        super().__init__()
        kind, blocks = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.to_rgb = ToChannels(3)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = batch_norm_2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 64
        for stage, (count, planes) in enumerate(zip(blocks, WIDTHS)):
            layers = []
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                down = None
                if stride != 1 or cin != planes * block.expansion:
                    down = nn.Sequential(conv1x1(cin, planes * block.expansion, stride),
                                         batch_norm_2d(planes * block.expansion))
                layers.append(block(cin, planes, stride, down))
                cin = planes * block.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.stages = len(blocks)
        self.width = cin  # the native feature width (512 for ResNet-18/34, 2048 for ResNet-50+)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = FeaturePool(feature_dim)
        self._init()

    def _init(self) -> None:
        """torchvision's initialisation: Kaiming-normal (fan_out) convolutions, BN weight 1 and bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.to_rgb(x)))))
        for stage in range(1, self.stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))
