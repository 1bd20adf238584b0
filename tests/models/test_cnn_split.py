"""FedAvgCNN's ``split`` option: ``conv`` moves the body/head boundary to after the convolutions without changing
the function or the initial weights, so an algorithm that trains its head on other data (FedImpro's synthetic
features) can be run at a deeper split against the same FedAvg baseline."""

from __future__ import annotations

import pytest
import torch

import fedloom.data.datasets.fashion_mnist as fm
from fedloom.api import run
from fedloom.config import build_config
from fedloom.errors import ConfigError
from fedloom.models import build_model

RENAMED = {"body.7.weight": "head.0.weight", "body.7.bias": "head.0.bias", "head.weight": "head.2.weight",
           "head.bias": "head.2.bias"}


def test_conv_split_has_the_same_weights_and_function_and_a_wider_feature() -> None:
    head = build_model("cnn", {}, (1, 28, 28), 10, seed=3)
    conv = build_model("cnn", {"split": "conv"}, (1, 28, 28), 10, seed=3)
    head_params = {RENAMED.get(k, k): v for k, v in head.named_parameters()}
    conv_params = dict(conv.named_parameters())
    assert head_params.keys() == conv_params.keys()
    assert all(torch.equal(head_params[k], conv_params[k]) for k in conv_params)
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(head(x), conv(x), atol=1e-6)
    assert conv.feature_dim == 1024 and conv(x, part="body").shape == (4, 1024)
    assert head.feature_dim == 512 and head(x, part="body").shape == (4, 512)
    assert torch.allclose(conv(conv(x, part="body"), part="head"), head(x), atol=1e-6)


def test_an_unknown_split_is_one_error() -> None:
    with pytest.raises(ConfigError, match="split"):
        build_model("cnn", {"split": "fc2"}, (1, 28, 28), 10, seed=0)


@pytest.mark.skipif(not fm.SYSTEM_DIR.is_dir(), reason="Fashion-MNIST not installed")
@pytest.mark.parametrize("algorithm", ["fedavg", "fedimpro"])
def test_fedavg_is_the_same_at_both_splits_and_fedimpro_is_not(algorithm: str) -> None:
    """The boundary matters only to a method that uses it: FedAvg's numbers are equal at both splits, FedImpro's
    differ (its synthetic features are 1024-wide conv features instead of 512-wide fc features)."""
    base = dict(dataset="fashion-mnist", model="cnn", clients=3, rounds=1, local_epochs=1, batch_size=20,
                lr=0.01, partition="dirichlet", alpha=0.5)
    at_head = run(build_config(base | {"algorithm": algorithm}), out=None)
    at_conv = run(build_config(base | {"algorithm": algorithm, "options": {"cnn": {"split": "conv"}}}), out=None)
    same = at_head.records[-1]["loss"] == pytest.approx(at_conv.records[-1]["loss"], rel=1e-5)
    assert same == (algorithm == "fedavg")
