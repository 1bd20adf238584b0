"""Helpers shared by the file-based loaders: where to look, one clear error when files are missing, and the
PFLlib image normalisation. Search order for every dataset: $FEDLOOM_DATA, ~/.cache/fedloom (or
$FEDLOOM_CACHE, where downloads go), each as is and with the dataset's own subfolder names. A given --data-dir
replaces that search: it is the only place looked in, and files missing there are an error naming it (never a
silent fallback to other folders, a bundled copy or a download)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, TypeVar

import numpy as np
import torch

from fedloom.data.download import default_data_root
from fedloom.errors import DataError

T = TypeVar("T")


def search_roots(data_dir: Optional[Path]) -> list[Path]:
    """--data-dir alone when given; else $FEDLOOM_DATA, the download root ($FEDLOOM_CACHE or
    ~/.cache/fedloom), ~/.cache/fedloom."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    roots: list[Path] = []
    if os.environ.get("FEDLOOM_DATA"):
        roots.append(Path(os.environ["FEDLOOM_DATA"]).expanduser())
    roots += [default_data_root(), Path("~/.cache/fedloom").expanduser()]
    return list(dict.fromkeys(roots))


def search_dirs(data_dir: Optional[Path], subdirs: Iterable[str]) -> list[Path]:
    """Each root followed by root/<sub> for every sub-path ('' means the root itself)."""
    dirs: list[Path] = []
    subs = list(subdirs)
    for root in search_roots(data_dir):
        for sub in subs:
            d = root / sub if sub else root
            if d not in dirs:
                dirs.append(d)
    return dirs


def first_found(dirs: list[Path], probe: Callable[[Path], Optional[T]]) -> Optional[T]:
    """The first non-None ``probe(d)`` over ``dirs``."""
    for d in dirs:
        found = probe(d)
        if found is not None:
            return found
    return None


def missing(name: str, needed: str, tried: list[Path], how: str) -> DataError:
    """The one error a loader raises when its files are not found: what, where it looked, how to get them
    (one line, like every fedloom error)."""
    return DataError(
        f"{name} files not found (need {needed}). Looked in: {', '.join(str(d) for d in tried)}. To get them: "
        f"{how} Or pass --data-dir DIR (or set FEDLOOM_DATA) pointing at a folder that holds them."
    )


def check_given_dir(data_dir: Optional[Path], name: str, needed: str, tried: list[Path],
                    files: Sequence[str] = ()) -> None:
    """Called by a loader whose search found nothing: when --data-dir was given (``tried`` is then that folder
    and its subfolders), raise the error naming it and, among ``files`` (stems; ``.gz`` counts), those missing
    from the subfolder that holds the most of them. Without --data-dir, return (the loader may download)."""
    if data_dir is None:
        return
    given = Path(data_dir).expanduser()
    if not given.exists():
        raise DataError(f"--data-dir {data_dir}: no such folder")
    if not given.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a folder")
    detail = f"need {needed}"
    if files:
        best = max(tried, key=lambda d: sum(file_in(d, f) is not None for f in files))
        absent = [f for f in files if file_in(best, f) is None]
        if len(absent) < len(files):
            detail = f"{best} lacks {', '.join(absent)}"
    raise DataError(f"--data-dir {data_dir} does not hold the {name} files ({detail}; looked in "
                    f"{', '.join(str(d) for d in tried)}); --data-dir is the only place searched when given")


def download_hint(name: str) -> str:
    return (f"rerun with --{name}.download true (or FEDLOOM_DOWNLOAD=1) to download them into "
            f"{default_data_root()} with checksum verification.")


def file_in(directory: Path, stem: str, suffixes: tuple[str, ...] = (".gz", "")) -> Optional[Path]:
    """directory/stem+suffix for the first suffix that exists."""
    for suffix in suffixes:
        if (directory / (stem + suffix)).is_file():
            return directory / (stem + suffix)
    return None


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 (v/255 - 0.5)/0.5 in [-1, 1], as PFLlib's Normalize(0.5, 0.5)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    return x.div_(255.0).sub_(0.5).div_(0.5)


def check_labels(labels: np.ndarray, num_classes: int, where: object) -> np.ndarray:
    """int64 labels, refusing values outside 0..num_classes-1."""
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: labels span {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}")
    return labels


def check_pairs(x: np.ndarray, y: np.ndarray, shape: tuple[int, ...], where: object) -> None:
    """x must be [N, *shape] with one label per sample."""
    if tuple(x.shape[1:]) != shape or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"{where}: got inputs {tuple(x.shape)} and labels {tuple(y.shape)}, expected "
                        f"[N, {', '.join(map(str, shape))}] and [N]")
