"""IID partition: shuffle all samples and split them as evenly as possible (sizes differ by at most one)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from fedloom.data.base import PARTITIONERS, PartitionSpec
from fedloom.data.partitioners.common import as_labels, check_clients, check_min_samples, finish


@PARTITIONERS.register("iid")
def iid_partition(
    labels: np.ndarray, spec: PartitionSpec, rng: np.random.Generator, natural_ids: Optional[np.ndarray] = None
) -> list[np.ndarray]:
    """Uniformly random, equal-size split of all samples over spec.num_clients clients."""
    n = len(as_labels(labels))
    check_clients(n, spec)
    parts = finish(np.array_split(rng.permutation(n), spec.num_clients))
    check_min_samples(parts, spec, "use fewer clients or a smaller min_samples")
    return parts
