from __future__ import annotations

import time

import numpy as np
import pytest

import fedloom.data.partitioners  # noqa: F401
from fedloom.data.base import PARTITIONERS, PartitionSpec
from fedloom.data.summary import label_tv_distances
from fedloom.errors import ConfigError, DataError

SPECS = [
    PartitionSpec("iid", 10),
    PartitionSpec("dirichlet", 10, alpha=0.3),
    PartitionSpec("pathological", 10, classes_per_client=2),
    PartitionSpec("pathological", 10, classes_per_client=3, balanced=True),
    PartitionSpec("extended-dirichlet", 10, alpha=0.3, classes_per_client=3, min_samples=10),
    PartitionSpec("shard", 10, shards_per_client=2),
    PartitionSpec("quantity", 10, min_samples=10),
    PartitionSpec("quantity", 10, quantity_dist="lognormal", sigma=1.0),
    PartitionSpec("quantity", 10, quantity_dist="dirichlet", size_alpha=0.5),
    PartitionSpec("inner-dirichlet", 10, alpha=0.3),
    PartitionSpec("inner-dirichlet", 10, alpha=0.3, quantity_dist="lognormal"),
    PartitionSpec("feature-shift", 10, base_partition="dirichlet", alpha=0.3),
]
SPEC_IDS = [f"{s.name}-{s.balanced}-{s.quantity_dist}" for s in SPECS]


def run(labels: np.ndarray, spec: PartitionSpec, seed: int = 0, ids: np.ndarray | None = None) -> list[np.ndarray]:
    return PARTITIONERS.get(spec.name)(labels, spec, np.random.default_rng(seed), ids)


def counts(labels: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    return np.stack([np.bincount(labels[p], minlength=labels.max() + 1) for p in parts])


def assert_valid_cover(parts: list[np.ndarray], n: int) -> None:
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
    flat = np.concatenate(parts)
    assert len(flat) == n and np.array_equal(np.sort(flat), np.arange(n))


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_disjoint_cover_and_counts(digit_labels: np.ndarray, spec: PartitionSpec) -> None:
    parts = run(digit_labels, spec)
    assert len(parts) == spec.num_clients
    assert_valid_cover(parts, len(digit_labels))
    assert counts(digit_labels, parts).sum() == len(digit_labels)


def test_natural_cover() -> None:
    ids = np.array([3, 1, 3, 2, 1, 1, 2, 3])
    parts = run(np.zeros(8, dtype=np.int64), PartitionSpec("natural", 3), ids=ids)
    assert [p.tolist() for p in parts] == [[1, 4, 5], [3, 6], [0, 2, 7]]


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_determinism(digit_labels: np.ndarray, spec: PartitionSpec) -> None:
    a, b, c = run(digit_labels, spec, 1), run(digit_labels, spec, 1), run(digit_labels, spec, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_small_alpha_is_skewed_large_alpha_near_iid(digit_labels: np.ndarray) -> None:
    skewed = counts(digit_labels, run(digit_labels, PartitionSpec("dirichlet", 20, alpha=0.01, min_samples=2)))
    top2 = np.sort(skewed, axis=1)[:, -2:].sum(axis=1) / skewed.sum(axis=1)
    assert (top2 >= 0.9).mean() >= 0.8
    assert label_tv_distances(skewed).mean() > 0.7
    flat = counts(digit_labels, run(digit_labels, PartitionSpec("dirichlet", 20, alpha=1000.0)))
    assert label_tv_distances(flat).mean() < 0.05


def test_dirichlet_validates_alpha(digit_labels: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        run(digit_labels, PartitionSpec("dirichlet", 5, alpha=0.0))


def test_dirichlet_500_clients_terminates_fast() -> None:
    labels = np.repeat(np.arange(10), 7000)
    start = time.perf_counter()
    parts = run(labels, PartitionSpec("dirichlet", 500, alpha=0.1, min_samples=40))
    assert time.perf_counter() - start < 5.0
    assert min(len(p) for p in parts) >= 40
    assert_valid_cover(parts, len(labels))
    assert label_tv_distances(counts(labels, parts)).mean() > 0.5  # repair keeps most of the skew


def test_min_samples_respected_or_clear_error(digit_labels: np.ndarray) -> None:
    parts = run(digit_labels, PartitionSpec("dirichlet", 30, alpha=0.05, min_samples=30))
    assert min(len(p) for p in parts) >= 30
    with pytest.raises(DataError, match=r"at least 100 samples.*only 1797"):
        run(digit_labels, PartitionSpec("dirichlet", 30, alpha=0.5, min_samples=100))
    with pytest.raises(DataError, match="min_samples=400"):
        run(digit_labels, PartitionSpec("pathological", 4, classes_per_client=1, balanced=True, min_samples=400))


@pytest.mark.parametrize("name", ["iid", "dirichlet", "pathological", "extended-dirichlet", "shard", "quantity",
                                  "inner-dirichlet", "feature-shift"])
def test_client_count_validation(name: str) -> None:
    labels = np.arange(5) % 2
    with pytest.raises(ConfigError, match="more clients than samples"):
        run(labels, PartitionSpec(name, 6))
    with pytest.raises(ConfigError, match=">= 1"):
        run(labels, PartitionSpec(name, 0))


@pytest.mark.parametrize("cpc", [1, 2, 3])
def test_pathological_classes_per_client(digit_labels: np.ndarray, cpc: int) -> None:
    c = counts(digit_labels, run(digit_labels, PartitionSpec("pathological", 20, classes_per_client=cpc)))
    assert np.all((c > 0).sum(axis=1) == cpc)
    owners = (c > 0).sum(axis=0)
    assert owners.max() - owners.min() <= 1


def test_pathological_balanced_equal_shares(digit_labels: np.ndarray) -> None:
    c = counts(digit_labels, run(digit_labels, PartitionSpec("pathological", 20, balanced=True)))
    for cls in range(10):
        shares = c[:, cls][c[:, cls] > 0]
        assert shares.max() - shares.min() <= 1


def test_pathological_validates_cpc(digit_labels: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="classes_per_client"):
        run(digit_labels, PartitionSpec("pathological", 5, classes_per_client=11))


def test_natural_errors() -> None:
    labels = np.zeros(6, dtype=np.int64)
    with pytest.raises(DataError, match="no natural partition"):
        run(labels, PartitionSpec("natural", 2))
    with pytest.raises(ConfigError, match="--clients 3"):
        run(labels, PartitionSpec("natural", 2), ids=np.array([0, 0, 1, 1, 2, 2]))
