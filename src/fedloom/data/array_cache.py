"""Decoded datasets cached as memory-mapped arrays: ``<cache_dir>/datasets/<key>/`` holds ``x.npy``, ``y.npy``
(and ``natural_ids.npy``) with ``meta.json``.

Decoding a file dataset is a fixed cost of every run and of every worker process: Fashion-MNIST's four gzipped idx
files take about a second to inflate, convert to float32 and normalise, on every start. A dataset that names the
files it reads (``source_files(ctx)``) is decoded once; later loads map the arrays copy-on-write (``mmap_mode="c"``:
writable for torch, never written back), so they cost milliseconds and every process of a run — the main one, the
processes engine's workers, Ray actors on this machine — reads the same pages of the page cache instead of holding
its own copy.

key = sha256 of the dataset's registry name, its options, each source file's absolute path, size and modification
time, and FORMAT_VERSION (bump it when a loader's decoding changes). A folder whose arrays do not match its
meta.json is decoded again; writes go to a temporary folder renamed into place, so a crash leaves no half entry;
an unwritable cache only loses the speed-up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from fedloom.data.base import LoadContext, PooledDataset

log = logging.getLogger(__name__)

#: bump when a cached loader's decoding changes, so that cached arrays are decoded again
FORMAT_VERSION = 1
_META_FIELDS = ("name", "num_classes", "class_names", "source", "vocab_size")


def load_pooled(spec: Any, ctx: LoadContext, cache_root: Path) -> PooledDataset:
    """``spec.load(ctx)``, from the array cache when the spec names its source files (``source_files``)."""
    named = getattr(spec, "source_files", None)
    files = named(ctx) if named is not None else None
    if not files:
        return spec.load(ctx)
    folder = Path(cache_root) / "datasets" / dataset_key(spec, files)
    cached = read_arrays(folder)
    if cached is not None:
        return cached
    pooled = spec.load(ctx)
    write_arrays(folder, pooled)
    return pooled


def dataset_key(spec: Any, files: list[Path]) -> str:
    stats = []
    for path in files:
        st = Path(path).stat()
        stats.append([str(Path(path).resolve()), st.st_size, st.st_mtime_ns])
    identity = {"dataset": getattr(spec, "registry_name", type(spec).__name__),
                "options": dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else {},
                "files": stats, "version": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_arrays(folder: Path) -> Optional[PooledDataset]:
    """The cached dataset in ``folder``, or None if absent or not matching its meta.json."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="c", allow_pickle=False)
                  for name in meta["arrays"]}
        for name, (shape, dtype) in meta["arrays"].items():
            if list(arrays[name].shape) != shape or str(arrays[name].dtype) != dtype:
                raise ValueError(f"{name}.npy is {arrays[name].shape} {arrays[name].dtype}, meta says {shape} {dtype}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the cached dataset in %s (%s); decoding the source files again", folder, exc)
        return None
    natural = arrays.get("natural_ids")
    return PooledDataset(x=torch.from_numpy(arrays["x"]), y=torch.from_numpy(arrays["y"]),
                         natural_ids=None if natural is None else np.asarray(natural),
                         **{k: meta[k] for k in _META_FIELDS})


def write_arrays(folder: Path, pooled: PooledDataset) -> None:
    arrays = {"x": pooled.x.cpu().numpy(), "y": pooled.y.cpu().numpy()}
    if pooled.natural_ids is not None:
        arrays["natural_ids"] = np.asarray(pooled.natural_ids)
    meta = {k: getattr(pooled, k) for k in _META_FIELDS}
    meta["arrays"] = {name: [list(a.shape), str(a.dtype)] for name, a in arrays.items()}
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        for name, array in arrays.items():
            np.save(partial / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        (partial / "meta.json").write_text(json.dumps(meta, default=str))  # last: it marks the entry complete
        try:
            os.replace(partial, folder)
        except OSError:  # another process cached it first (the folder exists and is not empty)
            shutil.rmtree(partial, ignore_errors=True)
    except OSError as exc:
        log.warning("could not cache the decoded dataset in %s (%s); later runs decode it again", folder, exc)
