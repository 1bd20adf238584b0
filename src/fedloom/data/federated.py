"""The federated view of a dataset: one pooled dataset plus per-client train/test index tensors.

Pipeline (as in PFLlib): load the pooled dataset, partition its labels over clients, then split each client's
samples into train/test like sklearn's train_test_split(train_size=train_ratio, shuffle=True):
n_test = ceil((1 - train_ratio) * n), n_train = n - n_test. Partitions are cached on disk (see cache.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

import fedloom.data.partitioners  # noqa: F401  (registers the partitioners)
from fedloom.data.base import PARTITIONERS, LoadContext, PartitionSpec, PooledDataset
from fedloom.data.cache import content_hash, default_cache_dir, load_partition, save_partition
from fedloom.data.options import make_dataset_spec
from fedloom.errors import ConfigError, DataError
from fedloom.registry import canonical
from fedloom.seeding import numpy_generator

PARTITION_FORMAT_VERSION = 1  # bump when a partitioner's output for the same parameters changes


@dataclass
class FederatedData:
    """A pooled dataset with each client's train/test indices (int64 tensors into dataset.x / dataset.y)."""

    dataset: PooledDataset
    train_idx: list[torch.Tensor]
    test_idx: list[torch.Tensor]
    partition: PartitionSpec
    train_ratio: float
    partition_hash: str

    @property
    def num_clients(self) -> int:
        return len(self.train_idx)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.dataset.input_shape

    def train_sizes(self) -> np.ndarray:
        return np.array([len(t) for t in self.train_idx], dtype=np.int64)

    def test_sizes(self) -> np.ndarray:
        return np.array([len(t) for t in self.test_idx], dtype=np.int64)

    def label_counts(self, split: str = "all") -> np.ndarray:
        """[clients, classes] label counts of the 'train', 'test' or 'all' (train + test) samples."""
        if split not in ("all", "train", "test"):
            raise ConfigError(f"split must be 'all', 'train' or 'test' (got '{split}')")
        y = self.dataset.y.cpu().numpy()
        counts = np.zeros((self.num_clients, self.num_classes), dtype=np.int64)
        for name, parts in (("train", self.train_idx), ("test", self.test_idx)):
            if split in ("all", name):
                for i, idx in enumerate(parts):
                    counts[i] += np.bincount(y[idx.cpu().numpy()], minlength=self.num_classes)
        return counts

    def to(self, device: Union[str, torch.device]) -> "FederatedData":
        """A copy with x, y and the index tensors on ``device``."""
        ds = dataclasses.replace(self.dataset, x=self.dataset.x.to(device), y=self.dataset.y.to(device))
        return dataclasses.replace(
            self, dataset=ds,
            train_idx=[t.to(device) for t in self.train_idx], test_idx=[t.to(device) for t in self.test_idx],
        )  # fmt: skip


def build_federated_data(
    dataset: str,
    dataset_options: Optional[dict[str, Any]],
    partition: PartitionSpec,
    train_ratio: float = 0.75,
    data_dir: Optional[Path] = None,
    cache_dir: Optional[Path] = None,
    data_seed: int = 0,
) -> FederatedData:
    """Load ``dataset``, partition it with ``partition`` and split each client into train/test (cached).

    An empty partition.name means the dataset's default partition. The partition's min_samples is raised, if
    needed, to the smallest client size that yields >= 1 train and >= 1 test sample at this train_ratio.
    """
    if not (isinstance(train_ratio, (int, float)) and 0 < train_ratio < 1):
        raise ConfigError(f"train_ratio must be strictly between 0 and 1 (got {train_ratio})")
    spec = make_dataset_spec(dataset, dataset_options)
    partition = _resolve_partition(partition, spec.default_partition)
    pooled = spec.load(LoadContext(data_dir, data_seed, partition.num_clients))
    if partition.name == "natural" and pooled.natural_ids is None:
        raise DataError(
            f"dataset '{pooled.name}' has no natural partition; choose iid, dirichlet or pathological"
        )
    params = cache_params(spec, pooled, partition, train_ratio, data_seed)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    split = load_partition(root, params)
    if split is None:
        split = split_train_test(partition_indices(pooled, partition, train_ratio), train_ratio, partition.seed)
        save_partition(root, params, *split)
    return FederatedData(
        dataset=pooled,
        train_idx=[torch.from_numpy(a.astype(np.int64)) for a in split[0]],
        test_idx=[torch.from_numpy(a.astype(np.int64)) for a in split[1]],
        partition=partition,
        train_ratio=float(train_ratio),
        partition_hash=content_hash(*split),
    )


def _resolve_partition(partition: PartitionSpec, default: str) -> PartitionSpec:
    name = canonical(partition.name) if partition.name else default
    PARTITIONERS.get(name)  # ConfigError listing the choices if unknown
    return dataclasses.replace(partition, name=name)


def cache_params(
    spec: Any, pooled: PooledDataset, partition: PartitionSpec, train_ratio: float, data_seed: int
) -> dict[str, Any]:
    """Everything the cached partition depends on (hashed into the cache key)."""
    import hashlib

    labels = np.ascontiguousarray(pooled.y.cpu().numpy(), dtype="<i8")
    ids = pooled.natural_ids
    return {
        "version": PARTITION_FORMAT_VERSION,
        "dataset": spec.registry_name,
        "dataset_options": dataclasses.asdict(spec),
        "num_samples": len(pooled),
        "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
        "natural_ids_sha256": None if ids is None else hashlib.sha256(np.asarray(ids).tobytes()).hexdigest(),
        "partition": dataclasses.asdict(partition),
        "train_ratio": float(train_ratio),
        "data_seed": int(data_seed),
    }


def min_client_size(train_ratio: float) -> int:
    """Smallest n whose ceil-rule split has >= 1 train and >= 1 test sample."""
    n = max(1, int(1 / train_ratio) - 2)
    while min(split_sizes(n, train_ratio)) < 1:
        n += 1
    return n


def pfllib_min_samples(num_samples: int, num_clients: int, batch_size: int, train_ratio: float) -> int:
    """PFLlib's ``least_samples``: enough for one training batch, capped at half an even share."""
    return int(min(batch_size / (1 - train_ratio), num_samples / max(num_clients, 1) / 2))


def split_sizes(n: int, train_ratio: float) -> tuple[int, int]:
    """(n_train, n_test) with n_test = ceil((1 - train_ratio) * n), rounded to 9 decimals against float noise."""
    n_test = math.ceil(round((1.0 - train_ratio) * n, 9))
    return n - n_test, n_test


def partition_indices(pooled: PooledDataset, partition: PartitionSpec, train_ratio: float) -> list[np.ndarray]:
    """Run the partitioner with rng numpy_generator(seed, -1, -1, 'partition')."""
    need = min_client_size(train_ratio)
    requested = partition.min_samples
    if requested is None:
        requested = pfllib_min_samples(len(pooled), partition.num_clients, partition.extra.get("batch_size", 10),
                                       train_ratio)
    partition = dataclasses.replace(partition, min_samples=requested)
    effective = dataclasses.replace(partition, min_samples=max(requested, need))
    rng = numpy_generator(partition.seed, -1, -1, "partition")
    labels = pooled.y.cpu().numpy()
    try:
        return PARTITIONERS.get(partition.name)(labels, effective, rng, pooled.natural_ids)
    except DataError as exc:
        if effective.min_samples == partition.min_samples:
            raise
        raise DataError(
            f"{exc} (min_samples was raised to {need} so that every client gets at least one train and one "
            f"test sample with train_ratio={train_ratio})"
        ) from None


def split_train_test(
    parts: list[np.ndarray], train_ratio: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Shuffle each client's indices and cut them by the ceil rule; both halves are returned sorted."""
    train, test = [], []
    for client, idx in enumerate(parts):
        n_train, n_test = split_sizes(len(idx), train_ratio)
        if n_train < 1 or n_test < 1:
            raise DataError(
                f"client {client} has {len(idx)} samples: too few for a train/test split with "
                f"train_ratio={train_ratio}; raise min_samples, use fewer clients or a larger alpha"
            )
        perm = numpy_generator(seed, -1, client, "train-test-split").permutation(len(idx))
        shuffled = np.asarray(idx, dtype=np.int64)[perm]
        train.append(np.sort(shuffled[:n_train]))
        test.append(np.sort(shuffled[n_train:]))
    return train, test
