import copy

import pytest
import torch

from fedloom.errors import ConfigError
from fedloom.models import build_model, default_model_for
from fedloom.models.base import is_body, is_head


@pytest.mark.parametrize("shape, flat", [((1, 28, 28), 1024), ((3, 32, 32), 1600)])
def test_fedavg_cnn_matches_pfllib_dimensions(shape: tuple, flat: int) -> None:
    model = build_model("cnn", {}, shape, 10, seed=0)
    names = dict(model.named_parameters())
    assert names["body.7.weight"].shape == (512, flat)  # fc1: dim -> 512
    assert names["head.weight"].shape == (10, 512)
    assert model(torch.zeros(2, *shape)).shape == (2, 10)
    assert model(torch.zeros(2, *shape), part="body").shape == (2, 512)
    # conv32-conv64-fc512-fc: 4 weight tensors
    assert sum(1 for n in names if n.endswith("weight")) == 4


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_every_parameter_is_body_or_head(name: str) -> None:
    model = build_model(name, {}, (1, 28, 28), 10, seed=0)
    names = [n for n, _ in model.named_parameters()]
    assert all(is_body(n) != is_head(n) for n in names)
    assert any(is_head(n) for n in names)
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(model(x), model(model(x, part="body"), part="head"))


def test_initialisation_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("mlp", {"hidden": 16}, (64,), 10, seed=5)
    assert torch.equal(torch.rand(1), before)
    b = build_model("mlp", {"hidden": 16}, (64,), 10, seed=5)
    c = build_model("mlp", {"hidden": 16}, (64,), 10, seed=6)
    assert torch.equal(a.head.weight, b.head.weight) and not torch.equal(a.head.weight, c.head.weight)


def test_model_options_and_errors() -> None:
    assert build_model("mlp", {"hidden": 7, "layers": 1}, (64,), 3, seed=0).feature_dim == 7
    with pytest.raises(ConfigError, match="unknown option"):
        build_model("mlp", {"width": 3}, (64,), 3, seed=0)
    with pytest.raises(ConfigError, match="at least 16x16"):
        build_model("cnn", {}, (1, 8, 8), 10, seed=0)


def test_default_model_by_input_shape() -> None:
    assert default_model_for((1, 28, 28)) == "cnn"
    assert default_model_for((1, 8, 8)) == "mlp"
    assert default_model_for((60,)) == "logreg"


def test_cnn_channels_last_layout_matches_the_stock_layers() -> None:
    from fedloom.models.cnn import ChannelsLastConv2d

    torch.manual_seed(0)
    tuned = ChannelsLastConv2d(1, 32, 5)
    stock = torch.nn.Conv2d(1, 32, 5)
    stock.load_state_dict(tuned.state_dict())
    x = torch.randn(7, 1, 28, 28)
    out = tuned(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, stock(x), atol=1e-6)
    model = build_model("cnn", {}, (1, 28, 28), 10, seed=0)
    reference = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 5), *list(model.body)[1:], model.head)
    reference[0].load_state_dict(model.body[0].state_dict())
    logits = model(x)
    assert torch.allclose(logits, reference(x), atol=1e-5)
    logits.sum().backward()  # gradients reach the first layer through the channels_last part
    assert model.body[0].weight.grad is not None and model.body[0].weight.grad.abs().sum() > 0


def test_cnn_pools_before_relu_with_the_values_and_gradients_of_relu_first() -> None:
    """fedloom's cnn max-pools before each ReLU (cheaper); ReLU-then-pool, the published order, must give the same
    bits forward and backward, zeros and ties included (inputs with exact zeros and repeated values)."""
    model = build_model("cnn", {}, (1, 28, 28), 10, seed=0)
    kinds = [type(m).__name__ for m in model.body]
    assert kinds[:6] == ["ChannelsLastConv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU"]
    published = copy.deepcopy(model)
    body = published.body
    body[1], body[2], body[4], body[5] = body[2], body[1], body[5], body[4]
    x = torch.randn(6, 1, 28, 28).round()  # many exact ties and zeros after the first convolution's ReLU
    x[0] = 0.0
    y = torch.randint(0, 10, (6,))
    for net in (model, published):
        torch.nn.functional.cross_entropy(net(x), y).backward()
    assert torch.equal(model(x), published(x))
    for a, b in zip(model.parameters(), published.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_cnn_runs_under_vmap_with_per_client_gradients() -> None:
    from torch.func import functional_call, grad, vmap

    model = build_model("cnn", {}, (1, 28, 28), 10, seed=0)
    params = {k: v.detach() for k, v in model.named_parameters()}
    stacked = {k: torch.stack([v, v + 0.01]) for k, v in params.items()}
    x, y = torch.randn(2, 5, 1, 28, 28), torch.randint(0, 10, (2, 5))

    def loss(p, xb, yb):
        return torch.nn.functional.cross_entropy(functional_call(model, p, (xb,)), yb)

    batched = vmap(grad(loss))(stacked, x, y)
    second = grad(loss)({k: v[1] for k, v in stacked.items()}, x[1], y[1])
    # float rounding only (the vmapped convolutions sum in another order): relative to each gradient's scale
    assert max(float((batched[k][1] - second[k]).abs().max() / second[k].abs().max()) for k in params) < 1e-5
