"""Per-domain input transforms of the feature-shift partition (plain torch, deterministic, seeded).

Domain d of D, strength s >= 0, level t_d = d / max(D - 1, 1) in [0, 1] (domain 0 is always the original data),
σ_x = the standard deviation of all pooled inputs:

- rotate   (images): rotation by θ_d = s · 360° · d / D about the image centre (torch.rot90 when θ_d is a
                     multiple of 90° on square images: exact; else bilinear affine_grid/grid_sample with border
                     padding). s = 1, D = 4 gives 0°, 90°, 180°, 270°, as in rotated-MNIST domain studies.
- contrast (images): x' = m + c_d (x - m) with m the per-image, per-channel mean and c_d = 4^(-s·t_d)
                     (the last domain has 1/4 of the contrast at s = 1). Vectors: feature scaling x' = c_d · x.
- color    (images): per-channel gain and offset x'_ch = g_ch x_ch + b_ch, g_ch = 2^(s·t_d·u_ch),
                     b_ch = 0.5 · s · t_d · v_ch · σ_x with u, v ~ U[-1, 1] drawn per domain (a colour cast on
                     RGB images, a brightness/contrast change on grey ones).
- noise    (any):    x' = x + s · t_d · σ_x · ε, ε ~ N(0, I) from a generator seeded by (seed, domain).

Several kinds compose, always in the order rotate, contrast, color, noise (geometry, then photometry, then
sensor noise), whatever order they are listed in. Larger s or a later domain = more shift. This is the setting
of FedBN (Li et al., ICLR 2021): each client's inputs come from a different domain, labels are unchanged.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fedloom.errors import ConfigError
from fedloom.seeding import numpy_generator, torch_generator

KINDS = ("rotate", "contrast", "color", "noise")
IMAGE_ONLY = ("rotate", "color")
CHUNK = 4096  # samples per transform call: bounds the memory of grid_sample and of the noise


def parse_kinds(text: str) -> tuple[str, ...]:
    """'rotate,noise' -> ('rotate', 'noise') in application order; ConfigError for unknown or empty lists."""
    names = {t.strip().lower() for t in str(text).replace("+", ",").split(",") if t.strip()}
    unknown = sorted(names - set(KINDS))
    if unknown or not names:
        raise ConfigError(f"feature_shift must be a comma-separated list of {', '.join(KINDS)} (got '{text}')")
    return tuple(k for k in KINDS if k in names)


def check_inputs(x: torch.Tensor, kinds: tuple[str, ...]) -> None:
    """ConfigError for inputs a transform cannot apply to (integer token ids, vectors for image transforms)."""
    if not torch.is_floating_point(x):
        raise ConfigError(f"feature-shift needs real-valued inputs; this dataset's inputs are {x.dtype} (token ids?)")
    bad = [k for k in kinds if k in IMAGE_ONLY and x.dim() != 4]
    if bad:
        raise ConfigError(f"feature-shift '{','.join(bad)}' needs image inputs [N, C, H, W] but the inputs have shape "
                          f"{tuple(x.shape[1:])}; use noise or contrast (feature scaling) for vector data")


def domain_transform(
    kinds: tuple[str, ...], d: int, num_domains: int, strength: float, scale: float, seed: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The composed transform of domain d (see the module docstring); ``scale`` is σ_x."""
    level = strength * d / max(num_domains - 1, 1)
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if "rotate" in kinds:
        steps.append(lambda x: rotate(x, strength * 360.0 * d / num_domains))
    if "contrast" in kinds:
        steps.append(lambda x: contrast(x, 4.0 ** (-level)))
    if "color" in kinds:
        u, v = numpy_generator(seed, -1, d, "feature-shift-color").uniform(-1, 1, (2, 1 << 12))
        steps.append(lambda x: color(x, 2.0 ** (level * u[: x.shape[1]]), 0.5 * level * scale * v[: x.shape[1]]))
    if "noise" in kinds:
        gen = torch_generator(seed, -1, d, "feature-shift-noise")
        steps.append(lambda x: x + level * scale * torch.randn(x.shape, generator=gen, dtype=x.dtype))

    def apply(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x

    return apply


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate [N, C, H, W] images counter-clockwise by ``degrees`` (exact for multiples of 90° on squares)."""
    quarter = degrees / 90.0
    if math.isclose(quarter, round(quarter), abs_tol=1e-9) and x.shape[-1] == x.shape[-2]:
        return torch.rot90(x, int(round(quarter)) % 4, dims=(2, 3))
    t = math.radians(degrees)
    theta = torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Images: scale deviations from the per-image channel mean; other inputs: scale the features."""
    if x.dim() != 4:
        return x * factor
    mean = x.mean(dim=(2, 3), keepdim=True)
    return mean + factor * (x - mean)


def color(x: torch.Tensor, gains: np.ndarray, offsets: np.ndarray) -> torch.Tensor:
    """Per-channel affine colour change of [N, C, H, W] images."""
    g = torch.as_tensor(gains, dtype=x.dtype).view(1, -1, 1, 1)
    b = torch.as_tensor(offsets, dtype=x.dtype).view(1, -1, 1, 1)
    return x * g + b


def apply_in_chunks(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """fn over fixed-size chunks of x (fixed size keeps the seeded noise independent of the dataset size)."""
    return torch.cat([fn(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]) if len(x) else x
