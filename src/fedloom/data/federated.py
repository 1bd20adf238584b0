"""The federated view of a dataset: one pooled dataset plus per-client train/test index tensors.

Pipeline (as in PFLlib): load the pooled dataset, partition its labels over clients, then split each client's
samples into train/test like sklearn's train_test_split(train_size=train_ratio, shuffle=True):
n_test = ceil((1 - train_ratio) * n), n_train = n - n_test. With test_split="global" a stratified test set is
held out before partitioning and shared by every client instead (splits.py). Partitions are cached on disk
(cache.py). A partitioner with a ``transform_inputs`` attribute (feature-shift) then transforms each client's
inputs in a copy of the pooled tensor.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

import fedloom.data.partitioners  # noqa: F401  (registers the partitioners)
from fedloom.data.base import PARTITIONERS, LoadContext, PartitionSpec, PooledDataset
from fedloom.data.array_cache import load_pooled
from fedloom.data.cache import canonical_json, content_hash, default_cache_dir, load_partition, save_partition
from fedloom.data.options import make_dataset_spec
from fedloom.data.splits import (  # noqa: F401  (split_sizes, min_client_size: re-exported for callers)
    check_test_split,
    global_holdout,
    min_client_size,
    split_sizes,
    split_train_test,
)
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
    test_split: str = "per-client"  # or "global": every client's test_idx is the same held-out set
    # label counts per split, computed once: the partition report asks for them several times (not an init
    # field, so dataclasses.replace and .to() start with an empty cache)
    _counts: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

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
        if split not in self._counts:
            self._counts[split] = self._label_counts(split)
        return self._counts[split].copy()

    def _label_counts(self, split: str) -> np.ndarray:
        y = self.dataset.y.cpu().numpy()
        counts = np.zeros(self.num_clients * self.num_classes, dtype=np.int64)
        for name, parts in (("train", self.train_idx), ("test", self.test_idx)):
            if split in ("all", name) and parts:
                # one bincount over (client, label) pairs: a loop of per-client bincounts costs ~50 ms per
                # thousand clients, and the partition report asks for these counts several times
                sizes = np.array([len(idx) for idx in parts], dtype=np.int64)
                idx = np.concatenate([t.cpu().numpy() for t in parts]) if sizes.sum() else np.zeros(0, np.int64)
                owner = np.repeat(np.arange(len(parts), dtype=np.int64), sizes)
                counts += np.bincount(owner * self.num_classes + y[idx], minlength=counts.size)
        return counts.reshape(self.num_clients, self.num_classes)

    def client_label_counts(self) -> np.ndarray:
        """[clients, classes] counts of the samples each client owns: train + test, or train only when the
        test set is global (shared, so it says nothing about the partition)."""
        return self.label_counts("train" if self.test_split == "global" else "all")

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
    test_split: str = "per-client",
    partition_file: Optional[Path] = None,
) -> FederatedData:
    """Load ``dataset``, partition it with ``partition`` and split it into train/test (cached).

    An empty partition.name means the dataset's default partition. The partition's min_samples is raised, if
    needed, to the smallest client size that yields >= 1 train and >= 1 test sample at this train_ratio.
    ``test_split``: "per-client" (each client's samples split by train_ratio) or "global" (see splits.py).
    ``partition_file``: clients read from a partition file or PFLlib folder (partition_io.py) instead of a
    partitioner; the test split is then the file's.
    """
    if not (isinstance(train_ratio, (int, float)) and 0 < train_ratio < 1):
        raise ConfigError(f"train_ratio must be strictly between 0 and 1 (got {train_ratio})")
    test_split = check_test_split(test_split)
    spec = make_dataset_spec(dataset, dataset_options)
    partition = _resolve_partition(partition, spec.default_partition)
    transform = getattr(PARTITIONERS.get(partition.name), "transform_inputs", None)
    if transform is not None and test_split == "global":
        raise ConfigError(f"the {partition.name} partition transforms each client's inputs, so a global test set "
                          "(shared by all clients) is not possible; use test_split=per-client")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    pooled = load_pooled(spec, LoadContext(data_dir, data_seed, partition.num_clients), root)
    if partition_file is not None:
        return _from_file(Path(partition_file), spec.registry_name, pooled, partition, train_ratio)
    if partition.name == "natural" and pooled.natural_ids is None:
        raise DataError(
            f"dataset '{pooled.name}' has no natural partition; choose iid, dirichlet or pathological"
        )
    params = cache_params(spec, pooled, partition, train_ratio, data_seed, test_split)
    split = load_partition(root, params)
    if split is None:
        split = make_split(pooled, partition, train_ratio, test_split)
        save_partition(root, params, *split)
    phash = content_hash(*split)
    if transform is not None:
        owned = [np.concatenate([tr, te]) for tr, te in zip(*split)]
        pooled = dataclasses.replace(pooled, x=transform(pooled.x, owned, partition))
        # same indices, different inputs: the hash must also cover the transform's parameters
        phash = hashlib.sha256((phash + canonical_json(dataclasses.asdict(partition))).encode()).hexdigest()
    return FederatedData(
        dataset=pooled,
        train_idx=[torch.from_numpy(a.astype(np.int64)) for a in split[0]],
        test_idx=[torch.from_numpy(a.astype(np.int64)) for a in split[1]],
        partition=partition,
        train_ratio=float(train_ratio),
        partition_hash=phash,
        test_split=test_split,
    )


def _from_file(path: Path, dataset: str, pooled: PooledDataset, partition: PartitionSpec,
               train_ratio: float) -> FederatedData:
    from fedloom.data.partition_io import load_split

    split, test_split = load_split(path, dataset, pooled, partition.num_clients)
    return FederatedData(dataset=pooled, train_idx=[torch.from_numpy(a) for a in split[0]],
                         test_idx=[torch.from_numpy(a) for a in split[1]],
                         partition=dataclasses.replace(partition, name="file"), train_ratio=float(train_ratio),
                         partition_hash=content_hash(*split), test_split=test_split)


def make_split(
    pooled: PooledDataset, partition: PartitionSpec, train_ratio: float, test_split: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Partition, then split train/test per client, or hold out the global test set first."""
    if test_split == "per-client":
        return split_train_test(partition_indices(pooled, partition, train_ratio), train_ratio, partition.seed)
    test, pool = global_holdout(pooled.y.cpu().numpy(), train_ratio, partition.seed)
    train = partition_indices(pooled, partition, train_ratio, pool=pool)
    return train, [test.copy() for _ in train]


def _resolve_partition(partition: PartitionSpec, default: str) -> PartitionSpec:
    name = canonical(partition.name) if partition.name else default
    PARTITIONERS.get(name)  # ConfigError listing the choices if unknown
    return dataclasses.replace(partition, name=name)


def cache_params(
    spec: Any, pooled: PooledDataset, partition: PartitionSpec, train_ratio: float, data_seed: int,
    test_split: str = "per-client",
) -> dict[str, Any]:
    """Everything the cached partition depends on (hashed into the cache key): every PartitionSpec field,
    including the parameters of newer partitioners and of feature-shift's transforms, and the test split."""
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
        "test_split": test_split,
        "data_seed": int(data_seed),
    }


def pfllib_min_samples(num_samples: int, num_clients: int, batch_size: int, train_ratio: float) -> int:
    """PFLlib's ``least_samples``: enough for one training batch, capped at half an even share."""
    return int(min(batch_size / (1 - train_ratio), num_samples / max(num_clients, 1) / 2))


def partition_indices(
    pooled: PooledDataset, partition: PartitionSpec, train_ratio: float, pool: Optional[np.ndarray] = None
) -> list[np.ndarray]:
    """Run the partitioner with rng numpy_generator(seed, -1, -1, 'partition') on all samples, or only on the
    sorted indices ``pool`` (global test split); returns indices into the pooled dataset."""
    labels, ids = pooled.y.cpu().numpy(), pooled.natural_ids
    if pool is not None:
        labels, ids = labels[pool], (None if ids is None else np.asarray(ids)[pool])
    # per-client split: >= 1 train and >= 1 test sample; global test set: >= 1 train sample
    need = min_client_size(train_ratio) if pool is None else 1
    requested = partition.min_samples
    if requested is None:
        requested = pfllib_min_samples(len(labels), partition.num_clients, partition.extra.get("batch_size", 10),
                                       train_ratio)
    partition = dataclasses.replace(partition, min_samples=requested)
    effective = dataclasses.replace(partition, min_samples=max(requested, need))
    rng = numpy_generator(partition.seed, -1, -1, "partition")
    try:
        parts = PARTITIONERS.get(partition.name)(labels, effective, rng, ids)
    except DataError as exc:
        if effective.min_samples == partition.min_samples:
            raise
        raise DataError(
            f"{exc} (min_samples was raised to {need} so that every client gets at least one train"
            f"{' and one test' if pool is None else ''} sample with train_ratio={train_ratio})"
        ) from None
    return parts if pool is None else [pool[p] for p in parts]
