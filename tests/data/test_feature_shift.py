"""feature-shift: inputs change per domain, labels and indices do not; deterministic; clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedloom.data.base import PartitionSpec
from fedloom.data.federated import FederatedData, build_federated_data
from fedloom.data.partitioners.domain_transforms import rotate
from fedloom.errors import ConfigError


def digits(spec: PartitionSpec, **kw: object) -> FederatedData:
    return build_federated_data("digits", {}, spec, **kw)  # type: ignore[arg-type]


def owned(fd: FederatedData, k: int) -> torch.Tensor:
    return torch.cat([fd.train_idx[k], fd.test_idx[k]])


def test_rotation_domains_change_inputs_not_labels() -> None:
    plain = digits(PartitionSpec("iid", 8))
    fd = digits(PartitionSpec("feature-shift", 8, feature_shift="rotate", domains=4))
    assert all(torch.equal(a, b) for a, b in zip(plain.train_idx + plain.test_idx, fd.train_idx + fd.test_idx))
    assert torch.equal(fd.dataset.y, plain.dataset.y)
    for k in range(8):  # client k is in domain k mod 4: rotated by 90° * (k mod 4)
        idx = owned(fd, k)
        expected = torch.rot90(plain.dataset.x[idx], k % 4, dims=(2, 3))
        assert torch.equal(fd.dataset.x[idx], expected)
        assert torch.equal(fd.dataset.x[idx], plain.dataset.x[idx]) == (k % 4 == 0)
    assert fd.partition_hash != plain.partition_hash


@pytest.mark.parametrize("kinds", ["noise", "contrast", "color", "rotate,contrast,color,noise"])
def test_each_domain_gets_a_different_transform(kinds: str) -> None:
    plain = digits(PartitionSpec("dirichlet", 6, alpha=0.5))
    spec = PartitionSpec("feature-shift", 6, base_partition="dirichlet", alpha=0.5, feature_shift=kinds, domains=3)
    fd, again = digits(spec), digits(spec)
    assert torch.equal(fd.dataset.x, again.dataset.x) and fd.partition_hash == again.partition_hash  # deterministic
    assert torch.equal(fd.dataset.y, plain.dataset.y)
    change = []
    for k in range(6):
        idx = owned(fd, k)
        change.append(float((fd.dataset.x[idx] - plain.dataset.x[idx]).abs().mean()))
    assert change[0] == change[3] == 0.0  # domain 0 is the original data
    assert 0 < change[1] < change[2] or kinds == "color"  # later domains shift more (color: random direction)
    assert change[1] > 0 and change[2] > 0 and change[4] > 0 and change[5] > 0


def test_different_seeds_and_strengths() -> None:
    spec = PartitionSpec("feature-shift", 4, feature_shift="noise", domains=2)
    a, b = digits(spec), digits(PartitionSpec("feature-shift", 4, feature_shift="noise", domains=2, seed=1))
    assert not torch.equal(a.dataset.x, b.dataset.x)
    none = digits(PartitionSpec("feature-shift", 4, feature_shift="noise,contrast", domains=2, shift_strength=0.0))
    assert torch.equal(none.dataset.x, digits(PartitionSpec("iid", 4)).dataset.x)


def test_vectors_take_noise_and_scale_only() -> None:
    opts = {"devices": 5}
    fd = build_federated_data("synthetic", opts, PartitionSpec("feature-shift", 5, base_partition="natural",
                                                              feature_shift="noise,contrast", domains=5))
    plain = build_federated_data("synthetic", opts, PartitionSpec("natural", 5))
    idx = owned(fd, 4)
    assert not torch.allclose(fd.dataset.x[idx], plain.dataset.x[idx]) and torch.equal(fd.dataset.y, plain.dataset.y)
    for kind in ("rotate", "color"):
        with pytest.raises(ConfigError, match="needs image inputs"):
            build_federated_data("synthetic", opts, PartitionSpec("feature-shift", 5, base_partition="natural",
                                                                  feature_shift=kind))


def test_rotate_helper() -> None:
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    assert torch.equal(rotate(x, 360.0), x) and torch.equal(rotate(x, 90.0), torch.rot90(x, 1, dims=(2, 3)))
    y = rotate(x, 45.0)
    assert y.shape == x.shape and not torch.allclose(y, x)
    assert torch.allclose(rotate(torch.ones(1, 1, 4, 6), 30.0), torch.ones(1, 1, 4, 6))  # border padding


def test_feature_shift_errors() -> None:
    bad = [
        ({"feature_shift": "blur"}, "feature_shift must be"),
        ({"feature_shift": ""}, "feature_shift must be"),
        ({"base_partition": "feature-shift"}, "cannot be feature-shift"),
        ({"base_partition": "dirichlett"}, "unknown partitioner"),
        ({"domains": 0}, "domains"),
        ({"shift_strength": -1.0}, "shift_strength"),
    ]
    for kw, message in bad:
        with pytest.raises(ConfigError, match=message):
            digits(PartitionSpec("feature-shift", 4, **kw))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="global test set"):
        digits(PartitionSpec("feature-shift", 4), test_split="global")
