"""FedMRL: the shared model (first architecture's body + a head on the nested d-wide representation) is the only
upload, averaged unweighted; the loss CE(h(r)) + CE(h_g(r[:, :d])); the projector kept or reset (HtFLlib)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedloom.algorithms.tree import tree_bytes, tree_select
from fedloom.models.base import is_body

from htfl_helpers import C, mixed, start, train_round


def test_the_shared_model_is_the_only_upload_and_is_averaged() -> None:
    exp = mixed("fedmrl", sub_feature_dim=16)
    body0 = tree_select(exp.runtime.architectures.init_params[0], is_body)
    server0 = start(exp)
    result, server = train_round(exp, server0, 1)
    assert result.bytes_up == 4 * (tree_bytes(body0) + 4 * (16 * C + C))
    ups = []
    for c in range(4):
        ctx = exp.runtime.client_context(c, 1)
        ups.append(exp.algorithm.client_update(ctx, server0.broadcast,
                                               exp.algorithm.init_client_state(ctx.init_params, c)).upload)
    for part in ("body", "head"):
        for k in ups[0][part]:
            mean = torch.stack([u[part][k] for u in ups]).mean(0)
            assert torch.allclose(server.broadcast.params[part][k], mean, atol=1e-6)


def test_matryoshka_loss_and_prediction_by_hand() -> None:
    exp = mixed("fedmrl", sub_feature_dim=16)
    server = start(exp)
    ctx = exp.runtime.client_context(1, 1)  # a logistic-regression client; the shared body is the MLP's
    state = exp.algorithm.init_client_state(ctx.init_params, 1)
    x, y = ctx.data(ctx.train_indices[:8])
    shared = server.broadcast.params
    mlp = exp.runtime.for_arch(0)
    rep_g = mlp.apply(shared["body"], x, "body")
    r = F.linear(torch.cat([rep_g, ctx.apply(state["params"], x, "body").flatten(1)], 1), state["proj"]["weight"],
                 state["proj"]["bias"])
    by_hand = F.cross_entropy(ctx.apply(state["params"], r, "head"), y, reduction="none") + F.cross_entropy(
        F.linear(r[:, :16], shared["head"]["weight"], shared["head"]["bias"]), y, reduction="none")
    w = {**{f"local/{k}": v for k, v in state["params"].items()}, **{f"sbody/{k}": v for k, v in shared["body"].items()},
         **{f"shead/{k}": v for k, v in shared["head"].items()}, **{f"proj/{k}": v for k, v in state["proj"].items()}}
    loss = exp.algorithm.loss(ctx.apply, mlp.apply)(w, x, y, None)
    assert torch.allclose(loss, by_hand, atol=1e-5)
    predictor = exp.algorithm.eval_params(ctx, server.broadcast, state)
    assert torch.allclose(ctx.apply(predictor, x), ctx.apply(state["params"], r, "head"), atol=1e-5)


def test_projector_kept_or_reset() -> None:
    for keep in (True, False):
        exp = mixed("fedmrl", sub_feature_dim=16, keep_proj=keep)
        ctx = exp.runtime.client_context(0, 1)
        state = exp.algorithm.init_client_state(ctx.init_params, 0)
        new = exp.algorithm.client_update(ctx, start(exp).broadcast, state).state
        assert torch.equal(new["proj"]["weight"], state["proj0"]["weight"]) is (not keep)
