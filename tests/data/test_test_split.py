"""Global vs per-client test split, the cache key, and `fedloom partition` with the new options."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedloom.data.base import LoadContext, PartitionSpec
from fedloom.data.cache import cache_key
from fedloom.data.federated import build_federated_data, cache_params
from fedloom.data.options import make_dataset_spec
from fedloom.data.summary import partition_summary
from fedloom.errors import ConfigError


@pytest.mark.parametrize("name", ["iid", "dirichlet", "shard", "quantity", "inner-dirichlet"])
def test_global_test_set_is_shared_and_disjoint(name: str) -> None:
    fd = build_federated_data("digits", {}, PartitionSpec(name, 10, alpha=0.3), test_split="global")
    test = fd.test_idx[0]
    assert all(torch.equal(t, test) for t in fd.test_idx) and len(test) == 450  # ceil(0.25 * 1797)
    train = torch.cat(fd.train_idx).numpy()
    assert len(np.intersect1d(train, test.numpy())) == 0 and len(np.unique(train)) == len(train)
    assert np.array_equal(np.sort(np.concatenate([train, test.numpy()])), np.arange(1797))
    y = fd.dataset.y.numpy()
    per_class, total = np.bincount(y[test.numpy()], minlength=10), np.bincount(y, minlength=10)
    assert np.all(np.abs(per_class - 0.25 * total) <= 1)  # stratified
    s = partition_summary(fd)
    assert s["test_split"] == "global" and s["global_test_size"] == 450 and s["total_samples"] == 1797
    assert np.array(s["label_counts"]).sum() == 1797 - 450  # statistics describe the clients' own samples


def test_global_split_keeps_label_skew_and_per_client_default() -> None:
    fd = build_federated_data("digits", {}, PartitionSpec("pathological", 10, classes_per_client=2),
                              test_split="global")
    assert partition_summary(fd)["mean_classes_per_client"] == 2.0
    default = build_federated_data("digits", {}, PartitionSpec("iid", 5))
    explicit = build_federated_data("digits", {}, PartitionSpec("iid", 5), test_split="per_client")
    assert default.test_split == "per-client" and default.partition_hash == explicit.partition_hash
    with pytest.raises(ConfigError, match="test_split"):
        build_federated_data("digits", {}, PartitionSpec("iid", 5), test_split="central")


def test_global_split_with_natural_ids() -> None:
    fd = build_federated_data("synthetic", {"devices": 4}, PartitionSpec("natural", 4), test_split="global")
    ids = fd.dataset.natural_ids
    assert [set(ids[t.numpy()]) for t in fd.train_idx] == [{0}, {1}, {2}, {3}]


def test_cache_key_changes_with_every_parameter() -> None:
    ds = make_dataset_spec("digits", {})
    pooled = ds.load(LoadContext(None, 0, 4))
    base = PartitionSpec("feature-shift", 4)
    key = cache_key(cache_params(ds, pooled, base, 0.75, 0))
    changed = {
        "alpha": 0.5, "classes_per_client": 3, "balanced": True, "min_samples": 7, "seed": 1, "shards_per_client": 3,
        "quantity_dist": "lognormal", "size_alpha": 2.0, "sigma": 0.5, "base_partition": "dirichlet",
        "feature_shift": "noise", "domains": 3, "shift_strength": 0.5,
    }  # fmt: skip
    new_fields = {f.name for f in dataclasses.fields(PartitionSpec)} - {"name", "num_clients", "extra"}
    assert set(changed) == new_fields  # a new PartitionSpec field must be added here too
    keys = {cache_key(cache_params(ds, pooled, dataclasses.replace(base, **{f: v}), 0.75, 0))
            for f, v in changed.items()}
    assert len(keys) == len(changed) and key not in keys
    assert cache_key(cache_params(ds, pooled, base, 0.75, 0, "global")) != key
    assert cache_key(cache_params(ds, pooled, base, 0.7, 0)) != key


def test_partition_command_writes_pngs_and_emd(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fedloom.cli import main

    code = main(["partition", "--dataset", "digits", "--partition", "shard", "--shards-per-client", "3",
                 "--clients", "12", "--test-split", "global", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "EMD" in out and "shard(shards_per_client=3" in out and "global (450" in out
    for name in ("partition.json", "label_counts.csv", "partition.png", "label_distribution.png"):
        assert (tmp_path / name).is_file()
    info = json.loads((tmp_path / "partition.json").read_text())
    assert info["test_split"] == "global" and info["partition"]["shards_per_client"] == 3
    assert 0.5 < info["summary"]["mean_label_emd"] <= 1.0


def test_partition_command_quantity_and_feature_shift_flags(capsys: pytest.CaptureFixture) -> None:
    from fedloom.cli import main

    assert main(["partition", "--partition", "quantity", "--quantity-dist", "lognormal", "--sigma", "2",
                 "--clients", "8"]) == 0
    assert "quantity_dist=lognormal" in capsys.readouterr().out
    assert main(["partition", "--partition", "feature-shift", "--base-partition", "dirichlet", "--feature-shift",
                 "rotate,noise", "--domains", "2", "--clients", "6"]) == 0
    assert "base_partition=dirichlet" in capsys.readouterr().out
