"""scikit-learn's handwritten digits (UCI optical recognition of handwritten digits; Alpaydin & Kaynak, 1998).

1,797 8x8 images with values 0..16, scaled like PFLlib's MNIST: x = (v / 16 - 0.5) / 0.5, in [-1, 1].
Small and bundled with scikit-learn, so tests and quick experiments need no download. The bundled
``sklearn/datasets/data/digits.csv.gz`` is read directly (the same values load_digits returns): importing
sklearn.datasets pulls in scipy and pandas and costs ~1 s of every run's start-up.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path
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
        images, target = load_digits_arrays()
        images = np.asarray(images, dtype=np.float32)
        x = torch.from_numpy((images / 16.0 - 0.5) / 0.5).unsqueeze(1).contiguous()
        y = torch.from_numpy(np.asarray(target, dtype=np.int64))
        return PooledDataset(
            name="digits", x=x, y=y, num_classes=10,
            class_names=[str(i) for i in range(10)], source="scikit-learn",
        )  # fmt: skip


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 8, 8] float64, target [1797]) as sklearn.datasets.load_digits returns them: the last CSV
    column is the label. Falls back to load_digits when the CSV is not where sklearn keeps it."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    roots = list(spec.submodule_search_locations or []) if spec else []
    csv = next((Path(r) / "datasets" / "data" / "digits.csv.gz" for r in roots
                if (Path(r) / "datasets" / "data" / "digits.csv.gz").is_file()), None)
    if csv is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(csv, "rt", encoding="utf-8") as handle:
        data = np.loadtxt(handle, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
