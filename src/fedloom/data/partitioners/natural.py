"""Natural partition: one client per distinct natural id (e.g. a FedProx Synthetic device), in sorted id order."""

from __future__ import annotations

from typing import Optional

import numpy as np

from fedloom.data.base import PARTITIONERS, PartitionSpec
from fedloom.data.partitioners.common import as_labels, check_clients, check_min_samples, finish
from fedloom.errors import ConfigError, DataError


@PARTITIONERS.register("natural")
def natural_partition(
    labels: np.ndarray, spec: PartitionSpec, rng: np.random.Generator, natural_ids: Optional[np.ndarray] = None
) -> list[np.ndarray]:
    """Group samples by natural id; spec.num_clients must equal the number of distinct ids. Uses no randomness."""
    n = len(as_labels(labels))
    if natural_ids is None:
        raise DataError("this dataset has no natural partition; choose iid, dirichlet or pathological")
    ids = np.asarray(natural_ids)
    if ids.shape != (n,):
        raise DataError(f"natural_ids has shape {ids.shape}, expected ({n},)")
    check_clients(n, spec)
    uniq, inverse = np.unique(ids, return_inverse=True)
    if spec.num_clients != len(uniq):
        raise ConfigError(
            f"the natural partition has {len(uniq)} clients (one per natural id) but {spec.num_clients} clients "
            f"were requested; set --clients {len(uniq)} (for synthetic, or set --synthetic.devices "
            f"{spec.num_clients})"
        )
    order = np.argsort(inverse, kind="stable")
    parts = finish(np.split(order, np.cumsum(np.bincount(inverse, minlength=len(uniq)))[:-1]))
    check_min_samples(parts, spec, "the natural partition cannot be changed; lower min_samples")
    return parts
