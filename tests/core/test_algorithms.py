"""Each algorithm's defining mechanism, on a small real experiment (digits, 4 clients)."""

import torch

from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.fedavg_ft import FedAvgFT
from fedloom.algorithms.fedprox import FedProx
from fedloom.algorithms.local import Local
from fedloom.algorithms.tree import tree_add, tree_sq_dist
from fedloom.rounds import federation_of
from fedloom.run import sample_cohort

from helpers import make_experiment, with_algorithm


def one_round(exp, round_=1):
    server = exp.algorithm.init_server(exp.runtime.init_params, federation_of(exp.data))
    cohort = list(range(exp.data.num_clients))
    result = exp.engine.train_cohort(exp.algorithm, server.broadcast, cohort, round_)
    return server, result, exp.algorithm.server_update(server.state, result.uploads)


def test_fedavg_global_model_is_sample_weighted_average_of_client_models() -> None:
    exp = make_experiment(algorithm="fedavg")
    server, result, after = one_round(exp)
    models, weights = [], []
    for cid in range(exp.data.num_clients):  # each client trained independently, same streams
        ctx = exp.runtime.client_context(cid, 1)
        trained, _ = ctx.local_sgd(server.broadcast.params)
        models.append(trained)
        weights.append(ctx.num_train_samples)
    for name in after.state.params:
        expected = sum(w * m[name] for w, m in zip(weights, models)) / sum(weights)
        torch.testing.assert_close(after.state.params[name], expected, atol=1e-6, rtol=1e-5)
    assert result.uploads.total_weight == sum(weights)


def test_fedprox_zero_mu_is_fedavg_and_positive_mu_pulls_toward_global() -> None:
    exp = make_experiment(algorithm="fedavg", lr=0.1)
    server = exp.algorithm.init_server(exp.runtime.init_params, federation_of(exp.data))
    ctx = exp.runtime.client_context(0, 1)
    results = {}
    for name, algo in {"fedavg": FedAvg(), "mu0": FedProx(mu=0.0), "mu1": FedProx(mu=1.0)}.items():
        results[name] = algo.client_update(ctx, server.broadcast, None)
    for key in results["fedavg"].upload:
        assert torch.equal(results["fedavg"].upload[key], results["mu0"].upload[key])
    zero = {k: torch.zeros_like(v) for k, v in server.broadcast.params.items()}
    drift_avg = tree_sq_dist(results["fedavg"].upload, zero)
    drift_prox = tree_sq_dist(results["mu1"].upload, zero)
    assert drift_prox < 0.9 * drift_avg  # the proximal term keeps the local model near the global one


def test_local_never_communicates_and_evaluates_its_own_model() -> None:
    exp = make_experiment(algorithm="local")
    server, result, after = one_round(exp)
    assert result.bytes_up == 0 and result.uploads.count == 0
    assert after.broadcast.params == {}  # nothing to download either
    states = [exp.runtime.store.load(c)["params"] for c in range(exp.data.num_clients)]
    init = exp.runtime.init_params
    assert all(tree_sq_dist(s, init) > 0 for s in states)
    assert tree_sq_dist(states[0], states[1]) > 0  # clients diverge: no averaging happened
    ctx = exp.runtime.client_context(2, 1)
    assert exp.algorithm.eval_params(ctx, after.broadcast, exp.runtime.store.load(2)) is not init


def test_fedavg_ft_trains_like_fedavg_but_evaluates_fine_tuned_models() -> None:
    avg = make_experiment(algorithm="fedavg")
    ft = with_algorithm(make_experiment(algorithm="fedavg"), FedAvgFT(ft_epochs=1))
    _, _, after_avg = one_round(avg)
    _, _, after_ft = one_round(ft)
    for name in after_avg.state.params:  # training is exactly FedAvg's
        assert torch.equal(after_avg.state.params[name], after_ft.state.params[name])
    ctx = ft.runtime.client_context(0, 1)
    tuned = ft.algorithm.eval_params(ctx, after_ft.broadcast, None)
    assert tree_sq_dist(tuned, after_ft.broadcast.params) > 0
    # fine-tuning on the client's own data lowers its training loss versus the global model
    assert ctx.evaluate(tuned, "train")["loss_sum"] < ctx.evaluate(after_ft.broadcast.params, "train")["loss_sum"]
    assert FedAvgFT(ft_epochs=0).eval_params(ctx, after_ft.broadcast, None) is after_ft.broadcast.params


def test_client_results_do_not_depend_on_cohort_order() -> None:
    exp = make_experiment(algorithm="fedprox", options={"fedprox": {"mu": 0.1}})
    server = exp.algorithm.init_server(exp.runtime.init_params, federation_of(exp.data))
    forward = exp.engine.train_cohort(exp.algorithm, server.broadcast, [0, 1, 2, 3], 1).uploads.weighted_mean()
    backward = exp.engine.train_cohort(exp.algorithm, server.broadcast, [3, 2, 1, 0], 1).uploads.weighted_mean()
    for name in forward:
        torch.testing.assert_close(forward[name], backward[name], atol=0, rtol=0)


def test_client_sampling_respects_join_ratio_and_is_seeded() -> None:
    a = sample_cohort(20, 0.25, seed=1, round_=3)
    assert len(a) == 5 and a == sorted(set(a)) and a == sample_cohort(20, 0.25, seed=1, round_=3)
    assert a != sample_cohort(20, 0.25, seed=1, round_=4)
    assert sample_cohort(20, 1.0, seed=1, round_=1) == list(range(20))
    assert len(sample_cohort(3, 0.01, seed=1, round_=1)) == 1
