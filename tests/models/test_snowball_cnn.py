"""The Snowball paper's MNIST CNN (snowball-cnn): its shapes, and the election layers Snowball sees on it."""

import pytest
import torch

from fedloom.errors import ConfigError
from fedloom.models import build_model
from fedloom.pipeline.defenses.snowball import election_layers


def test_shapes_match_the_papers_mnist_cnn_and_no_layer_has_a_bias() -> None:
    model = build_model("snowball-cnn", {}, (1, 28, 28), 10, seed=0)
    params = dict(model.named_parameters())
    shapes = {name: tuple(p.shape) for name, p in params.items()}
    # conv 1->32 (5x5, pad 1): 28->26, pool (pad 1) ->14; conv 32->64: 14->12, pool ->7; fc 64*7*7->128; fc 128->10
    assert shapes == {"body.0.weight": (32, 1, 5, 5), "body.3.weight": (64, 32, 5, 5),
                      "body.7.weight": (128, 3136), "head.weight": (10, 128)}
    assert sum(p.numel() for p in params.values()) == 454_688
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert model.feature_dim == 128 and model(torch.zeros(2, 1, 28, 28), part="body").shape == (2, 128)


def test_snowballs_first_and_last_layers_are_the_first_convolution_and_the_classifier() -> None:
    """The official code elects on 'conv1' and 'fc2': one tensor each, as the bias-free layers make it here."""
    params = dict(build_model("snowball-cnn", {}, (1, 28, 28), 10, seed=0).named_parameters())
    assert election_layers({k: v.detach() for k, v in params.items()}, "first,last") == ["body.0.weight", "head.weight"]


def test_other_image_sizes_and_a_too_small_input() -> None:
    model = build_model("snowball-cnn", {}, (3, 32, 32), 10, seed=0)
    params = dict(model.named_parameters())
    assert params["body.7.weight"].shape == (128, 64 * 8 * 8)  # 32->30->16->14->8
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ConfigError, match="snowball-cnn' needs images"):
        build_model("snowball-cnn", {}, (64,), 10, seed=0)


def test_the_vectorized_engine_packs_it_with_the_serial_numbers() -> None:
    """No hand-batched forward: packs run it through torch.func (its channels_last first convolution keeps its
    layout under vmap), to float rounding of the serial loop."""
    import sys
    from pathlib import Path

    for folder in ("engines", "core"):  # engine_helpers imports core's helpers (found by tests/engines' conftest)
        sys.path.insert(0, str(Path(__file__).parent.parent / folder))
    from engine_helpers import assert_records_close, max_param_diff, on_engine, run_records
    from fedloom.engines import EngineOptions

    settings = dict(algorithm="fedavg", model="snowball-cnn", clients=4, rounds=2, lr=0.05)
    records, params = run_records(on_engine("serial", **settings), 2)
    packed = on_engine("vectorized", EngineOptions(min_clients=1), **settings)
    other, other_params = run_records(packed, 2)
    assert packed.engine.serial_reason is None
    assert_records_close(records, other, tol=1e-4)
    assert max_param_diff(params, other_params) < 1e-4
