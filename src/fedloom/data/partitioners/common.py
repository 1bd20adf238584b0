"""Validation and finishing steps shared by all partitioners."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedloom.data.base import PartitionSpec
from fedloom.errors import ConfigError, DataError


def check_clients(num_samples: int, spec: PartitionSpec) -> None:
    """ConfigError unless 1 <= num_clients <= num_samples; DataError if min_samples cannot be met at all."""
    if spec.num_clients < 1:
        raise ConfigError(f"number of clients must be >= 1 (got {spec.num_clients})")
    if spec.num_clients > num_samples:
        raise ConfigError(
            f"more clients than samples: {spec.num_clients} clients but the dataset has {num_samples} samples"
        )
    if spec.min_samples < 0:
        raise ConfigError(f"min_samples must be >= 0 (got {spec.min_samples})")
    if spec.num_clients * spec.min_samples > num_samples:
        raise DataError(
            f"cannot give each of {spec.num_clients} clients at least {spec.min_samples} samples: the dataset "
            f"has only {num_samples} samples; use fewer clients or a smaller min_samples"
        )


def finish(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Sorted int64 copies of each client's indices."""
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def check_min_samples(parts: Sequence[np.ndarray], spec: PartitionSpec, hint: str) -> None:
    """DataError naming the smallest client when some client has fewer than spec.min_samples samples."""
    sizes = np.array([len(p) for p in parts])
    if sizes.size and sizes.min() < spec.min_samples:
        worst = int(sizes.argmin())
        raise DataError(
            f"{spec.name} partition: client {worst} has {int(sizes[worst])} samples, fewer than the required "
            f"min_samples={spec.min_samples}; {hint}"
        )


def as_labels(labels: np.ndarray) -> np.ndarray:
    """Labels as a 1-D int64 array."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must be one-dimensional (got shape {arr.shape})")
    return arr.astype(np.int64, copy=False)


def parts_from_owner(owner: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Per-client sorted index arrays from a per-sample owner array (-1 = sample assigned to nobody)."""
    assigned = np.flatnonzero(owner >= 0)
    order = assigned[np.argsort(owner[assigned], kind="stable")]
    sizes = np.bincount(owner[assigned], minlength=num_clients)
    return finish(np.split(order, np.cumsum(sizes)[:-1]))


def class_indices(labels: np.ndarray) -> list[np.ndarray]:
    """Indices of each distinct label, in increasing label order."""
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    return np.split(order, starts[1:])
