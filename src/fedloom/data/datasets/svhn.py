"""SVHN, the Street View House Numbers (Netzer et al., NIPS workshop 2011), cropped-digit format 2:
pooled train + test = 99,289 3x32x32 images (``extra`` adds 531,131 with ``--svhn.extra true``).

Format: MATLAB files ``train_32x32.mat`` / ``test_32x32.mat`` (/ ``extra_32x32.mat``) with ``X`` uint8
[32, 32, 3, N] and ``y`` [N, 1] where digit 0 is labelled 10; read with scipy.io.loadmat. Searched in
--data-dir, $FEDLOOM_DATA and ~/.cache/fedloom (also ``svhn/``); ``--svhn.download true`` fetches them from
http://ufldl.stanford.edu/housenumbers/ and checks the MD5s torchvision uses. Normalised as PFLlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
import torch

from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.data.datasets.common import (check_given_dir, check_labels, check_pairs, download_hint, first_found,
                                          images_to_tensor, missing, search_dirs)
from fedloom.data.download import RemoteFile, default_data_root, download_requested, fetch
from fedloom.errors import DataError

URL = "http://ufldl.stanford.edu/housenumbers/"
REMOTE = {
    "train": RemoteFile("train_32x32.mat", URL + "train_32x32.mat", "md5:e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": RemoteFile("test_32x32.mat", URL + "test_32x32.mat", "md5:eb5a983be6a315427106f1b164d9cef3"),
    "extra": RemoteFile("extra_32x32.mat", URL + "extra_32x32.mat", "md5:a93ce644f1a588dc4d68dda5feec44a7"),
}


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 3, 32, 32] and labels 0..9 from one SVHN .mat file."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read {path}: {exc} (corrupt file; download it again)") from exc
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} lacks the 'X' or 'y' variable; not an SVHN 32x32 file")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X has shape {x.shape}, expected [32, 32, 3, N]")
    images = x.transpose(3, 2, 0, 1).astype(np.uint8)
    y = np.where(y == 10, 0, y)  # SVHN labels digit 0 as 10
    check_pairs(images, y, (3, 32, 32), path)
    return images, check_labels(y, 10, path)


@DATASETS.register("svhn")
@dataclass(frozen=True)
class SVHN:
    """SVHN train + test (+ extra); ``download`` fetches the .mat files (checksum-verified) when missing."""

    extra: bool = False
    download: bool = False

    default_partition: ClassVar[str] = "dirichlet"

    def load(self, ctx: LoadContext) -> PooledDataset:
        parts = ["train", "test"] + (["extra"] if self.extra else [])
        names = [REMOTE[p].name for p in parts]
        tried = search_dirs(ctx.data_dir, ("", "svhn", "SVHN"))
        folder: Optional[Path] = first_found(tried, lambda d: d if all((d / n).is_file() for n in names) else None)
        if folder is None:
            check_given_dir(ctx.data_dir, "SVHN", ", ".join(names), tried, names)
        if folder is None and download_requested(self.download):
            folder = default_data_root() / "svhn"
            for p in parts:
                fetch(REMOTE[p], folder)
        if folder is None:
            raise missing("SVHN", ", ".join(names), tried,
                          f"{download_hint('svhn')} Or download them from {URL} (format 2, cropped digits).")
        loaded = [read_mat(folder / n) for n in names]
        x = np.concatenate([a for a, _ in loaded])
        y = np.concatenate([b for _, b in loaded])
        return PooledDataset(name="svhn", x=images_to_tensor(x), y=torch.from_numpy(y), num_classes=10,
                             class_names=[str(i) for i in range(10)], source=str(folder))
