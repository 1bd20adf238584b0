"""Ditto, pFedMe, APFL, Per-FedAvg: a personal model tied to the global one by a term or a step."""

import pytest
import torch
from torch.func import grad

from fedloom.algorithms.apfl import APFL
from fedloom.algorithms.ditto import Ditto
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.per_fedavg import PerFedAvg
from fedloom.algorithms.pfedme import PFedMe
from fedloom.algorithms.tree import tree_add, tree_scale, tree_sub
from fedloom.errors import ConfigError

from pfl_helpers import distance, eval_params, experiment, same, start, train_round


def client_update(exp, algorithm, client=0, round_=1, server=None):
    server = server or start(exp)
    ctx = exp.runtime.client_context(client, round_)
    return algorithm.client_update(ctx, server.broadcast, algorithm.init_client_state(exp.runtime.init_params, 0))


def test_ditto_global_update_is_fedavgs_and_lambda_pulls_the_personal_model_to_the_global_one() -> None:
    exp = experiment("ditto")
    fedavg = client_update(exp, FedAvg())
    loose, tight = client_update(exp, Ditto(mu=0.0)), client_update(exp, Ditto(mu=5.0))
    assert same(loose.upload, fedavg.upload) and same(tight.upload, fedavg.upload)
    ctx = exp.runtime.client_context(0, 1)
    plain, _ = ctx.local_sgd(exp.runtime.init_params, purpose="personal")
    assert same(loose.state["personal"], plain)  # μ = 0: plain local training of v
    init = exp.runtime.init_params
    assert distance(tight.state["personal"], init) < 0.8 * distance(loose.state["personal"], init)
    assert Ditto().eval_params(ctx, start(exp).broadcast, tight.state) is tight.state["personal"]


def test_pfedme_inner_problem_pulls_theta_toward_the_local_model_and_server_mixes_with_beta() -> None:
    exp = experiment("pfedme")
    weak, strong = client_update(exp, PFedMe(lamda=0.5)), client_update(exp, PFedMe(lamda=30.0))
    init = exp.runtime.init_params

    def gap(result):
        local = tree_add(init, result.upload)
        return distance(result.state["personal"], local)

    assert gap(strong) < 0.5 * gap(weak)
    assert distance(tree_add(init, weak.upload), init) > 0  # w moved by the envelope step
    exp = experiment("pfedme", beta=0.5)
    server = start(exp)
    result, after = train_round(exp, server, 1)
    expected = tree_add(server.state.params, tree_scale(result.uploads.weighted_mean(), 0.5))
    assert same(after.state.params, expected, atol=1e-6)
    assert same(eval_params(exp, after, 1, 1), exp.runtime.store.load(1)["personal"])
    compat = PFedMe(pfllib_compat=True)
    assert compat.eval_params(exp.runtime.client_context(1, 1), after.broadcast, None) is after.broadcast.params


def test_pfedme_evaluate_changes_only_the_scored_model() -> None:
    exp = experiment("pfedme")
    theta = client_update(exp, PFedMe())
    local = client_update(exp, PFedMe(evaluate="local"))
    assert same(local.upload, theta.upload) and same(local.state["personal"], theta.state["personal"])
    init = exp.runtime.init_params
    w = tree_add(init, local.upload)  # upload = w_i − θ, θ = init here
    ctx, broadcast = exp.runtime.client_context(0, 1), start(exp).broadcast
    assert same(PFedMe(evaluate="local").eval_params(ctx, broadcast, local.state), w, atol=1e-6)
    assert distance(w, theta.state["personal"]) > 0  # the two evaluation points really differ
    assert PFedMe(evaluate="global").eval_params(ctx, broadcast, theta.state) is broadcast.params


def test_pfedme_evaluate_rejects_unknown_models_and_compat_mode() -> None:
    for bad in (PFedMe(evaluate="best"), PFedMe(evaluate="local", pfllib_compat=True)):
        with pytest.raises(ConfigError, match="pfedme"):
            bad.validate()


def test_apfl_alpha_moves_the_global_copy_trains_like_fedavg_and_the_mixture_is_scored() -> None:
    exp = experiment("apfl", alpha=0.5)
    result = client_update(exp, APFL(alpha=0.5))
    assert same(result.upload, client_update(exp, FedAvg()).upload, atol=1e-6)  # w sees only its own loss
    alpha = result.state["alpha"]
    assert 0.0 <= float(alpha) <= 1.0 and abs(float(alpha) - 0.5) > 1e-4
    server = start(exp)
    ctx = exp.runtime.client_context(0, 1)
    scored = APFL(alpha=0.5).eval_params(ctx, server.broadcast, result.state)
    theta, personal = server.broadcast.params, result.state["personal"]
    expected = {k: alpha * personal[k] + (1 - alpha) * theta[k] for k in theta}
    assert same(scored, expected) and distance(scored, theta) > 0 and distance(scored, personal) > 0
    compat = client_update(exp, APFL(alpha=0.5, pfllib_compat=True))
    assert 0.0 <= float(compat.state["alpha"]) <= 1.0 and abs(float(compat.state["alpha"]) - 0.5) > 1e-4


def test_per_fedavg_gradient_is_first_order_maml_and_evaluation_adapts_with_one_step() -> None:
    exp = experiment("per-fedavg")
    algorithm = PerFedAvg(alpha=0.03)
    ctx = exp.runtime.client_context(0, 1)
    params = dict(exp.runtime.init_params)
    x, y = exp.data.dataset.x[ctx.train_indices[:32]], exp.data.dataset.y[ctx.train_indices[:32]]

    def loss(p, xb, yb):
        return ctx.task_loss(ctx.apply(p, xb), yb).mean()

    meta = grad(lambda p: algorithm.meta_loss(ctx)(p, x, y, None).mean())(params)
    inner = grad(loss)(params, x[:16], y[:16])
    adapted = {k: v - 0.03 * inner[k] for k, v in params.items()}
    expected = grad(loss)(adapted, x[16:], y[16:])
    assert same(meta, expected, atol=1e-6)
    server = start(exp)
    scored = algorithm.eval_params(ctx, server.broadcast, None)
    step = tree_sub(scored, server.broadcast.params)
    order = torch.randperm(ctx.num_train_samples, generator=ctx.generator("adapt"))
    batch = ctx.train_indices[order[:ctx.sgd.batch_size]]
    gradient = grad(loss)(server.broadcast.params, exp.data.dataset.x[batch], exp.data.dataset.y[batch])
    assert same(step, tree_scale(gradient, -0.03), atol=1e-6)  # exactly one SGD step of size α
    once, twice = client_update(exp, PerFedAvg()), client_update(exp, PerFedAvg(pfllib_compat=True))
    assert twice.metrics["steps"] == once.metrics["steps"]  # each pass reports its own steps
    assert distance(tree_add(params, twice.upload), tree_add(params, once.upload)) > 0
