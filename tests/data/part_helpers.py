"""Helpers shared by the partitioner tests (plain numpy label vectors, no dataset loading)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

import fedloom.data.partitioners  # noqa: F401  (registration)
from fedloom.data.base import PARTITIONERS, PartitionSpec
from fedloom.data.summary import label_emd

# 10 equal classes of 5,000 samples in random order: large enough that sampling noise stays below 0.03 EMD
BIG = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 5000))


def run(labels: np.ndarray, spec: PartitionSpec, seed: int = 0, ids: Optional[np.ndarray] = None) -> list[np.ndarray]:
    return PARTITIONERS.get(spec.name)(labels, spec, np.random.default_rng(seed), ids)


def counts(labels: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    return np.stack([np.bincount(labels[p], minlength=labels.max() + 1) for p in parts])


def sizes(parts: list[np.ndarray]) -> np.ndarray:
    return np.array([len(p) for p in parts])


def mean_emd(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    return float(label_emd(counts(labels, parts)).mean())


def top1_share(labels: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    c = counts(labels, parts)
    return c.max(axis=1) / c.sum(axis=1)


def spec(name: str, clients: int, **kw: Any) -> PartitionSpec:
    return PartitionSpec(name, clients, **kw)
