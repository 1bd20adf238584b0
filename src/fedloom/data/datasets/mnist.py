"""MNIST (LeCun, Bottou, Bengio & Haffner, 1998), pooled train + test = 70,000 28x28 digits.

Format: the four idx files of http://yann.lecun.com/exdb/mnist/ (.gz or uncompressed), searched in
--data-dir, $FEDLOOM_DATA and ~/.cache/fedloom, each also as ``mnist/`` and torchvision's ``MNIST/raw``.
``--mnist.download true`` fetches them from the mirror torchvision uses and checks the official MD5s.
Normalised as PFLlib: (x/255 - 0.5)/0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch

from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.data.datasets.common import (check_given_dir, check_labels, check_pairs, download_hint, file_in,
                                          first_found, images_to_tensor, missing, search_dirs)
from fedloom.data.datasets.idx import read_idx
from fedloom.data.download import RemoteFile, default_data_root, download_requested, fetch

MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
REMOTE = tuple(RemoteFile(name, MIRROR + name, f"md5:{md5}") for name, md5 in _MD5.items())
STEMS = tuple(r.name[: -len(".gz")] for r in REMOTE)
SUBDIRS = ("", "mnist", "MNIST/raw")


def idx_quad(directory: Path, stems: tuple[str, ...]) -> Optional[list[Path]]:
    """The four idx files (train images, train labels, test images, test labels) if all are in ``directory``."""
    found = [file_in(directory, s) for s in stems]
    return [p for p in found if p is not None] if all(found) else None


def load_idx_pair(images: Path, labels: Path, num_classes: int,
                  transpose: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 1, 28, 28] and checked int64 labels from one idx image/label pair."""
    x, y = read_idx(images), read_idx(labels)
    check_pairs(x, y, (28, 28), f"{images} / {labels}")
    if transpose:  # EMNIST stores images column-major (transposed) relative to MNIST
        x = x.transpose(0, 2, 1)
    return x[:, None], check_labels(y, num_classes, labels)


def pooled_from_idx(name: str, files: list[Path], num_classes: int, class_names: list[str],
                    transpose: bool = False) -> PooledDataset:
    (xa, ya), (xb, yb) = (load_idx_pair(files[0], files[1], num_classes, transpose),
                          load_idx_pair(files[2], files[3], num_classes, transpose))
    return PooledDataset(
        name=name, x=images_to_tensor(np.concatenate([xa, xb])),
        y=torch.from_numpy(np.concatenate([ya, yb])), num_classes=num_classes,
        class_names=class_names, source=str(files[0].parent),
    )  # fmt: skip


@DATASETS.register("mnist")
@dataclass(frozen=True)
class MNIST:
    """MNIST from local idx files; ``download`` fetches them (checksum-verified) when they are missing."""

    download: bool = False

    default_partition: ClassVar[str] = "dirichlet"

    def source_files(self, ctx: LoadContext) -> Optional[list[Path]]:
        """The local idx files ``load`` would decode, None when they are missing (``load`` then downloads them
        or explains where to put them); the array cache keys on them (fedloom.data.array_cache)."""
        return first_found(search_dirs(ctx.data_dir, SUBDIRS), lambda d: idx_quad(d, STEMS))

    def load(self, ctx: LoadContext) -> PooledDataset:
        tried = search_dirs(ctx.data_dir, SUBDIRS)
        files = first_found(tried, lambda d: idx_quad(d, STEMS))
        if files is None:
            check_given_dir(ctx.data_dir, "MNIST", ", ".join(STEMS), tried, STEMS)
        if files is None and download_requested(self.download):
            folder = default_data_root() / "mnist"
            files = [fetch(r, folder) for r in REMOTE]
        if files is None:
            raise missing("MNIST", ", ".join(STEMS) + " (.gz or uncompressed)", tried,
                          f"{download_hint('mnist')} Or download the four .gz files from {MIRROR} (or "
                          "http://yann.lecun.com/exdb/mnist/) into one of these folders.")
        return pooled_from_idx("mnist", files, 10, [str(i) for i in range(10)])
