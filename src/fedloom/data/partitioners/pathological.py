"""Pathological non-IID partition (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data"; PFLlib's "pat" split): each client holds exactly ``classes_per_client`` classes.

Class assignment: the C classes are put in a random order pi, and client i gets classes pi[(i * cpc + j) mod C]
for j = 0..cpc-1 (a round-robin over the shuffled classes). Each client's classes are distinct, and the numbers
of owners of any two classes differ by at most one. If N * cpc < C some classes have no owner and their samples
are left out of the partition.

Each class's shuffled samples are then split among its k owners. balanced=True: equal shares (within one
sample). balanced=False (PFLlib's default): with n = n_c / k, draw s_j ~ U[max(n / 10, min_samples / cpc), n]
and give owner j a share proportional to s_j (every owner gets at least one sample). Here fewer classes per
client means more skew.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fedloom.data.base import PARTITIONERS, PartitionSpec
from fedloom.data.partitioners.common import (
    as_labels,
    check_clients,
    check_min_samples,
    class_indices,
    parts_from_owner,
)
from fedloom.errors import ConfigError, DataError

MAX_ATTEMPTS = 100


@PARTITIONERS.register("pathological")
def pathological_partition(
    labels: np.ndarray, spec: PartitionSpec, rng: np.random.Generator, natural_ids: Optional[np.ndarray] = None
) -> list[np.ndarray]:
    """Every client gets exactly spec.classes_per_client classes; see the module docstring."""
    labels = as_labels(labels)
    check_clients(len(labels), spec)
    by_class = class_indices(labels)
    if not 1 <= spec.classes_per_client <= len(by_class):
        raise ConfigError(
            f"classes_per_client must be between 1 and the number of classes ({len(by_class)}); "
            f"got {spec.classes_per_client}"
        )
    parts: list[np.ndarray] = []
    for _ in range(MAX_ATTEMPTS):
        parts = parts_from_owner(draw_owner(by_class, len(labels), spec, rng), spec.num_clients)
        if min(len(p) for p in parts) >= spec.min_samples:
            return parts
    check_min_samples(parts, spec, "use fewer clients, more classes_per_client or a smaller min_samples")
    return parts


def class_owners(num_classes: int, spec: PartitionSpec, rng: np.random.Generator) -> list[list[int]]:
    """Round-robin over a shuffled class order; returns the owning clients of each class (by class position)."""
    order = rng.permutation(num_classes)
    owners: list[list[int]] = [[] for _ in range(num_classes)]
    cpc = spec.classes_per_client
    for i in range(spec.num_clients):
        for j in range(cpc):
            owners[int(order[(i * cpc + j) % num_classes])].append(i)
    return owners


def draw_owner(by_class: list[np.ndarray], n: int, spec: PartitionSpec, rng: np.random.Generator) -> np.ndarray:
    """One pathological draw as a per-sample owner array (-1 for samples of classes nobody holds)."""
    owner = np.full(n, -1, dtype=np.int64)
    for c, clients in enumerate(class_owners(len(by_class), spec, rng)):
        if not clients:
            continue
        idx = rng.permutation(by_class[c])
        if len(idx) < len(clients):
            raise DataError(
                f"pathological partition: class #{c} has {len(idx)} samples but {len(clients)} clients must "
                "hold it; use fewer clients or fewer classes_per_client"
            )
        counts = _equal_shares(len(idx), len(clients)) if spec.balanced else _random_shares(len(idx), clients, spec, rng)
        owner[idx] = np.repeat(np.asarray(clients, dtype=np.int64), counts)
    return owner


def _equal_shares(n: int, k: int) -> np.ndarray:
    return np.full(k, n // k, dtype=np.int64) + (np.arange(k) < n % k)


def _random_shares(n: int, clients: list[int], spec: PartitionSpec, rng: np.random.Generator) -> np.ndarray:
    """PFLlib-style random shares: s_j ~ U[max(n/k/10, min/cpc), n/k], normalized, each owner >= 1 sample."""
    k = len(clients)
    high = n / k
    low = min(max(high / 10, spec.min_samples / spec.classes_per_client), high)
    s = rng.uniform(low, high, k)
    extra = n - k
    cuts = (np.cumsum(s / s.sum()) * extra).astype(np.int64)[:-1]
    return np.diff(np.concatenate(([0], cuts, [extra]))) + 1


pathological_partition.params = ("classes_per_client", "balanced")  # type: ignore[attr-defined]
