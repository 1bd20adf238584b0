"""Pieces every HtFLlib-style architecture shares (Zhang et al., "HtFLlib", KDD 2025): the parameter-free
pooling that replaces a network's classifier, batch normalisation as a pure function of the parameters, and
the 32x32 floor of the ImageNet-style networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedloom.errors import ConfigError


class FeaturePool(nn.Module):
    """HtFLlib's ``AdaptiveAvgPool1d(feature_dim)`` in place of a network's classifier: the feature vector
    [B, F] is average-pooled (or, when F < D, repeated) to [B, D]. Parameter-free, so the network keeps its
    own parameter names; the identity when F == D."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.dim:
            return x
        return F.adaptive_avg_pool1d(x.unsqueeze(-2), self.dim).squeeze(-2)


class BatchStatNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with torchvision's parameter names and shapes (``weight``, ``bias``) that normalises with
    the statistics of the batch it sees, in training and evaluation alike.

    Why no running statistics: fedloom models are pure functions of their parameters (an algorithm's state is
    its parameter tree, engines call the model with torch.func.functional_call and vmap), and running means
    would be hidden per-client state updated in place. The deviation from HtFLlib (which evaluates with running
    statistics kept locally) is documented in docs/heterogeneous.md.

    A batch with one value per channel (one sample at 1x1 resolution: a ResNet's last stage on 32x32 inputs,
    met by a last partial batch of one sample) has no spread; instead of PyTorch's error it gives what the
    formula gives, (x - mean) = 0, i.e. the bias. HtFLlib never meets it (its training loader drops the last
    partial batch)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, eps=eps, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() // x.shape[-3] > 1:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return self.bias.view(-1, 1, 1).expand_as(x)


def batch_norm_2d(channels: int, eps: float = 1e-5) -> nn.BatchNorm2d:
    """The batch-statistics BatchNorm every family member uses (BatchStatNorm2d)."""
    return BatchStatNorm2d(channels, eps=eps)


class PadTo(nn.Module):
    """Zero-pads images smaller than ``size`` x ``size`` (e.g. 28x28 Fashion-MNIST) to that size, centred, so
    that networks whose geometry needs it (GoogLeNet's ceil-mode pools, a ViT's fixed patch grid) take them."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if h >= self.size and w >= self.size:
            return x
        top, left = max(self.size - h, 0) // 2, max(self.size - w, 0) // 2
        return F.pad(x, (left, max(self.size - w, 0) - left, top, max(self.size - h, 0) - top))


class ToChannels(nn.Module):
    """Repeats a 1-channel image to ``channels`` channels (parameter-free), so that the first convolution keeps
    torchvision's 3-channel shape and ImageNet weights load unchanged for grayscale data."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3] == self.channels:
            return x
        return x.expand(*x.shape[:-3], self.channels, *x.shape[-2:])


def check_image(name: str, input_shape: tuple[int, ...], min_size: int = 16) -> tuple[int, int, int]:
    """(channels, height, width) of an image dataset, or one ConfigError naming the architecture."""
    if len(input_shape) != 3 or min(input_shape[1:]) < min_size or input_shape[0] not in (1, 3):
        raise ConfigError(f"architecture '{name}' needs 1- or 3-channel images of at least {min_size}x{min_size} "
                          f"(C x H x W); this dataset has input shape {tuple(input_shape)}")
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])
