"""Tiny-ImageNet-200 (Le & Yang, Stanford CS231n, 2015): 200 classes of 3x64x64 images, pooled train (500 per
class) + val (50 per class) = 110,000 images; the unlabelled test split is not used.

Format: the official zip unpacked as ``tiny-imagenet-200/`` with ``wnids.txt``, ``train/<wnid>/images/*.JPEG``
and ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt`` (tab-separated file name, wnid, box).
Classes are the sorted wnids, as torchvision's ImageFolder orders them; class names come from ``words.txt``
when present. Grey images are converted to RGB (PIL). Normalised as PFLlib. As float32 the full set takes
about 5.4 GB; ``max_per_class`` keeps the first k training images of each class (file-name order).
``--tiny-imagenet.download true`` fetches the 248 MB zip (MD5-checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch

from fedloom.config import check_fields, hp
from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.data.datasets.common import (check_given_dir, download_hint, first_found, images_to_tensor, missing,
                                          search_dirs)
from fedloom.data.download import RemoteFile, default_data_root, download_requested, extract, fetch
from fedloom.errors import DataError

REMOTE = RemoteFile("tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                    "md5:90528d7ca1a48142e341f4ef8d21d0de")
FOLDER = "tiny-imagenet-200"


def read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    if arr.shape != (64, 64, 3):
        raise DataError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, Tiny-ImageNet images are 64x64")
    return arr.transpose(2, 0, 1)


def labelled_files(root: Path, wnids: list[str], max_per_class: Optional[int]) -> list[tuple[Path, int]]:
    """(image path, class index) for every training and validation image."""
    index = {w: i for i, w in enumerate(wnids)}
    items: list[tuple[Path, int]] = []
    for wnid in wnids:
        files = sorted((root / "train" / wnid / "images").glob("*.JPEG"))
        items += [(f, index[wnid]) for f in files[:max_per_class]]
    annotations = root / "val" / "val_annotations.txt"
    for line in annotations.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(f"{annotations}: malformed line {line!r} (expected file<TAB>wnid<TAB>box)")
        items.append((root / "val" / "images" / fields[0], index[fields[1]]))
    return items


def class_names(root: Path, wnids: list[str]) -> list[str]:
    words = root / "words.txt"
    if not words.is_file():
        return list(wnids)
    table = dict(line.split("\t", 1) for line in words.read_text().splitlines() if "\t" in line)
    return [table.get(w, w).split(",")[0].strip() for w in wnids]


def is_root(d: Path) -> Optional[Path]:
    ok = (d / "wnids.txt").is_file() and (d / "train").is_dir() and (d / "val" / "val_annotations.txt").is_file()
    return d if ok else None


@DATASETS.register("tiny-imagenet")
@dataclass(frozen=True)
class TinyImageNet:
    """Tiny-ImageNet train + val; ``max_per_class`` caps training images per class (None = all 500)."""

    max_per_class: Optional[int] = hp(None, ge=1, help="training images kept per class (None: all 500)")
    download: bool = False

    default_partition: ClassVar[str] = "dirichlet"

    def __post_init__(self) -> None:
        check_fields(self)

    def load(self, ctx: LoadContext) -> PooledDataset:
        tried = search_dirs(ctx.data_dir, ("", FOLDER, f"tiny-imagenet/{FOLDER}"))
        root = first_found(tried, is_root)
        if root is None:
            check_given_dir(ctx.data_dir, "Tiny-ImageNet", f"{FOLDER}/ with wnids.txt, train/ and val/", tried)
        if root is None and download_requested(self.download):
            base = default_data_root() / "tiny-imagenet"
            extract(fetch(REMOTE, base), base)
            root = is_root(base / FOLDER)
        if root is None:
            raise missing("Tiny-ImageNet", f"{FOLDER}/ with wnids.txt, train/<wnid>/images/*.JPEG and "
                          "val/val_annotations.txt", tried,
                          f"{download_hint('tiny-imagenet')} Or download {REMOTE.url} and unzip it.")
        wnids = sorted((root / "wnids.txt").read_text().split())
        items = labelled_files(root, wnids, self.max_per_class)
        x = np.stack([read_image(p) for p, _ in items])
        y = np.array([c for _, c in items], dtype=np.int64)
        return PooledDataset(name="tiny-imagenet", x=images_to_tensor(x), y=torch.from_numpy(y),
                             num_classes=len(wnids), class_names=class_names(root, wnids), source=str(root))
