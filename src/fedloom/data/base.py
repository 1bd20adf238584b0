"""Interfaces shared by dataset loaders, partitioners and the federated data builder.

A dataset loader returns one pooled in-memory dataset (train and test pooled, as PFLlib does); a partitioner
maps labels to per-client index arrays; federated.py splits each client's indices into train/test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np
import torch

from fedloom.registry import Registry


@dataclass
class PooledDataset:
    """All samples of a dataset in memory. ``x`` is float32 [N, *input_shape] (int64 token ids [N, L] for text),
    ``y`` int64 [N]."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    natural_ids: Optional[np.ndarray] = None  # per-sample client id for datasets with a natural partition
    class_names: Optional[list[str]] = None
    source: str = ""  # where the data came from (a path, "generated", "scikit-learn"), for the run folder
    vocab_size: Optional[int] = None  # token datasets: ids in x are < vocab_size (embedding rows a model needs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class LoadContext:
    """What a loader may depend on besides its own options."""

    data_dir: Optional[Path]
    seed: int  # the partition/data seed, for generated datasets
    num_clients: int  # generated datasets with natural partitions (synthetic) default to one device per client


class DatasetSpec(Protocol):
    """A frozen dataclass of dataset options, registered by name in DATASETS.

    ``default_partition`` is used when the config does not name one (e.g. 'natural' for synthetic).
    """

    default_partition: str

    def load(self, ctx: LoadContext) -> PooledDataset: ...


DATASETS: Registry[type] = Registry("dataset")


@dataclass(frozen=True)
class PartitionSpec:
    """Parameters of a partition; a partitioner reads the fields it needs.

    alpha: Dirichlet concentration (smaller = more skew). classes_per_client / balanced: pathological split.
    min_samples: every client must receive at least this many samples (before its train/test split); None means
        PFLlib's rule min(batch_size / (1 - train_ratio), N / clients / 2), with batch_size from extra (default 10).
    shards_per_client: shard partition (McMahan et al. 2017).
    quantity_dist / size_alpha / sigma: client sizes of quantity and inner-dirichlet (partitioners/sizes.py);
        None means the partitioner's default (quantity: power-law, inner-dirichlet: equal).
    base_partition / feature_shift / domains / shift_strength: feature-shift (partitioners/feature_shift.py).
    """

    name: str
    num_clients: int
    alpha: float = 0.1
    classes_per_client: int = 2
    balanced: bool = False
    min_samples: Optional[int] = 0
    seed: int = 0
    extra: dict = field(default_factory=dict)
    shards_per_client: int = 2
    quantity_dist: Optional[str] = None
    size_alpha: float = 1.0
    sigma: float = 1.0
    base_partition: str = "iid"
    feature_shift: str = "rotate"
    domains: int = 4
    shift_strength: float = 1.0


# partitioner(labels, spec, rng, natural_ids) -> list of int64 index arrays, one per client
Partitioner = Callable[[np.ndarray, PartitionSpec, np.random.Generator, Optional[np.ndarray]], list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("partitioner")
