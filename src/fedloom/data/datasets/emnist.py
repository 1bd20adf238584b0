"""EMNIST (Cohen, Afshar, Tapson & van Schaik, "EMNIST: an extension of MNIST to handwritten letters", 2017).

Format: NIST's ``gzip.zip`` unpacked, i.e. idx files ``emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte``
(.gz or not) in a folder ``gzip/``, ``emnist/`` or torchvision's ``EMNIST/raw`` under --data-dir,
$FEDLOOM_DATA or ~/.cache/fedloom. Images are stored transposed and are turned upright here. ``split``:
balanced (47 classes, 131,600 images), byclass (62 classes, 814,255), bymerge (47), letters (26; labels 1..26
shifted to 0..25), digits (10), mnist (10). ``--emnist.download true`` fetches gzip.zip (535 MB, MD5-checked)
and unpacks the chosen split.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from fedloom.config import check_fields, hp
from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.data.datasets.common import check_given_dir, download_hint, first_found, missing, search_dirs
from fedloom.data.datasets.mnist import idx_quad, pooled_from_idx
from fedloom.data.download import RemoteFile, default_data_root, download_requested, extract, fetch

ARCHIVE = RemoteFile("gzip.zip", "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
                     "md5:58c8d27c78d21e728a6bc7b3cc06412e")
_MERGED = list(string.digits + string.ascii_uppercase) + list("abdefghnqrt")
CLASS_NAMES = {
    "byclass": list(string.digits + string.ascii_uppercase + string.ascii_lowercase),
    "balanced": _MERGED, "bymerge": _MERGED, "letters": list(string.ascii_lowercase),
    "digits": list(string.digits), "mnist": list(string.digits),
}  # fmt: skip
SUBDIRS = ("", "gzip", "emnist", "emnist/gzip", "EMNIST/raw")


def stems(split: str) -> tuple[str, ...]:
    return tuple(f"emnist-{split}-{part}-ubyte" for part in
                 ("train-images-idx3", "train-labels-idx1", "test-images-idx3", "test-labels-idx1"))


@DATASETS.register("emnist")
@dataclass(frozen=True)
class EMNIST:
    """EMNIST ``split`` from local idx files; ``download`` fetches NIST's archive when they are missing."""

    split: str = hp("balanced", choices=tuple(CLASS_NAMES), help="which EMNIST split")
    download: bool = False

    default_partition: ClassVar[str] = "dirichlet"

    def __post_init__(self) -> None:
        check_fields(self)

    def load(self, ctx: LoadContext) -> PooledDataset:
        names = stems(self.split)
        tried = search_dirs(ctx.data_dir, SUBDIRS)
        files = first_found(tried, lambda d: idx_quad(d, names))
        if files is None:
            check_given_dir(ctx.data_dir, f"EMNIST ({self.split})", ", ".join(names), tried, names)
        if files is None and download_requested(self.download):
            files = self._download(names)
        if files is None:
            raise missing(f"EMNIST ({self.split})", ", ".join(names) + " (.gz or uncompressed)", tried,
                          f"{download_hint('emnist')} Or download {ARCHIVE.url} and unzip it (it holds gzip/).")
        classes = CLASS_NAMES[self.split]
        shift = 1 if self.split == "letters" else 0  # letters are labelled 1..26
        ds = pooled_from_idx("emnist", files, len(classes) + shift, classes, transpose=True)
        ds.y -= shift
        ds.num_classes = len(classes)
        return ds

    def _download(self, names: tuple[str, ...]) -> Optional[list[Path]]:
        root = default_data_root() / "emnist"
        archive = fetch(ARCHIVE, root)
        extract(archive, root, [f"gzip/{n}.gz" for n in names])
        return idx_quad(root / "gzip", names)
