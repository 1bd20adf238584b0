"""FedCP: the conditional policy splits features between the personalized and the global head, the uploaded
global head is ½h_p + ½h_g, the MMD term, communication and an end-to-end run."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fedloom.algorithms import _layers as L
from fedloom.algorithms.fedcp import FedCP, _policy
from fedloom.algorithms.tree import tree_bytes, tree_select
from fedloom.errors import ConfigError
from fedloom.models.base import is_body, is_head

from seed_helpers import CLIENTS, cli_summary, experiment, play_round, start


def test_policy_splits_each_feature_between_the_two_heads() -> None:
    exp = experiment("fedcp")
    server = start(exp)
    ctx = exp.runtime.client_context(0, 1)
    x, _ = ctx.data(ctx.train_indices[:32])
    rep = ctx.apply(server.broadcast.params, x, "body")
    context = exp.algorithm.context(ctx, exp.algorithm.init_client_state(exp.runtime.init_params, 0))
    s_p, s_g = _policy(server.broadcast.extra["cpn"], rep, context, 1.0, torch.Generator().manual_seed(0))
    assert s_p.shape == s_g.shape == rep.shape
    torch.testing.assert_close(s_p + s_g, torch.ones_like(s_p))
    assert 0.05 < float(s_p.mean()) < 0.95 and float(s_p.std()) > 0.01  # a real, sample-dependent split
    assert not torch.allclose(s_p[0], s_p[1])


def first_update(exp, cid: int = 0):
    server = start(exp)
    ctx = exp.runtime.client_context(cid, 1)
    return server, exp.algorithm.client_update(ctx, server.broadcast,
                                               exp.algorithm.init_client_state(exp.runtime.init_params, 0))


def test_uploaded_global_head_is_half_personal_half_received() -> None:
    exp = experiment("fedcp")
    for cid in CLIENTS:
        server, result = first_update(exp, cid)
        received, head_p = tree_select(server.broadcast.params, is_head), result.state["head"]
        assert set(result.upload) == {"body", "head", "cpn"}  # h_p itself never leaves the client
        for name in received:
            torch.testing.assert_close(result.upload["head"][name], 0.5 * head_p[name] + 0.5 * received[name])
            assert not torch.allclose(head_p[name], received[name])  # h_p trained, h_g frozen


def test_mmd_term_pulls_features_toward_the_frozen_extractor() -> None:
    a = torch.randn(20, 8)
    assert float(L.mmd_rbf(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.mmd_rbf(a, a + 3.0)) > 0.01
    uploads = {lamda: first_update(experiment("fedcp", options={"fedcp": {"lamda": lamda}}))[1].upload
               for lamda in (0.0, 5.0)}
    name = next(iter(uploads[0.0]["body"]))
    assert not torch.allclose(uploads[0.0]["body"][name], uploads[5.0]["body"][name])


def test_evaluation_uses_the_policy_and_the_personal_head() -> None:
    exp = experiment("fedcp")
    _, server = play_round(exp, start(exp), 1)
    ctx = exp.runtime.client_context(1, 1)
    state = exp.runtime.store.load(1)
    predictor = exp.algorithm.eval_params(ctx, server.broadcast, state)
    x, _ = ctx.data(ctx.test_indices)
    out = exp.runtime.apply(predictor, x)
    tree = predictor.tree
    rep = ctx.apply(tree["body"], x, "body")
    gen = torch.Generator().manual_seed(int(tree["seed"]))
    s_p, s_g = _policy(tree["cpn"], rep, tree["context"], 1.0, gen)
    expected = ctx.apply(state["head"], rep * s_p, "head") + ctx.apply(tree["head_g"], rep * s_g, "head")
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(tree["context"], F.normalize(state["head"]["head.weight"].sum(0, keepdim=True)))
    assert not torch.allclose(out, ctx.apply(server.broadcast.params, x))


def test_pfllib_compat_uses_a_random_first_context() -> None:
    exp = experiment("fedcp")
    ctx = exp.runtime.client_context(0, 1)
    fresh = exp.algorithm.init_client_state(exp.runtime.init_params, 0)
    compat = dataclasses.replace(exp.algorithm, pfllib_compat=True)
    random_context = compat.context(ctx, fresh)
    assert torch.equal(random_context, compat.context(exp.runtime.client_context(0, 5), fresh))
    assert not torch.allclose(random_context, exp.algorithm.context(ctx, fresh))
    trained = {**fresh, "fresh": torch.tensor(False)}
    assert torch.equal(compat.context(ctx, trained), exp.algorithm.context(ctx, trained))


def test_upload_is_extractor_global_head_and_policy_network() -> None:
    exp = experiment("fedcp")
    server = start(exp)
    result, _ = play_round(exp, server, 1)
    params = exp.runtime.init_params
    per_client = tree_bytes(tree_select(params, is_body)) + tree_bytes(tree_select(params, is_head)) \
        + tree_bytes(server.broadcast.extra["cpn"])
    dim = params["head.weight"].shape[1]
    assert tree_bytes(server.broadcast.extra["cpn"]) == 4 * (dim * 2 * dim + 2 * dim + 2 * 2 * dim)
    assert result.bytes_up == len(CLIENTS) * per_client
    assert server.broadcast.nbytes(0) == per_client  # download: φ, h_g, CPN


def test_validation() -> None:
    for bad in [dict(lamda=-1.0), dict(tau=0.0)]:
        with pytest.raises(ConfigError):
            FedCP(**bad).validate()


def test_end_to_end(tmp_path) -> None:
    summary = cli_summary(tmp_path, "fedcp")
    assert summary["final_accuracy"] > 0.4  # chance is 0.1
