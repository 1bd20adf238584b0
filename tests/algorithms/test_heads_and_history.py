"""FedRoD (generic balanced-softmax head + personal head) and FedPHP (historical private model)."""

import torch

from fedloom.algorithms._naming import tagged
from fedloom.algorithms.fedphp import FedPHP, mmd_rbf
from fedloom.algorithms.fedrod import PERSONAL_HEAD, FedRoD
from fedloom.algorithms.tree import tree_add, tree_scale, tree_select
from fedloom.models.base import is_head

from pfl_helpers import distance, eval_params, experiment, same, start, train_round


def test_fedrod_generic_head_uses_balanced_softmax_and_the_personal_head_corrects_it() -> None:
    exp = experiment("fedrod")
    ctx = exp.runtime.client_context(0, 1)
    init = dict(exp.runtime.init_params)
    head = tree_select(init, is_head)
    personal = {k: v + 0.1 for k, v in head.items()}
    params = {**init, **tagged(PERSONAL_HEAD, personal)}
    x, y = exp.data.dataset.x[ctx.train_indices[:20]], exp.data.dataset.y[ctx.train_indices[:20]]
    log_prior = ctx.train_label_counts().log()
    got = FedRoD.two_head_loss(ctx)(params, x, y, {"log_prior": log_prior})
    generic = ctx.apply(init, x)
    expected = ctx.task_loss(generic + log_prior, y) + ctx.task_loss(generic + ctx.apply(
        personal, ctx.apply(init, x, part="body"), part="head"), y)
    assert torch.allclose(got, expected, atol=1e-6)
    counts = ctx.train_label_counts()
    assert counts.max() > 2 * counts.min()  # a skewed client, so dropping log n_i would change the loss
    server = start(exp)
    result, after = train_round(exp, server, 1)
    assert set(result.uploads.weighted_mean()) == set(init)  # body + generic head; the personal head stays
    own = exp.runtime.store.load(0)["head"]
    assert distance(own, head) > 0
    scored = eval_params(exp, after, 0, 1)
    logits = ctx.apply(scored, x)
    features = ctx.apply(after.broadcast.params, x, part="body")
    split = ctx.apply(after.broadcast.params, x) + ctx.apply(own, features, part="head")
    assert torch.allclose(logits, split, atol=1e-5)


def test_fedphp_hpm_is_a_moving_average_and_mmd_shapes_training() -> None:
    exp = experiment("fedphp", rounds=4, mu=0.9, lamda=0.5)
    server = start(exp)
    _, server = train_round(exp, server, 1)
    first = {c: exp.runtime.store.load(c) for c in range(exp.data.num_clients)}
    assert same(first[0]["hpm"], first[0]["local"])  # μ_1 = 0: the HPM starts as the trained model
    result, _ = train_round(exp, server, 3)
    state = exp.runtime.store.load(0)
    inherit = 0.9 * 2 / 4
    expected = tree_add(tree_scale(first[0]["hpm"], inherit), tree_scale(state["local"], 1 - inherit))
    assert same(state["hpm"], expected, atol=1e-6)
    assert same(eval_params(exp, server, 0, 3), state["hpm"])
    assert FedPHP(pfllib_compat=True).eval_params(None, server.broadcast, state) is state["local"]
    ctx = exp.runtime.client_context(1, 1)
    plain = FedPHP(lamda=0.0).client_update(ctx, start(exp).broadcast, first[1])
    shaped = FedPHP(lamda=0.5).client_update(ctx, start(exp).broadcast, first[1])
    assert distance(plain.upload, shaped.upload) > 0
    a = torch.randn(8, 5)
    assert float(mmd_rbf(a, a)) < 1e-6 < float(mmd_rbf(a, a + 3.0))
