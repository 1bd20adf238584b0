"""FedDBE: the initialization round and the global mean, the PRBM changes predictions, the mean
regularization and its running mean, communication and an end-to-end run."""

from __future__ import annotations

import pytest
import torch

from fedloom.algorithms.feddbe import FedDBE
from fedloom.algorithms.tree import tree_bytes, tree_sq_dist
from fedloom.errors import ConfigError

from seed_helpers import CLIENTS, cli_summary, experiment, play_round, start


def test_initialization_round_uploads_means_and_fixes_the_global_mean() -> None:
    exp = experiment("feddbe")
    server = start(exp)
    result, after = play_round(exp, server, 1)
    dim = exp.runtime.init_params["head.weight"].shape[1]
    assert result.bytes_up == len(CLIENTS) * dim * 4  # one D-vector per client, no model
    items = [(exp.runtime.client_context(c, 1).num_train_samples, exp.algorithm.client_update(
        exp.runtime.client_context(c, 1), server.broadcast, exp.runtime.store.load(c)).upload["mean"])
        for c in CLIENTS]
    expected = sum(n * m for n, m in items) / sum(n for n, _ in items)
    torch.testing.assert_close(after.broadcast.extra["global_mean"], expected)
    for name, value in after.state.params.items():  # the models trained in that period are discarded
        assert torch.equal(value, exp.runtime.init_params[name])
    assert all(torch.count_nonzero(exp.runtime.store.load(c)["prbm"]) == 0 for c in CLIENTS)
    _, later = play_round(exp, after, 2)
    assert torch.equal(later.broadcast.extra["global_mean"], after.broadcast.extra["global_mean"])


def test_prbm_is_learned_and_changes_predictions() -> None:
    exp = experiment("feddbe")
    _, server = play_round(exp, start(exp), 1)
    _, server = play_round(exp, server, 2)
    ctx = exp.runtime.client_context(0, 2)
    state = exp.runtime.store.load(0)
    assert torch.count_nonzero(state["prbm"]) > 0
    x, _ = ctx.data(ctx.test_indices)
    params = server.broadcast.params
    out = exp.runtime.apply(exp.algorithm.eval_params(ctx, server.broadcast, state), x)
    expected = ctx.apply(params, ctx.apply(params, x, "body") + state["prbm"], "head")
    torch.testing.assert_close(out, expected)
    assert (out - ctx.apply(params, x)).abs().max() > 1e-3  # the bias moves every logit


def second_round_upload(**options):
    exp = experiment("feddbe", options={"feddbe": options})
    _, server = play_round(exp, start(exp), 1)
    ctx = exp.runtime.client_context(0, 2)
    return exp.algorithm.client_update(ctx, server.broadcast, exp.runtime.store.load(0))


def test_mean_regularization_and_running_mean_change_the_update() -> None:
    base = second_round_upload()
    off = second_round_upload(kl_weight=0.0)
    slow = second_round_upload(momentum=0.1)
    assert tree_sq_dist(base.upload, off.upload) > 0
    assert tree_sq_dist(base.upload, slow.upload) > 0  # the running mean is threaded through the batches
    assert base.upload.keys() == off.upload.keys() and "prbm" not in base.upload


def test_running_mean_recursion_over_batches() -> None:
    exp = experiment("feddbe")
    ctx = exp.runtime.client_context(0, 1)
    params = exp.runtime.init_params
    means = []

    def hook(w, x, y, aux, carry):
        rep = ctx.apply(w, x, "body")
        means.append(rep.mean(0).detach())
        return ctx.task_loss(ctx.apply(w, rep, "head"), y), 0.5 * carry + 0.5 * rep.mean(0)

    _, carry, _ = ctx.local_sgd_carry(params, torch.zeros(200), hook)
    expected = torch.zeros(200)
    for m in means:
        expected = 0.5 * expected + 0.5 * m
    torch.testing.assert_close(carry, expected)
    assert len(means) == -(-ctx.num_train_samples // ctx.sgd.batch_size) and not carry.requires_grad


def test_upload_after_initialization_is_the_model() -> None:
    exp = experiment("feddbe")
    _, server = play_round(exp, start(exp), 1)
    result, _ = play_round(exp, server, 2)
    assert result.bytes_up == len(CLIENTS) * tree_bytes(exp.runtime.init_params)
    assert server.broadcast.nbytes(0) == tree_bytes(exp.runtime.init_params) + 200 * 4  # the model and ḡ


def test_validation() -> None:
    for bad in [dict(momentum=0.0), dict(momentum=1.5), dict(kl_weight=-1.0)]:
        with pytest.raises(ConfigError):
            FedDBE(**bad).validate()


def test_end_to_end(tmp_path) -> None:
    summary = cli_summary(tmp_path, "feddbe")
    assert summary["final_accuracy"] > 0.4  # chance is 0.1 (round 1 is the initialization period)
