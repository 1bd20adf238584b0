"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017, arXiv:1708.07747), pooled train + test = 70,000 images.

Normalized as PFLlib does (ToTensor then Normalize(0.5, 0.5)): x = (pixel / 255 - 0.5) / 0.5, in [-1, 1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch

from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.data.datasets.common import check_given_dir
from fedloom.data.datasets.idx import read_idx
from fedloom.errors import DataError

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def candidate_roots(data_dir: Optional[Path]) -> list[Path]:
    """Roots searched in order: $FEDLOOM_DATA, ~/.cache/fedloom, the Debian package's folder; a given
    --data-dir alone (no fallback: a wrong path must not silently load the system copy)."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    roots: list[Path] = []
    if os.environ.get("FEDLOOM_DATA"):
        roots.append(Path(os.environ["FEDLOOM_DATA"]).expanduser())
    roots += [Path("~/.cache/fedloom").expanduser(), SYSTEM_DIR]
    return roots


def candidate_dirs(data_dir: Optional[Path]) -> list[Path]:
    """Each root itself, its ``fashion-mnist/`` subfolder and the torchvision layout ``FashionMNIST/raw``."""
    dirs: list[Path] = []
    for root in candidate_roots(data_dir):
        for d in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw"):
            if d not in dirs:
                dirs.append(d)
    return dirs


def _file_in(directory: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def find_files(data_dir: Optional[Path]) -> list[Path]:
    """The four idx files from the first folder that holds all of them, else one DataError listing all tried."""
    tried = candidate_dirs(data_dir)
    for directory in tried:
        found = [_file_in(directory, stem) for stem in FILES]
        if all(p is not None for p in found):
            return [p for p in found if p is not None]
    check_given_dir(data_dir, "Fashion-MNIST", ", ".join(FILES), tried, FILES)
    listing = ", ".join(str(d) for d in tried)
    raise DataError(
        "Fashion-MNIST files not found (need train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, .gz or uncompressed). Looked in: "
        f"{listing}. To get them: `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download "
        "the four .gz files from https://github.com/zalandoresearch/fashion-mnist into ~/.cache/fedloom, "
        "or pass --data-dir DIR (or set FEDLOOM_DATA) pointing at a folder that holds them."
    )


def _load_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} / {labels_path} do not match: images {images.shape}, labels {labels.shape}"
        )
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise DataError(f"{labels_path} has label {int(labels.max())}; Fashion-MNIST labels are 0..9")
    return images, labels


@DATASETS.register("fashion-mnist")
@dataclass(frozen=True)
class FashionMNIST:
    """Fashion-MNIST from local idx files; no options."""

    default_partition: ClassVar[str] = "dirichlet"

    def source_files(self, ctx: LoadContext) -> list[Path]:
        """The files ``load`` decodes (the array cache keys on them: fedloom.data.array_cache)."""
        return find_files(ctx.data_dir)

    def load(self, ctx: LoadContext) -> PooledDataset:
        tr_img, tr_lab, te_img, te_lab = find_files(ctx.data_dir)
        xs, ys = zip(_load_split(tr_img, tr_lab), _load_split(te_img, te_lab))
        images = np.concatenate(xs)
        x = torch.from_numpy(images.astype(np.float32)).div_(255.0).sub_(0.5).div_(0.5).unsqueeze(1)
        y = torch.from_numpy(np.concatenate(ys).astype(np.int64))
        return PooledDataset(
            name="fashion-mnist", x=x, y=y, num_classes=10,
            class_names=list(CLASS_NAMES), source=str(tr_img.parent),
        )  # fmt: skip
