"""FML: the meme model (the first architecture) is the only upload, averaged without weights; the local model
learns from the meme through the KL term and never leaves the client."""

from __future__ import annotations

import torch

from fedloom.algorithms.tree import tree_bytes

from htfl_helpers import mixed, start, train_round


def test_the_meme_model_is_the_only_upload_and_is_averaged_unweighted() -> None:
    exp = mixed("fml")
    meme_init = exp.runtime.architectures.init_params[0]  # the MLP (client 0's architecture)
    server0 = start(exp)
    result, server = train_round(exp, server0, 1)
    assert result.bytes_up == 4 * tree_bytes(meme_init)
    uploads = []
    for c in range(4):  # every client, MLP or logistic regression, uploads an MLP-shaped meme
        ctx = exp.runtime.client_context(c, 1)
        out = exp.algorithm.client_update(ctx, server0.broadcast, exp.algorithm.init_client_state(ctx.init_params, c))
        assert {k: v.shape for k, v in out.upload.items()} == {k: v.shape for k, v in meme_init.items()}
        assert out.weight == 1.0
        uploads.append(out.upload)
        own = exp.runtime.store.load(c)["params"]
        assert {k: v.shape for k, v in own.items()} == {k: v.shape for k, v in ctx.init_params.items()}
    for k in meme_init:
        assert torch.allclose(server.broadcast.params[k], torch.stack([u[k] for u in uploads]).mean(0), atol=1e-6)


def test_the_local_model_learns_from_the_meme() -> None:
    exp = mixed("fml")
    ctx = exp.runtime.client_context(1, 1)  # a logistic-regression client with an MLP meme
    server = start(exp)
    state = exp.algorithm.init_client_state(ctx.init_params, 1)
    mutual = exp.algorithm.client_update(ctx, server.broadcast, state).state["params"]
    alone = mixed("fml", alpha=1.0).algorithm.client_update(ctx, server.broadcast, state).state["params"]
    other_meme = {k: torch.randn_like(v) for k, v in server.broadcast.params.items()}
    alone2 = mixed("fml", alpha=1.0).algorithm.client_update(
        ctx, type(server.broadcast)(params=other_meme), state).state["params"]
    assert all(torch.equal(alone[k], alone2[k]) for k in alone)  # α = 1: the meme cannot reach the local model
    assert not all(torch.allclose(mutual[k], alone[k]) for k in alone)
    assert set(mutual) == set(ctx.init_params)


def test_gradient_norms_are_clipped_per_model() -> None:
    from fedloom.algorithms import _htfl as H

    grads = {"local/a": torch.full((4,), 10.0), "local/b": torch.zeros(2), "meme/a": torch.full((1,), 3.0)}
    clipped = H.clip_groups(10.0)({}, grads, None)
    assert abs(float(torch.cat([clipped["local/a"], clipped["local/b"]]).norm()) - 10.0) < 1e-4  # norm 20 → 10
    assert torch.equal(clipped["meme/a"], grads["meme/a"])  # norm 3 < 10: untouched
    assert H.clip_groups(0.0) is None
