"""FedAPEN: the learned ensemble weight λ moves toward the better model, mutual learning of the private and
shared models, the held-out validation slice, the evaluation point, communication and an end-to-end run."""

from __future__ import annotations

import pytest
import torch

from fedloom.algorithms.fedapen import FedAPEN, learn_lambda
from fedloom.algorithms.tree import tree_bytes, tree_sq_dist
from fedloom.errors import ConfigError

from seed_helpers import CLIENTS, cli_summary, experiment, play_round, start


def constructed(n: int = 64, classes: int = 5):
    """Logits of a model that is right on every sample and of one that is confidently wrong."""
    y = torch.arange(n) % classes
    right = torch.nn.functional.one_hot(y, classes).float() * 4
    wrong = torch.nn.functional.one_hot((y + 1) % classes, classes).float() * 4
    return y, right, wrong


def batches(n: int, epochs: int = 10, size: int = 16):
    return [torch.arange(n)[i:i + size] for _ in range(epochs) for i in range(0, n, size)]


def test_lambda_moves_toward_the_better_of_the_two_models() -> None:
    y, right, wrong = constructed()
    half = torch.tensor(0.5)
    private_better = learn_lambda(half, right, wrong, y, batches(64), lr=0.05)
    shared_better = learn_lambda(half, wrong, right, y, batches(64), lr=0.05)
    assert private_better > 0.6 and shared_better < 0.4
    assert learn_lambda(half, right, wrong, y, batches(64), lr=100.0) == 1.0  # clipped to [0, 1]
    assert learn_lambda(half, wrong, right, y, batches(64), lr=100.0) == 0.0


def test_lambda_is_learned_against_the_new_shared_model_and_used_for_inference() -> None:
    exp = experiment("fedapen")
    _, server = play_round(exp, start(exp), 1)
    ctx = exp.runtime.client_context(0, 1)
    state = exp.runtime.store.load(0)
    assert float(state["lambda"]) == 0.5  # round 1 trains with the initial λ
    predictor = exp.algorithm.eval_params(ctx, server.broadcast, state)
    lam = predictor.tree["lambda"]
    assert float(lam) != 0.5 and 0 <= float(lam) <= 1
    x, _ = ctx.data(ctx.test_indices)
    expected = lam * ctx.apply(state["private"], x) + (1 - lam) * ctx.apply(server.broadcast.params, x)
    torch.testing.assert_close(exp.runtime.apply(predictor, x), expected)
    # the next round trains with exactly the λ that was evaluated
    _, _ = play_round(exp, server, 2)
    assert torch.equal(exp.runtime.store.load(0)["lambda"], lam)


def test_validation_slice_is_held_out_of_training() -> None:
    exp = experiment("fedapen")
    ctx = exp.runtime.client_context(1, 1)
    train, val = exp.algorithm.split(ctx)
    assert len(val) == int(0.05 * ctx.num_train_samples) > 0
    assert set(train.tolist()) | set(val.tolist()) == set(ctx.train_indices.tolist())
    assert not set(train.tolist()) & set(val.tolist())
    fresh = exp.algorithm.init_client_state(exp.runtime.init_params, 0)
    result = exp.algorithm.client_update(ctx, start(exp).broadcast, fresh)
    assert result.metrics["samples"] == len(train)


def test_mutual_learning_trains_both_models_differently_from_plain_sgd() -> None:
    exp = experiment("fedapen")
    server = start(exp)
    ctx = exp.runtime.client_context(0, 1)
    fresh = exp.algorithm.init_client_state(exp.runtime.init_params, 0)
    assert tree_sq_dist(fresh["private"], exp.runtime.init_params) > 0  # its own initialisation
    result = exp.algorithm.client_update(ctx, server.broadcast, fresh)
    assert tree_sq_dist(result.state["private"], fresh["private"]) > 0
    train, _ = exp.algorithm.split(ctx)
    plain, _ = ctx.local_sgd(server.broadcast.params, indices=train)
    shared = {n: server.broadcast.params[n] + d for n, d in result.upload.items()}
    assert tree_sq_dist(shared, plain) > 1e-6  # the KL and ensemble terms reached the shared model


def test_upload_is_the_shared_model_with_unit_weight() -> None:
    exp = experiment("fedapen")
    result, _ = play_round(exp, start(exp), 1)
    assert result.bytes_up == len(CLIENTS) * tree_bytes(exp.runtime.init_params)
    assert result.uploads.total_weight == len(CLIENTS)  # unweighted average on the server


def test_validation() -> None:
    for bad in [dict(val_ratio=1.0), dict(lambda_lr=0.0), dict(lambda_epochs=-1), dict(init_lambda=2.0)]:
        with pytest.raises(ConfigError):
            FedAPEN(**bad).validate()


def test_end_to_end(tmp_path) -> None:
    summary = cli_summary(tmp_path, "fedapen")
    assert summary["final_accuracy"] > 0.5  # chance is 0.1
