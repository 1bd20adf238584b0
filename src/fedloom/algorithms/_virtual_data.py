"""VHL's virtual dataset (Tang, Zhang, Shi, He, Han, Chu, "Virtual Homogeneity Learning: Defending against Data
Heterogeneity in Federated Learning", ICML 2022): samples of C_v "virtual classes" drawn from pure noise through
an untrained, randomly initialised generator, so they carry no client information.

The official code uses an untrained StyleGAN-v2 (per-class latent means, per-sample latents around them, per-class
noise-injection means made diverse by a short optimisation). Here: a small untrained convolutional generator
(linear → two upsample+conv blocks with a per-class noise-injection map → conv → tanh), per-class latent means
drawn N(0, 1) (a wider spread standing in for the diversity optimisation, so that the classes differ), per-sample
latents N(mean, 0.3²); for non-image inputs an untrained two-layer MLP. Everything comes from the (seed, "vhl")
stream, so the server and every client would build the same set; it is standardised to zero mean and unit
variance like the real inputs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from fedloom.seeding import torch_generator

LATENT = 64


def _he(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5


@functools.lru_cache(maxsize=4)  # a pure function of its arguments: the one copy every client holds
def virtual_dataset(seed: int, input_shape: tuple[int, ...], classes: int,
                    per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [classes·per_class, *input_shape], labels 0..classes−1) of the virtual dataset."""
    g = torch_generator(seed, -1, -1, "vhl-virtual-data")
    means = torch.randn(classes, LATENT, generator=g)
    labels = torch.arange(classes).repeat_interleave(per_class)
    z = means[labels] + 0.3 * torch.randn(labels.shape[0], LATENT, generator=g)
    with torch.no_grad():
        x = _images(z, labels, input_shape, classes, g) if len(input_shape) == 3 else _vectors(z, input_shape, g)
        x = (x - x.mean()) / x.std().clamp_min(1e-6)
    return x.float().contiguous(), labels


def _images(z: torch.Tensor, labels: torch.Tensor, shape: tuple[int, ...], classes: int,
            g: torch.Generator) -> torch.Tensor:
    channels, height, width = shape
    h0, w0 = max(height // 4, 1), max(width // 4, 1)
    fc = _he((LATENT, 64 * h0 * w0), LATENT, g)
    conv1, conv2 = _he((32, 64, 3, 3), 64 * 9, g), _he((16, 32, 3, 3), 32 * 9, g)
    out = _he((channels, 16, 3, 3), 16 * 9, g)
    noise_means = torch.randn(classes, 32, 2 * h0, 2 * w0, generator=g)  # per-class noise injection
    x = F.leaky_relu(z @ fc, 0.2).view(-1, 64, h0, w0)
    x = F.conv2d(F.interpolate(x, scale_factor=2.0), conv1, padding=1)
    x = F.leaky_relu(x + noise_means[labels] + 0.1 * torch.randn(x.shape, generator=g), 0.2)
    x = F.leaky_relu(F.conv2d(F.interpolate(x, scale_factor=2.0), conv2, padding=1), 0.2)
    x = F.interpolate(F.conv2d(x, out, padding=1), size=(height, width), mode="bilinear", align_corners=False)
    return torch.tanh(x / x.std().clamp_min(1e-6))  # unit scale before tanh: grey levels, not saturated


def _vectors(z: torch.Tensor, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    size = int(torch.tensor(shape).prod()) if shape else 1
    hidden = F.leaky_relu(z @ _he((LATENT, 128), LATENT, g), 0.2)
    return torch.tanh(hidden @ _he((128, size), 128, g)).view(-1, *shape)
