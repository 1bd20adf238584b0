"""FedPer, FedRep, FedBABU: the head stays local, only the body travels."""

from fedloom.algorithms.tree import tree_select, tree_sub
from fedloom.models.base import is_body, is_head

from pfl_helpers import distance, eval_params, experiment, same, start, train_round, train_loss


def test_fedper_uploads_the_body_and_keeps_a_trained_head_per_client() -> None:
    exp = experiment("fedper")
    server = start(exp)
    assert all(is_body(name) for name in server.broadcast.params)
    result, after = train_round(exp, server, 1)
    assert all(is_body(name) for name in result.uploads.weighted_mean())
    init_head = tree_select(exp.runtime.init_params, is_head)
    heads = [exp.runtime.store.load(c)["head"] for c in range(exp.data.num_clients)]
    assert distance(heads[0], init_head) > 0 and distance(heads[0], heads[1]) > 0  # trained, and personal
    scored = eval_params(exp, after, 2, 1)
    assert same(tree_select(scored, is_body), after.broadcast.params) and same(tree_select(scored, is_head), heads[2])


def test_fedrep_trains_the_head_first_with_the_body_frozen_then_the_body_with_the_new_head() -> None:
    exp = experiment("fedrep", head_epochs=2)
    server = start(exp)
    result, _ = train_round(exp, server, 1, cohort=[1])
    ctx = exp.runtime.client_context(1, 1)
    params = {**server.broadcast.params, **tree_select(exp.runtime.init_params, is_head)}
    head_phase, _ = ctx.local_sgd(params, epochs=2, trainable=is_head, purpose="head")
    assert same(tree_select(head_phase, is_body), server.broadcast.params)  # body frozen in the head phase
    body_phase, _ = ctx.local_sgd(head_phase, trainable=is_body)
    assert same(exp.runtime.store.load(1)["head"], tree_select(head_phase, is_head))  # head frozen after
    expected_upload = tree_sub(tree_select(body_phase, is_body), server.broadcast.params)
    assert same(result.uploads.weighted_mean(), expected_upload, atol=1e-6)
    assert not any(is_head(name) for name in result.uploads.weighted_mean())


def test_fedbabu_never_trains_the_head_during_federation_and_fine_tunes_in_the_last_round() -> None:
    exp = experiment("fedbabu", rounds=2, finetune_epochs=3)
    server = start(exp)
    init_head = tree_select(exp.runtime.init_params, is_head)
    for round_ in (1, 2):
        result, server = train_round(exp, server, round_)
        assert not any(is_head(name) for name in result.uploads.weighted_mean())
        assert all(same(exp.runtime.store.load(c)["head"], init_head) for c in range(exp.data.num_clients))
    during = eval_params(exp, server, 0, 1)  # not the last round: the frozen head, no fine-tuning
    assert same(tree_select(during, is_head), init_head)
    final = eval_params(exp, server, 0, 2)  # the last round: fine-tuned body and head
    assert distance(tree_select(final, is_head), init_head) > 0
    assert distance(tree_select(final, is_body), server.broadcast.params) > 0
    assert train_loss(exp, 0, final) < train_loss(exp, 0, during)
