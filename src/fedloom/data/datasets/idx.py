"""Reader for the IDX file format used by MNIST and Fashion-MNIST (LeCun et al., http://yann.lecun.com/exdb/mnist/).

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one big-endian
uint32 per dimension, then the data in row-major order. Files may be gzip-compressed (``.gz``) or raw.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from fedloom.errors import DataError

_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file (gzip-compressed if its name ends in .gz) into a uint8 array."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an idx file (bad magic number); delete it and download it again")
    if raw[2] != _UBYTE:
        raise DataError(f"{path}: unsupported idx element type 0x{raw[2]:02x} (expected unsigned bytes, 0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path} is truncated (incomplete idx header); delete it and download it again")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(
            f"{path} is corrupt or truncated: header says {dims} ({expected} bytes) but the file has "
            f"{len(raw)} bytes; delete it and download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc} (corrupt or truncated file; download it again)") from exc
