"""CIFAR-10 and CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009), pooled
train + test = 60,000 3x32x32 images.

Format: the official "python version" archives unpacked: ``cifar-10-batches-py/`` (data_batch_1..5,
test_batch, batches.meta) and ``cifar-100-python/`` (train, test, meta), pickled dicts with ``data`` uint8
[N, 3072] (channel-major rows) and ``labels`` / ``fine_labels`` / ``coarse_labels``. Searched under --data-dir,
$FEDLOOM_DATA and ~/.cache/fedloom; ``--cifar10.download true`` fetches the archive (MD5-checked). The pickles
are read with an unpickler that only accepts numpy arrays and builtins, so a foreign file cannot run code.
Normalised as PFLlib: (x/255 - 0.5)/0.5 per channel.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from fedloom.data.base import DATASETS, LoadContext, PooledDataset
from fedloom.data.datasets.common import (check_given_dir, check_labels, check_pairs, download_hint, first_found,
                                          images_to_tensor, missing, search_dirs)
from fedloom.data.download import RemoteFile, default_data_root, download_requested, extract, fetch
from fedloom.errors import DataError

_SAFE = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
         ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
         ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
         ("numpy._core.numeric", "_frombuffer")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")
        return super().find_class(module, name)


def read_batch(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with str keys."""
    try:
        with open(path, "rb") as fh:
            raw = _ArrayUnpickler(fh, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise DataError(f"cannot read CIFAR batch {path}: {exc} (corrupt file; download it again)") from exc
    if not isinstance(raw, dict):
        raise DataError(f"{path} is not a CIFAR batch (expected a pickled dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def images_and_labels(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = read_batch(path)
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path} lacks 'data' or '{label_key}'; not a CIFAR batch of this dataset")
    data, labels = np.asarray(batch["data"], dtype=np.uint8), np.asarray(batch[label_key])
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: data has shape {data.shape}, expected [N, 3072]")
    images = data.reshape(-1, 3, 32, 32)
    check_pairs(images, labels, (3, 32, 32), path)
    return images, check_labels(labels, num_classes, path)


def class_names(meta: Path, key: str) -> Optional[list[str]]:
    if not meta.is_file():
        return None
    names = read_batch(meta).get(key)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None else None


def pooled(name: str, folder: Path, files: list[str], label_key: str, num_classes: int,
           names: Optional[list[str]]) -> PooledDataset:
    parts = [images_and_labels(folder / f, label_key, num_classes) for f in files]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return PooledDataset(name=name, x=images_to_tensor(x), y=torch.from_numpy(y), num_classes=num_classes,
                         class_names=names, source=str(folder))


def locate(ctx: LoadContext, folder: str, files: list[str], remote: RemoteFile, flag: bool,
           name: str, option: str) -> Path:
    """The folder holding every batch file, downloading the archive when asked; else one DataError."""
    tried = search_dirs(ctx.data_dir, ("", folder, f"{option}/{folder}"))
    has_all = lambda d: d if all((d / f).is_file() for f in files) else None  # noqa: E731
    found = first_found(tried, has_all)
    if found is None:
        check_given_dir(ctx.data_dir, name, f"{folder}/ with {', '.join(files)}", tried, files)
    if found is None and download_requested(flag):
        root = default_data_root() / option
        extract(fetch(remote, root), root)
        found = has_all(root / folder)
    if found is None:
        raise missing(name, f"{folder}/ with {', '.join(files)}", tried,
                      f"{download_hint(option)} Or download {remote.url} and unpack it.")
    return found


CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR10_REMOTE = RemoteFile("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                            "md5:c58f30108f718f92721af3b95e74349a")
CIFAR100_REMOTE = RemoteFile("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                             "md5:eb9058c3a382ffc7106e4002c42a8d85")


@DATASETS.register("cifar10")
@dataclass(frozen=True)
class CIFAR10:
    """CIFAR-10 from the python batches; ``download`` fetches them (checksum-verified) when missing."""

    download: bool = False

    default_partition: ClassVar[str] = "dirichlet"

    def load(self, ctx: LoadContext) -> PooledDataset:
        folder = locate(ctx, "cifar-10-batches-py", CIFAR10_FILES, CIFAR10_REMOTE, self.download,
                        "CIFAR-10", "cifar10")
        names = class_names(folder / "batches.meta", "label_names")
        return pooled("cifar10", folder, CIFAR10_FILES, "labels", 10, names)


@DATASETS.register("cifar100")
@dataclass(frozen=True)
class CIFAR100:
    """CIFAR-100 with its 100 fine labels, or the 20 superclasses with ``coarse``."""

    coarse: bool = False
    download: bool = False

    default_partition: ClassVar[str] = "dirichlet"

    def load(self, ctx: LoadContext) -> PooledDataset:
        folder = locate(ctx, "cifar-100-python", ["train", "test"], CIFAR100_REMOTE, self.download,
                        "CIFAR-100", "cifar100")
        key, n = ("coarse", 20) if self.coarse else ("fine", 100)
        names = class_names(folder / "meta", f"{key}_label_names")
        return pooled("cifar100", folder, ["train", "test"], f"{key}_labels", n, names)
