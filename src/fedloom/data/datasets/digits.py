"""scikit-learn's handwritten digits (UCI optical recognition of handwritten digits; Alpaydin & Kaynak, 1998).

1,797 8x8 images with values 0..16, scaled like PFLlib's MNIST: x = (v / 16 - 0.5) / 0.5, in [-1, 1].
Small and bundled with scikit-learn, so tests and quick experiments need no download.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from fedloom.data.base import DATASETS, LoadContext, PooledDataset


@DATASETS.register("digits")
@dataclass(frozen=True)
class Digits:
    """sklearn.datasets.load_digits as [N, 1, 8, 8] float32; no options."""

    default_partition: ClassVar[str] = "dirichlet"

    def load(self, ctx: LoadContext) -> PooledDataset:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = np.asarray(bunch.images, dtype=np.float32)
        x = torch.from_numpy((images / 16.0 - 0.5) / 0.5).unsqueeze(1).contiguous()
        y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
        return PooledDataset(
            name="digits", x=x, y=y, num_classes=10,
            class_names=[str(i) for i in range(10)], source="scikit-learn",
        )  # fmt: skip
