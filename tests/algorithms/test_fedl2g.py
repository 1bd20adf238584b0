"""FedL2G: the uploaded meta-gradient of the quiz loss w.r.t. the guiding vectors (checked by finite
differences), the server's clipped SGD step on the per-class mean, warm-up rounds, quiz data held out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedloom.algorithms import _htfl as H
from fedloom.algorithms.fedl2g import full_batches, guided_loss

from htfl_helpers import C, D, mixed, start, train_round


@pytest.mark.parametrize("space", ["feat", "logit"])
def test_the_upload_is_the_meta_gradient_of_the_quiz_loss(space: str) -> None:
    exp = mixed("fedl2g", space=space, warm_up_rounds=0)
    server = start(exp)
    guides = server.broadcast.extra["guides"]
    assert guides.shape == (C, D if space == "feat" else C)
    ctx = exp.runtime.client_context(0, 1)
    params = ctx.init_params
    quiz, study = exp.algorithm.split(ctx)
    grad = exp.algorithm.meta_gradient(ctx, params, guides, study, quiz)

    def quiz_loss(g: torch.Tensor) -> float:  # the same batches: the client's "fedl2g-meta" stream of round 1
        gen = ctx.generator("fedl2g-meta")
        w = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        b = full_batches(study, ctx.sgd.batch_size, 1, gen)[0]
        pseudo = guided_loss(ctx.apply, w, *ctx.data(b), g, space).mean()
        grads = torch.autograd.grad(pseudo, list(w.values()))
        stepped = {k: v - ctx.sgd.lr * gr for (k, v), gr in zip(w.items(), grads)}
        x, y = ctx.data(full_batches(quiz, ctx.sgd.batch_size, 1, gen)[0])
        return float(F.cross_entropy(ctx.apply(stepped, x), y).detach())

    c = grad.abs().max(1).values.argmax()
    j = grad[c].abs().argmax()
    eps = 0.05
    plus, minus = guides.clone(), guides.clone()
    plus[c, j] += eps
    minus[c, j] -= eps
    numeric = (quiz_loss(plus) - quiz_loss(minus)) / (2 * eps)
    assert abs(numeric - float(grad[c, j])) < 0.1 * abs(float(grad[c, j])) + 1e-5
    # only the classes of the study batch have a gradient: their rows are the upload
    _, y = ctx.data(full_batches(study, ctx.sgd.batch_size, 1, ctx.generator("fedl2g-meta"))[0])
    assert set((grad.abs().sum(1) > 0).nonzero().flatten().tolist()) <= set(y.tolist())


def test_server_takes_a_clipped_sgd_step_on_the_mean_gradient() -> None:
    exp = mixed("fedl2g", warm_up_rounds=0, server_lr=0.5)
    server0 = start(exp)
    result, server = train_round(exp, server0, 1)
    mean, present = H.per_class_mean(result.uploads)
    grad = mean * present.unsqueeze(1)
    grad = grad * min(1.0, 100 / float(grad.norm()))
    assert torch.allclose(server.broadcast.extra["guides"], server0.broadcast.extra["guides"] - 0.5 * grad, atol=1e-6)
    assert result.bytes_up > 0 and result.bytes_up % (4 * D + 1) == 0  # k_i rows of D floats and k_i ids


def test_warm_up_rounds_only_run_the_meta_step_and_quiz_data_stay_out_of_training() -> None:
    exp = mixed("fedl2g", warm_up_rounds=1)
    ctx = exp.runtime.client_context(0, 1)
    state = exp.algorithm.init_client_state(ctx.init_params, 0)
    out = exp.algorithm.client_update(ctx, start(exp).broadcast, state)
    assert all(torch.equal(out.state["params"][k], state["params"][k]) for k in state["params"])
    ctx2 = exp.runtime.client_context(0, 2)
    trained = exp.algorithm.client_update(ctx2, start(exp).broadcast, state).state["params"]
    assert not torch.equal(trained["head.weight"], state["params"]["head.weight"])
    quiz, study = exp.algorithm.split(ctx2)
    assert quiz.numel() == ctx2.sgd.batch_size and not set(quiz.tolist()) & set(study.tolist())


def test_the_guiding_term_pulls_features_to_the_guides() -> None:
    exp = mixed("fedl2g", warm_up_rounds=0)
    ctx = exp.runtime.client_context(0, 1)
    guides = torch.randn(C, D)
    params = ctx.init_params
    _, study = exp.algorithm.split(ctx)
    near, _ = ctx.local_sgd(params, indices=study, batch_loss=exp.algorithm.loss(ctx.apply, guides))
    free, _ = ctx.local_sgd(params, indices=study)
    x, y = ctx.data(study)
    gap = lambda p: float((ctx.apply(p, x, "body") - guides[y]).pow(2).mean())  # noqa: E731
    assert gap(near) < 0.9 * gap(free)
