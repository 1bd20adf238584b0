"""On-disk cache of partitions: ``<cache_dir>/partitions/<key>.npz`` (index arrays) and ``<key>.json``.

key = first 16 hex digits of sha256(canonical JSON of the parameters). The JSON file stores the parameters and
the content hash of the arrays; a file whose parameters or hash do not match is ignored (with a warning) and
rewritten. Writes are atomic (temporary file + os.replace); an unwritable cache only produces one warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)
_warned_dirs: set[str] = set()
Split = tuple[list[np.ndarray], list[np.ndarray]]


def default_cache_dir() -> Path:
    """``$FEDLOOM_CACHE`` if set, else ``~/.cache/fedloom``."""
    env = os.environ.get("FEDLOOM_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/fedloom").expanduser()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(params: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(params).encode()).hexdigest()[:16]


def content_hash(train: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> str:
    """sha256 over, per client in order: int64 [n_train, n_test], then its train and test indices (int64 LE)."""
    h = hashlib.sha256()
    for tr, te in zip(train, test):
        h.update(np.array([len(tr), len(te)], dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(tr, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(te, dtype="<i8").tobytes())
    return h.hexdigest()


def load_partition(cache_dir: Path, params: dict[str, Any]) -> Optional[Split]:
    """The cached (train, test) index arrays for ``params``, or None if absent, stale or corrupt."""
    base = cache_dir / "partitions" / cache_key(params)
    npz, meta = base.with_suffix(".npz"), base.with_suffix(".json")
    if not (npz.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
        with np.load(npz, allow_pickle=False) as z:
            split = _unflatten(z["train_flat"], z["train_offsets"]), _unflatten(z["test_flat"], z["test_offsets"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        log.warning("partition cache %s is unreadable (%s); recomputing", npz, exc)
        return None
    if info.get("params") != json.loads(canonical_json(params)) or info.get("partition_hash") != content_hash(*split):
        log.warning("partition cache %s does not match its recorded parameters/hash; recomputing", npz)
        return None
    return split


def save_partition(cache_dir: Path, params: dict[str, Any], train: list[np.ndarray], test: list[np.ndarray]) -> None:
    """Store the split atomically; on an unwritable cache warn once per folder and return."""
    folder = cache_dir / "partitions"
    base = folder / cache_key(params)
    arrays = {"train_flat": _flat(train), "train_offsets": _offsets(train)}
    arrays.update(test_flat=_flat(test), test_offsets=_offsets(test))
    info = {"params": params, "partition_hash": content_hash(train, test)}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(base.with_suffix(".npz"), lambda fh: np.savez(fh, **arrays))
        _atomic_write(base.with_suffix(".json"), lambda fh: fh.write(json.dumps(info, indent=1, default=str).encode()))
    except OSError as exc:
        if str(folder) not in _warned_dirs:
            _warned_dirs.add(str(folder))
            log.warning("cannot write the partition cache in %s (%s); continuing without caching", folder, exc)


def _atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _flat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _offsets(parts: list[np.ndarray]) -> np.ndarray:
    return np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)


def _unflatten(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
        raise ValueError("inconsistent offsets")
    return [flat[a:b].astype(np.int64) for a, b in zip(offsets[:-1], offsets[1:])]
