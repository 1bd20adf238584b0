"""extended-dirichlet, shard, quantity and inner-dirichlet: skew direction, shapes, minimum sizes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from fedloom.data.base import PartitionSpec
from fedloom.errors import ConfigError, DataError
from part_helpers import BIG, counts, mean_emd, run, sizes, top1_share


# ---------------------------------------------------------------------------------------------- alpha extremes
@pytest.mark.parametrize("name, extra", [
    ("dirichlet", {}),
    ("extended-dirichlet", {"classes_per_client": 10}),
    ("inner-dirichlet", {}),
    ("inner-dirichlet", {"quantity_dist": "lognormal"}),
])  # fmt: skip
def test_alpha_to_zero_skewed_alpha_to_inf_iid(name: str, extra: dict) -> None:
    skewed = run(BIG, PartitionSpec(name, 20, alpha=1e-3, min_samples=5, **extra))
    flat = run(BIG, PartitionSpec(name, 20, alpha=1e4, min_samples=5, **extra))
    assert mean_emd(BIG, skewed) > 0.6 and top1_share(BIG, skewed).mean() > 0.55
    assert mean_emd(BIG, flat) < 0.05


def test_extended_dirichlet_small_alpha_near_single_class() -> None:
    parts = run(BIG, PartitionSpec("extended-dirichlet", 20, alpha=1e-3, classes_per_client=3, min_samples=5))
    assert (top1_share(BIG, parts) >= 0.9).mean() >= 0.8


def test_inner_dirichlet_imbalanced_classes_large_alpha_matches_global_mix() -> None:
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(3), [25000, 15000, 10000]))
    assert mean_emd(labels, run(labels, PartitionSpec("inner-dirichlet", 20, alpha=1e4))) < 0.03


# ---------------------------------------------------------------------------------------------- extended Dirichlet
@pytest.mark.parametrize("alpha", [0.05, 1.0, 1e4])
def test_extended_dirichlet_at_most_c_classes(digit_labels: np.ndarray, alpha: float) -> None:
    c = counts(digit_labels, run(digit_labels, PartitionSpec("extended-dirichlet", 20, alpha=alpha,
                                                             classes_per_client=2, min_samples=10)))
    assert ((c > 0).sum(axis=1) <= 2).all() and c.sum() == len(digit_labels)
    assert sizes_ok(c.sum(axis=1), 10)
    if alpha == 1e4:  # every class split evenly among its owners: each client holds exactly its 2 classes
        assert ((c > 0).sum(axis=1) == 2).all()


def sizes_ok(s: np.ndarray, m: int) -> bool:
    return bool(s.min() >= m)


def test_extended_dirichlet_repair_keeps_class_sets(digit_labels: np.ndarray) -> None:
    parts = run(digit_labels, PartitionSpec("extended-dirichlet", 40, alpha=0.01, classes_per_client=2,
                                            min_samples=25))
    c = counts(digit_labels, parts)
    assert sizes(parts).min() >= 25 and ((c > 0).sum(axis=1) <= 2).all()


def test_extended_dirichlet_errors(digit_labels: np.ndarray) -> None:
    for cpc in (0, 11):
        with pytest.raises(ConfigError, match="classes_per_client"):
            run(digit_labels, PartitionSpec("extended-dirichlet", 5, classes_per_client=cpc))
    for alpha in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="alpha"):
            run(digit_labels, PartitionSpec("extended-dirichlet", 5, alpha=alpha))
    with pytest.raises(DataError, match="min_samples"):
        run(digit_labels, PartitionSpec("extended-dirichlet", 10, classes_per_client=1, min_samples=179))


# ---------------------------------------------------------------------------------------------- shard
def test_shard_gives_exactly_shards_per_client_shards() -> None:
    labels = np.repeat(np.arange(10), 20)  # 10 shards of 20 = exactly one class each
    for seed in range(3):
        c = counts(labels, run(labels, PartitionSpec("shard", 5, shards_per_client=2), seed))
        assert ((c > 0).sum(axis=1) == 2).all() and set(c[c > 0].tolist()) == {20}


@pytest.mark.parametrize("spc", [1, 2, 5])
def test_shard_sizes_and_classes(digit_labels: np.ndarray, spc: int) -> None:
    parts = run(digit_labels, PartitionSpec("shard", 20, shards_per_client=spc))
    shard = len(digit_labels) / (20 * spc)
    assert np.all(np.abs(sizes(parts) - spc * shard) <= spc)  # each client = spc shards of ⌊n/S⌋ or ⌈n/S⌉
    classes = (counts(digit_labels, parts) > 0).sum(axis=1)
    assert classes.max() <= 2 * spc  # a shard spans at most 2 labels here (shards are smaller than classes)


def test_shard_errors(digit_labels: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="shards_per_client"):
        run(digit_labels, PartitionSpec("shard", 5, shards_per_client=0))
    with pytest.raises(ConfigError, match="shards"):
        run(np.arange(30) % 3, PartitionSpec("shard", 10, shards_per_client=4))
    with pytest.raises(DataError, match="min_samples"):
        run(digit_labels, PartitionSpec("shard", 10, min_samples=180))


# ---------------------------------------------------------------------------------------------- quantity
def test_quantity_power_law_heavy_tail_iid_labels() -> None:
    parts = run(BIG, PartitionSpec("quantity", 100, size_alpha=1.0, min_samples=10))
    s = np.sort(sizes(parts))
    assert s.sum() == len(BIG) and s.min() >= 10
    assert s[-1] / np.median(s) > 20 and s[-10:].sum() > 0.5 * s.sum()  # a few clients hold most of the data
    big = [p for p in parts if len(p) >= 2000]
    assert big and mean_emd(BIG, big) < 0.05  # labels within a client follow the global mix
    lighter = np.sort(sizes(run(BIG, PartitionSpec("quantity", 100, size_alpha=3.0, min_samples=10))))
    assert lighter[-1] / np.median(lighter) < s[-1] / np.median(s)  # larger tail index = less skew


def test_quantity_lognormal_sigma() -> None:
    labels = np.zeros(300_000, dtype=np.int64)
    for sigma in (0.5, 1.0):
        s = sizes(run(labels, PartitionSpec("quantity", 300, quantity_dist="lognormal", sigma=sigma, min_samples=10)))
        assert abs(np.std(np.log(s - 10)) - sigma) < 0.15 * sigma  # log(n_k - m) has spread sigma
    s = sizes(run(labels, PartitionSpec("quantity", 300, quantity_dist="lognormal", sigma=0.0)))
    assert s.max() - s.min() <= 1


def test_quantity_dirichlet_sizes_alpha_direction() -> None:
    skewed = sizes(run(BIG, PartitionSpec("quantity", 20, quantity_dist="dirichlet", size_alpha=0.05, min_samples=5)))
    flat = sizes(run(BIG, PartitionSpec("quantity", 20, quantity_dist="dirichlet", size_alpha=1e4, min_samples=5)))
    assert skewed.max() > 0.3 * len(BIG) and skewed.min() >= 5
    assert flat.std() / flat.mean() < 0.05


def test_quantity_equal_and_errors(digit_labels: np.ndarray) -> None:
    s = sizes(run(digit_labels, PartitionSpec("quantity", 7, quantity_dist="equal")))
    assert s.max() - s.min() <= 1
    with pytest.raises(ConfigError, match="quantity_dist"):
        run(digit_labels, PartitionSpec("quantity", 5, quantity_dist="zipf"))
    with pytest.raises(ConfigError, match="size_alpha"):
        run(digit_labels, PartitionSpec("quantity", 5, size_alpha=0.0))
    with pytest.raises(ConfigError, match="sigma"):
        run(digit_labels, PartitionSpec("quantity", 5, quantity_dist="lognormal", sigma=-1.0))
    with pytest.raises(DataError, match="at least 400"):
        run(digit_labels, PartitionSpec("quantity", 5, min_samples=400))


@pytest.mark.parametrize("dist", ["power-law", "lognormal", "dirichlet"])
def test_quantity_min_samples_is_guaranteed(digit_labels: np.ndarray, dist: str) -> None:
    for name in ("quantity", "inner-dirichlet"):
        s = sizes(run(digit_labels, PartitionSpec(name, 50, quantity_dist=dist, size_alpha=0.1, sigma=3.0,
                                                  min_samples=30)))
        assert s.min() >= 30 and s.sum() == len(digit_labels)


# ---------------------------------------------------------------------------------------------- inner Dirichlet
def test_inner_dirichlet_fixed_sizes(digit_labels: np.ndarray) -> None:
    s = sizes(run(digit_labels, PartitionSpec("inner-dirichlet", 13, alpha=0.1)))
    assert s.max() - s.min() <= 1 and s.sum() == len(digit_labels)
    with pytest.raises(ConfigError, match="alpha"):
        run(digit_labels, PartitionSpec("inner-dirichlet", 5, alpha=0.0))
