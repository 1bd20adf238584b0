"""FedGen (HtFLlib's): the server trains a feature generator against the sample-weighted ensemble of the
uploaded heads and averages the heads; clients add CE on generated features; uploads are head + label counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedloom.algorithms.fedgen import generate, generated_loss
from fedloom.algorithms.tree import tree_bytes, tree_select
from fedloom.models.base import is_head

from htfl_helpers import C, mixed, start, train_round


def ensemble_accuracy(generator, items, noise_dim: int = 32) -> float:
    total = sum(w for _, _, w in items)
    y = torch.arange(C).repeat(20)
    z = generate(generator, y, noise_dim, torch.Generator().manual_seed(1))
    logits = sum(w / total * F.linear(z, u["head"]["head.weight"], u["head"]["head.bias"]) for _, u, w in items)
    return float((logits.argmax(1) == y).float().mean())


def test_server_trains_the_generator_on_the_head_ensemble_and_averages_heads() -> None:
    exp = mixed("fedgen", server_epochs=30, hidden_dim=64)
    server0 = start(exp)
    result, server = train_round(exp, server0, 1)
    head_bytes = tree_bytes(tree_select(exp.runtime.init_params, is_head))
    assert result.bytes_up == 4 * (head_bytes + 4 * C)
    items = result.uploads.all()
    assert ensemble_accuracy(server.broadcast.extra["generator"], items) > 0.9
    assert ensemble_accuracy(server0.broadcast.extra["generator"], items) < 0.6
    total = sum(w for _, _, w in items)
    for k in ("head.weight", "head.bias"):
        mean = sum(u["head"][k] * w / total for _, u, w in items)
        assert torch.allclose(server.broadcast.params[k], mean, atol=1e-6)
    counts = sum(exp.runtime.client_context(c, 1).train_label_counts() for c in range(4))
    assert torch.equal(server.broadcast.extra["labels"], counts)


def test_clients_add_ce_on_generated_features() -> None:
    exp = mixed("fedgen", hidden_dim=64)
    ctx = exp.runtime.client_context(0, 1)
    server = start(exp)
    g, pool = server.broadcast.extra["generator"], ctx.train_label_counts()
    params = ctx.init_params
    x, y = ctx.data(ctx.train_indices[:16])
    loss = generated_loss(ctx.apply, g, pool, 32, 10, torch.Generator().manual_seed(4))(params, x, y, None)
    rng = torch.Generator().manual_seed(4)
    labels = torch.multinomial(pool, 10, replacement=True, generator=rng)
    z = generate(g, labels, 32, rng)
    by_hand = F.cross_entropy(ctx.apply(params, x), y, reduction="none") + F.cross_entropy(
        ctx.apply(params, z, "head"), labels)
    assert torch.allclose(loss, by_hand, atol=1e-6)
    with_g = exp.algorithm.client_update(ctx, server.broadcast, exp.algorithm.init_client_state(params, 0))
    plain, _ = ctx.local_sgd(dict(params))
    assert not torch.allclose(with_g.upload["head"]["head.weight"], plain["head.weight"])


@pytest.mark.slow  # importing torch.optim loads torch._dynamo: ~7 s
def test_the_written_out_adam_matches_torch_optim() -> None:
    from fedloom.algorithms.fedgen import Adam

    a = torch.randn(5, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    ours, theirs = Adam([a], 0.1), torch.optim.Adam([b], lr=0.1)
    for step in range(4):
        ours.step(torch.autograd.grad((a ** 3).sum() + step, [a]))
        theirs.zero_grad()
        ((b ** 3).sum() + step).backward()
        theirs.step()
    assert torch.allclose(a, b, atol=1e-6)
