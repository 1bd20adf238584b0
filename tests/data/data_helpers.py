"""Helpers for the data tests: tiny idx files in the Fashion-MNIST layout."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the idx format."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fake_fmnist(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> None:
    """Write the four Fashion-MNIST idx files with tiny random content."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        files = {
            f"{prefix}-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            f"{prefix}-labels-idx1-ubyte": (np.arange(n) % 10).astype(np.uint8),
        }
        for name, arr in files.items():
            if gz:
                with gzip.open(folder / (name + ".gz"), "wb") as fh:
                    fh.write(idx_bytes(arr))
            else:
                (folder / name).write_bytes(idx_bytes(arr))
