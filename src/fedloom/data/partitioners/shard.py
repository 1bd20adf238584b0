"""Shard partition (McMahan et al., AISTATS 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", the pathological non-IID MNIST split: 200 shards of 300 images, 2 per client).

The samples are sorted by label (random order within a label), the sorted list is cut into
S = N · shards_per_client contiguous shards of sizes ⌊n/S⌋ or ⌈n/S⌉ (numpy's array_split: when S does not
divide n the first n mod S shards get one extra sample), and a random permutation of the shards gives every
client exactly ``shards_per_client`` of them. A shard spans one label unless it straddles a label boundary, so a
client holds about ``shards_per_client`` classes: fewer shards per client = more skew. Client sizes are fixed by
construction (n/N within ``shards_per_client`` samples), so min_samples is checked, never repaired.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fedloom.data.base import PARTITIONERS, PartitionSpec
from fedloom.data.partitioners.common import as_labels, check_clients, check_min_samples, finish
from fedloom.errors import ConfigError


@PARTITIONERS.register("shard")
def shard_partition(
    labels: np.ndarray, spec: PartitionSpec, rng: np.random.Generator, natural_ids: Optional[np.ndarray] = None
) -> list[np.ndarray]:
    """McMahan shards: shards_per_client random label-sorted shards each; see the module docstring."""
    labels = as_labels(labels)
    check_clients(len(labels), spec)
    shards = make_shards(labels, spec, rng)
    owner_of_shard = rng.permutation(len(shards)).reshape(spec.num_clients, spec.shards_per_client)
    parts = finish([np.concatenate([shards[j] for j in row]) for row in owner_of_shard])
    check_min_samples(parts, spec, "use fewer clients or a smaller min_samples")
    return parts


def make_shards(labels: np.ndarray, spec: PartitionSpec, rng: np.random.Generator) -> list[np.ndarray]:
    """The label-sorted sample order cut into num_clients * shards_per_client contiguous shards."""
    per_client = spec.shards_per_client
    if not (isinstance(per_client, (int, np.integer)) and per_client >= 1):
        raise ConfigError(f"shard: shards_per_client must be an integer >= 1 (got {per_client})")
    total = spec.num_clients * per_client
    if total > len(labels):
        raise ConfigError(f"shard: {spec.num_clients} clients x {per_client} shards = {total} shards but the "
                          f"dataset has only {len(labels)} samples; use fewer clients or shards_per_client")
    perm = rng.permutation(len(labels))  # random order within each label
    order = perm[np.argsort(labels[perm], kind="stable")]
    return np.array_split(order, total)


shard_partition.params = ("shards_per_client",)  # type: ignore[attr-defined]
