"""Synthetic(alpha, beta) from FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

Per device k:  u_k ~ N(0, alpha), B_k ~ N(0, beta), W_k[i, j] ~ N(u_k, 1), b_k[i] ~ N(u_k, 1),
v_k[j] ~ N(B_k, 1), x ~ N(v_k, Sigma) with Sigma = diag(j^-1.2), j = 1..dimension, and
y = argmax(softmax(W_k x + b_k)). alpha controls how much the local models differ, beta how much the local
input distributions differ. As in the authors' generator, the second argument of N(., .) is passed to numpy as
the standard deviation. ``iid=True`` is their synthetic_iid: one shared W, b ~ N(0, 1) and v_k = 0.

Device sizes follow a power law, n_k = int(lognormal(mean=4, sigma=2)) + 50 as in their code, but capped at
``max_samples_per_device`` (their code caps nothing; lognormal(4, 2) occasionally gives millions of samples).
Each sample's ``natural_ids`` entry is its device index, so the 'natural' partition gives one client per device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import torch

from fedloom.config import check_fields, hp
from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.errors import ConfigError
from fedloom.seeding import numpy_generator


@DATASETS.register("synthetic")
@dataclass(frozen=True)
class Synthetic:
    """Options of FedProx's Synthetic(alpha, beta); devices=None means one device per client."""

    alpha: float = hp(1.0, ge=0, help="how much the local models differ")
    beta: float = hp(1.0, ge=0, help="how much the local input distributions differ")
    devices: Optional[int] = hp(None, ge=1, help="devices generated (None: one per client)")
    dimension: int = hp(60, ge=1, help="input features")
    num_classes: int = hp(10, ge=2, help="classes")
    iid: bool = False
    max_samples_per_device: int = hp(5000, ge=1, help="cap of the power-law device sizes")

    default_partition: ClassVar[str] = "natural"

    def __post_init__(self) -> None:
        check_fields(self)

    def load(self, ctx: LoadContext) -> PooledDataset:
        devices = self.devices if self.devices is not None else ctx.num_clients
        if devices < 1:
            raise ConfigError(f"synthetic: devices must be >= 1 (got {devices})")
        rng = numpy_generator(ctx.seed, -1, -1, "synthetic-data")
        x, ys = self._generate(rng, devices)
        ids = np.repeat(np.arange(devices, dtype=np.int64), [len(y) for y in ys])
        return PooledDataset(
            name="synthetic",
            x=torch.from_numpy(x),
            y=torch.from_numpy(np.concatenate(ys).astype(np.int64)),
            num_classes=self.num_classes,
            natural_ids=ids,
            class_names=[str(i) for i in range(self.num_classes)],
            source="generated",
        )

    def device_sizes(self, rng: np.random.Generator, devices: int) -> np.ndarray:
        """Power-law sizes int(lognormal(4, 2)) + 50, capped at max_samples_per_device."""
        sizes = rng.lognormal(4.0, 2.0, devices).astype(np.int64) + 50
        return np.minimum(sizes, self.max_samples_per_device)

    def _generate(self, rng: np.random.Generator, devices: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """The pooled float32 inputs and each device's labels. Each device's float64 draws are rounded into one
        preallocated float32 array as they are made (the values of rounding the concatenation), so the peak
        memory is the float32 data, not several float64 copies of it (100,000 devices: 1.6 GB, not 8)."""
        d, c = self.dimension, self.num_classes
        sizes = self.device_sizes(rng, devices)
        u = rng.normal(0.0, self.alpha, devices)
        b_mean = rng.normal(0.0, self.beta, devices)
        std_x = np.arange(1, d + 1, dtype=np.float64) ** -0.6  # sqrt of Sigma_jj = j^-1.2
        if self.iid:
            v = np.zeros((devices, d))
            w_shared, b_shared = rng.normal(0.0, 1.0, (d, c)), rng.normal(0.0, 1.0, c)
        else:
            v = rng.normal(b_mean[:, None], 1.0, (devices, d))
        out = np.empty((int(sizes.sum()), d), dtype=np.float32)
        ys, start = [], 0
        for k in range(devices):
            if self.iid:
                w, b = w_shared, b_shared
            else:
                w, b = rng.normal(u[k], 1.0, (d, c)), rng.normal(u[k], 1.0, c)
            x = v[k] + std_x * rng.standard_normal((int(sizes[k]), d))
            out[start:start + len(x)] = x
            start += len(x)
            ys.append(np.argmax(x @ w + b, axis=1))  # softmax is monotone, so argmax of the logits
        return out, ys
