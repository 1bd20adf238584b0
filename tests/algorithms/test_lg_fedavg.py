"""LG-FedAvg: heads averaged by sample count (the only upload), bodies local, on a mixed federation."""

from __future__ import annotations

import torch

from fedloom.algorithms.tree import tree_bytes, tree_select
from fedloom.models.base import is_head

from htfl_helpers import mixed, start, train_round


def test_heads_are_the_only_upload_and_are_sample_weighted() -> None:
    exp = mixed("lg-fedavg")
    result, server = train_round(exp, start(exp), 1)
    head_bytes = tree_bytes(tree_select(exp.runtime.init_params, is_head))
    assert result.bytes_up == 4 * head_bytes and server.broadcast.nbytes(0) == head_bytes
    sizes = [exp.runtime.client_context(c, 1).num_train_samples for c in range(4)]
    heads = [u for _, u, _ in result.uploads.all()] if result.uploads.items else None
    assert heads is None  # reducible: the engines keep only the weighted sum
    # recompute each client's trained head from its round: the state keeps the body, the upload the head
    states = [exp.runtime.store.load(c) for c in range(4)]
    assert all(set(s) == {"body"} and not any(is_head(k) for k in s["body"]) for s in states)
    expected = {}
    for c in range(4):
        ctx = exp.runtime.client_context(c, 1)
        trained = exp.algorithm.client_update(ctx, start(exp).broadcast,
                                              exp.algorithm.init_client_state(ctx.init_params, c))
        for k, v in trained.upload.items():
            expected[k] = expected.get(k, 0) + v * sizes[c] / sum(sizes)
    assert all(torch.allclose(server.broadcast.params[k], expected[k], atol=1e-6) for k in expected)


def test_clients_are_scored_with_their_body_and_the_global_head() -> None:
    exp = mixed("lg-fedavg")
    _, server = train_round(exp, start(exp), 1)
    ctx = exp.runtime.client_context(1, 1)
    scored = exp.algorithm.eval_params(ctx, server.broadcast, exp.runtime.store.load(1))
    assert torch.equal(scored["head.weight"], server.broadcast.params["head.weight"])
    assert set(scored) == set(ctx.init_params)
