"""FedALA: adaptive local aggregation (weights in [0, 1], lower layers = global), the start phase, the
evaluation point, communication and an end-to-end run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedloom.algorithms.fedala import FedALA
from fedloom.algorithms.tree import tree_bytes
from fedloom.errors import ConfigError

from seed_helpers import CLIENTS, cli_summary, experiment, play_round, start


def after_two_rounds(**options):
    """State of every client after round 1 and the global model of server step 1 (ALA runs from round 2)."""
    exp = experiment("fedala", options={"fedala": options})
    _, server = play_round(exp, start(exp), 1)
    return exp, server


def test_ala_weights_stay_in_unit_interval_and_lower_layers_equal_global() -> None:
    exp, server = after_two_rounds(eta=50.0)  # a large η drives W against the clip bounds
    algo, theta = exp.algorithm, server.broadcast.params
    state = exp.runtime.store.load(0)
    ctx = exp.runtime.client_context(0, 2)
    local, weights, ran = algo.adaptive_local_aggregation(ctx, theta, state, 1)
    assert ran
    top = list(theta)[-2:]
    assert set(weights) == set(top) == {"head.weight", "head.bias"}
    for name, w in weights.items():
        assert w.min() >= 0 and w.max() <= 1  # clipped
        assert (w < 1).any()  # learned: not the initial ones
        expected = state["params"][name] + (theta[name] - state["params"][name]) * w
        torch.testing.assert_close(local[name], expected)
    assert any(((w == 0) | (w == 1)).any() for w in weights.values())  # the clip was active
    for name in theta:
        if name not in top:
            assert torch.equal(local[name], theta[name])  # lower layers = the global model
            assert not torch.equal(state["params"][name], theta[name])  # ...which differed from the local one


def test_ala_is_skipped_while_global_equals_local_and_start_phase_runs_once(monkeypatch) -> None:
    exp = experiment("fedala")
    algo, server = exp.algorithm, start(exp)
    ctx = exp.runtime.client_context(0, 1)
    state = algo.init_client_state(exp.runtime.init_params, 0)
    assert algo.adaptive_local_aggregation(ctx, server.broadcast.params, state, 0)[2] is False
    passes = []
    monkeypatch.setattr(FedALA, "_learn_weights", counting(FedALA._learn_weights, passes))
    result, server = play_round(exp, server, 1)
    assert passes == [] and all(bool(exp.runtime.store.load(c)["start"]) for c in CLIENTS)
    play_round(exp, server, 2)  # the first real ALA: the start phase
    assert all(not bool(exp.runtime.store.load(c)["start"]) for c in CLIENTS)
    assert all(p[0] is True for p in passes)
    passes.clear()
    _, server = play_round(exp, server, 3)
    assert passes and all(p[0] is False for p in passes)  # later rounds: one pass


def counting(learn, log):
    def wrapped(self, ctx, global_params, local, delta, weights, sample, start_phase):
        log.append((start_phase,))
        return learn(self, ctx, global_params, local, delta, weights, sample, start_phase)
    return wrapped


def test_start_phase_learns_until_the_loss_settles(monkeypatch) -> None:
    exp, server = after_two_rounds()
    algo, theta, state = exp.algorithm, server.broadcast.params, exp.runtime.store.load(1)
    ctx = exp.runtime.client_context(1, 2)
    steps = []
    original = FedALA._weight_step
    monkeypatch.setattr(FedALA, "_weight_step", lambda *a: steps.append(1) or original(*a))
    algo.adaptive_local_aggregation(ctx, theta, state, 1)
    start_steps = len(steps)
    steps.clear()
    algo.adaptive_local_aggregation(ctx, theta, {**state, "start": torch.tensor(False)}, 1)
    sample = int(0.8 * ctx.num_train_samples)
    batches = -(-sample // ctx.sgd.batch_size)
    assert len(steps) == batches  # one pass over the s% sample
    assert start_steps >= (algo.num_pre_loss + 1) * batches  # more than num_pre_loss passes


def test_evaluated_model_is_the_one_the_next_round_trains_from() -> None:
    exp, server = after_two_rounds()
    state = exp.runtime.store.load(2)
    evaluated = exp.algorithm.eval_params(exp.runtime.client_context(2, 1), server.broadcast, state)
    next_start = exp.algorithm.adaptive_local_aggregation(exp.runtime.client_context(2, 2),
                                                          server.broadcast.params, state, 1)[0]
    for name in evaluated:
        assert torch.equal(evaluated[name], next_start[name])


def test_sample_is_a_random_subset_or_pfllib_slice() -> None:
    exp = experiment("fedala")
    ctx = exp.runtime.client_context(0, 1)
    subset = exp.algorithm._sample(ctx, ctx.generator("s"))
    compat = dataclasses.replace(exp.algorithm, pfllib_compat=True)._sample(ctx, ctx.generator("s"))
    indices = ctx.train_indices.tolist()
    assert len(subset) == len(compat) == int(0.8 * len(indices))
    first = indices.index(int(compat[0]))
    assert compat.tolist() == indices[first:first + len(compat)]  # contiguous
    assert set(subset.tolist()) <= set(indices)


def test_upload_is_the_full_model() -> None:
    exp = experiment("fedala")
    result, _ = play_round(exp, start(exp), 1)
    assert result.bytes_up == len(CLIENTS) * tree_bytes(exp.runtime.init_params)


def test_validation() -> None:
    for bad in [dict(eta=0), dict(rand_percent=0), dict(rand_percent=101), dict(layer_idx=-1), dict(threshold=0)]:
        with pytest.raises(ConfigError):
            FedALA(**bad).validate()


def test_end_to_end(tmp_path) -> None:
    summary = cli_summary(tmp_path, "fedala")
    assert summary["final_accuracy"] > 0.5  # chance is 0.1
