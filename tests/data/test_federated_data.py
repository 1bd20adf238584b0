from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import fedloom.data.base as base
from fedloom.data.base import PartitionSpec
from fedloom.data.federated import FederatedData, build_federated_data, split_sizes
from fedloom.errors import ConfigError, DataError


def digits(spec: PartitionSpec, **kw: object) -> FederatedData:
    return build_federated_data("digits", {}, spec, **kw)  # type: ignore[arg-type]


def test_split_follows_ceil_rule_and_covers() -> None:
    fd = digits(PartitionSpec("dirichlet", 12, alpha=0.5), train_ratio=0.7)
    sizes = fd.train_sizes() + fd.test_sizes()
    assert np.array_equal(fd.test_sizes(), [math.ceil(round(0.3 * n, 9)) for n in sizes])
    flat = torch.cat(fd.train_idx + fd.test_idx).numpy()
    assert np.array_equal(np.sort(flat), np.arange(1797))
    assert fd.label_counts().sum() == 1797
    assert np.array_equal(fd.label_counts("train") + fd.label_counts("test"), fd.label_counts())
    assert fd.num_clients == 12 and fd.num_classes == 10 and fd.input_shape == (1, 8, 8)
    assert all(t.dtype == torch.int64 for t in fd.train_idx + fd.test_idx)


def test_split_sizes_examples() -> None:
    assert split_sizes(10, 0.75) == (7, 3)
    assert split_sizes(10, 0.7) == (7, 3)  # no float noise: 0.3 * 10 is 3.0000000000000004
    assert split_sizes(4, 0.75) == (3, 1)


def test_determinism_and_hash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = PartitionSpec("iid", 5, seed=1)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    a = digits(spec)
    with caplog.at_level(logging.WARNING):
        b = digits(spec, cache_dir=not_a_dir)  # unwritable cache: computed, with a warning
    assert "without caching" in caplog.text
    c = digits(PartitionSpec("iid", 5, seed=2))
    assert a.partition_hash == b.partition_hash != c.partition_hash
    assert all(torch.equal(x, y) for x, y in zip(a.train_idx, b.train_idx))


def test_default_partition_and_natural_synthetic() -> None:
    fd = build_federated_data("synthetic", {"alpha": "0.5", "beta": 0.5}, PartitionSpec("", 8))
    assert fd.partition.name == "natural" and fd.num_clients == 8
    ids = fd.dataset.natural_ids
    for i, (tr, te) in enumerate(zip(fd.train_idx, fd.test_idx)):
        assert set(ids[tr.numpy()]) == {i} and set(ids[te.numpy()]) == {i}
    with pytest.raises(ConfigError, match="--synthetic.devices"):
        build_federated_data("synthetic", {"devices": 5}, PartitionSpec("natural", 8))


def test_option_and_ratio_errors() -> None:
    with pytest.raises(ConfigError, match="valid options: synthetic.alpha, synthetic.beta, synthetic.devices"):
        build_federated_data("synthetic", {"gamma": 1}, PartitionSpec("natural", 3))
    with pytest.raises(ConfigError, match="expected float"):
        build_federated_data("synthetic", {"alpha": "high"}, PartitionSpec("natural", 3))
    with pytest.raises(ConfigError, match="takes no options"):
        build_federated_data("digits", {"x": 1}, PartitionSpec("iid", 3))
    for ratio in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match="train_ratio"):
            digits(PartitionSpec("iid", 3), train_ratio=ratio)
    with pytest.raises(DataError, match="no natural partition"):
        digits(PartitionSpec("natural", 3))
    with pytest.raises(ConfigError, match="unknown partitioner"):
        digits(PartitionSpec("dirichlett", 3))


def test_every_client_gets_train_and_test() -> None:
    fd = digits(PartitionSpec("dirichlet", 200, alpha=0.01))
    assert fd.train_sizes().min() >= 1 and fd.test_sizes().min() >= 1
    with pytest.raises(DataError, match="min_samples was raised"):
        digits(PartitionSpec("iid", 1797))


def test_cache_reload(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = PartitionSpec("dirichlet", 10, alpha=0.3)
    first = digits(spec)
    files = sorted(p.suffix for p in (isolated_env / "partitions").iterdir())
    assert files == [".json", ".npz"]

    def boom(*args: object) -> list[np.ndarray]:
        raise AssertionError("partitioner called despite cache")

    monkeypatch.setitem(base.PARTITIONERS._items, "dirichlet", boom)
    second = digits(spec)
    assert second.partition_hash == first.partition_hash


def test_corrupt_cache_is_recomputed(isolated_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = PartitionSpec("iid", 4)
    first = digits(spec)
    (npz,) = (isolated_env / "partitions").glob("*.npz")
    npz.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        again = digits(spec)
    assert again.partition_hash == first.partition_hash and "recomputing" in caplog.text
    third = digits(spec)  # rewritten cache loads cleanly
    assert third.partition_hash == first.partition_hash


def test_to_device_copy() -> None:
    fd = digits(PartitionSpec("iid", 3))
    moved = fd.to("cpu")
    assert moved is not fd and moved.dataset.x.device.type == "cpu" and moved.partition_hash == fd.partition_hash
