"""FedFomo, FedAMP, APPLE: the server remembers every client and sends each its own mix."""

import pytest
import torch

from fedloom.algorithms._stacks import row, weighted_rows
from fedloom.algorithms.apple import APPLE, with_own_core
from fedloom.algorithms.base import Broadcast
from fedloom.algorithms.fedamp import FedAMP
from fedloom.algorithms.fedfomo import FedFomo, combine
from fedloom.errors import ConfigError

from pfl_helpers import distance, eval_params, experiment, same, start, train_round


def noisy(params, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=generator) for k, v in params.items()}


def test_fedfomo_weights_favour_models_that_lower_the_clients_validation_loss() -> None:
    exp = experiment("fedfomo")
    algorithm = FedFomo()
    ctx = exp.runtime.client_context(0, 1)
    train, val = algorithm.split(ctx)
    init = dict(exp.runtime.init_params)
    helpful, _ = ctx.local_sgd(init, indices=train, epochs=5)
    candidates = {k: torch.stack([helpful[k], noisy(init, 0.5, 1)[k]]) for k in init}
    weights = algorithm.model_weights(ctx, init, candidates, val)
    assert weights[0] > 0 > weights[1]
    assert same(combine(weights, candidates, init), helpful)  # only the helpful model survives clipping
    assert same(combine(-weights.abs(), candidates, init), init)  # nobody helps: keep the current model
    server = start(exp)
    assert server.broadcast.personal is None  # round 1: nothing uploaded yet, nothing sent
    _, server = train_round(exp, server, 1)
    result, server = train_round(exp, server, 2)
    affinity = server.state.extra["affinity"]
    for cid, upload, _ in result.uploads.all():
        sent = server.state.extra["sent"][cid]
        assert torch.equal(sent, torch.sort(affinity[cid], descending=True, stable=True).indices[:sent.numel()])
    assert not torch.equal(affinity, torch.eye(affinity.shape[0]))


def test_fedfomo_weights_its_own_model_against_where_its_last_training_started() -> None:
    own_weights = {}
    for reference in ("start", "trained"):
        exp = experiment("fedfomo", reference=reference)
        _, server = train_round(exp, start(exp), 1)
        result, server = train_round(exp, server, 2)
        for cid, upload, _ in result.uploads.all():
            assert server.state.extra["sent"][cid][0] == cid  # round-1 affinity is the identity: own model first
        own_weights[reference] = torch.stack([up["weights"][0] for _, up, _ in result.uploads.all()])
    assert torch.all(own_weights["trained"] == 0)  # its own upload *is* the reference: no information
    assert torch.all(own_weights["start"] > 0)  # round-1 training lowered each client's validation loss
    with pytest.raises(ConfigError, match="fedfomo.reference must be one of start, trained"):
        FedFomo(reference="current").validate()


def test_fedamp_attention_favours_similar_clients_and_the_client_is_pulled_to_its_cloud_model() -> None:
    exp = experiment("fedamp", sigma=2.0)
    algorithm = FedAMP(sigma=2.0)
    init = dict(exp.runtime.init_params)
    models = {k: torch.stack([init[k], noisy(init, 0.001, 1)[k], noisy(init, 0.05, 2)[k], init[k]]) for k in init}
    weights = algorithm.attention(models, senders=[0, 1, 2])
    assert weights[0, 1] > weights[0, 2] > 0 and weights[0, 3] == 0  # client 3 did not upload this round
    assert torch.allclose(weights.sum(dim=1), torch.ones(4))
    assert weights[3, 0] > 0 and torch.isclose(weights[0, 0], 1 - weights[0, 1] - weights[0, 2])
    ctx = exp.runtime.client_context(0, 1)
    far = noisy(init, 0.05, 3)
    loose = FedAMP(lamda=0.0).client_update(ctx, Broadcast({}, personal={"anchor": far}), {"model": init})
    tight = FedAMP(lamda=10.0).client_update(ctx, Broadcast({}, personal={"anchor": far}), {"model": init})
    assert distance(tight.upload, far) < distance(loose.upload, far)
    compat = FedAMP(lamda=10.0, pfllib_compat=True).client_update(ctx, Broadcast({}, personal={"anchor": far}),
                                                                  {"model": init})
    assert same(compat.upload, loose.upload)  # PFLlib's term has no gradient: plain local training
    server = start(exp)
    _, after = train_round(exp, server, 1)
    assert set(after.broadcast.personal) == set(range(exp.data.num_clients))
    assert same(eval_params(exp, after, 2, 1), exp.runtime.store.load(2)["model"])


def test_apple_scores_the_dr_weighted_cores_and_learns_to_weight_a_useful_core() -> None:
    exp = experiment("apple", dr_lr=0.05, mu=0.0)
    server = start(exp)
    cores, p0 = server.broadcast.extra["cores"], server.broadcast.extra["p0"]
    n = p0.shape[0]
    assert torch.allclose(p0.sum(), torch.tensor(1.0)) and next(iter(cores.values())).shape[0] == n
    ctx = exp.runtime.client_context(0, 1)
    init = dict(exp.runtime.init_params)
    useful, _ = ctx.local_sgd(init, epochs=5)
    stacked = {k: torch.stack([init[k], useful[k]] + [torch.zeros_like(init[k])] * (n - 2)) for k in init}
    broadcast = Broadcast({}, extra={"cores": stacked, "p0": p0})
    result = APPLE(dr_lr=0.05, mu=0.0).client_update(ctx, broadcast, None)
    p = result.state["p"]
    assert p[1] - 1 / n > p[2] - 1 / n  # the useful core gains weight over a useless one
    assert set(result.upload) == set(init)  # only the client's own core travels
    scored = APPLE().eval_params(ctx, broadcast, result.state)
    assert same(scored, weighted_rows(p, stacked))
    assert APPLE().anneal(exp.runtime.client_context(0, 1)) == 1.0
    assert APPLE(L=0.5).anneal(exp.runtime.client_context(0, 2)) == 0.0  # past L·R = 1 round
    # PFLlib sets λ at the end of a round for the next: its rounds 1 and 2 both train with 1, then one behind
    compat = APPLE(L=1.0, pfllib_compat=True)
    assert [compat.anneal(exp.runtime.client_context(0, r)) for r in (1, 2)] == [1.0, 1.0]
    assert compat.anneal(exp.runtime.client_context(0, 3)) == APPLE(L=1.0).anneal(exp.runtime.client_context(0, 2))
    result, after = train_round(exp, server, 1)
    for cid, upload, _ in result.uploads.all():  # the server stores each uploaded core in its row
        assert same(row(after.state.extra["cores"], cid), upload)


def test_apple_pfllib_compat_uploads_and_scores_the_clients_own_mix() -> None:
    """PFLlib: the new core is the client's personalized mix Σ_j p_j c_j (its own row the trained core), and the
    client is scored with exactly that model, not with the new cores mixed again by p."""
    exp = experiment("apple", dr_lr=0.05, mu=0.0, pfllib_compat=True)
    server = start(exp)
    ctx = exp.runtime.client_context(0, 1)
    algorithm = APPLE(dr_lr=0.05, mu=0.0, pfllib_compat=True)
    result = algorithm.client_update(ctx, server.broadcast, None)
    n = server.broadcast.extra["p0"].shape[0]
    own = torch.nn.functional.one_hot(torch.tensor(0), n).float()
    assert same(result.upload["mix"], weighted_rows(result.state["p"], with_own_core(
        server.broadcast.extra["cores"], result.upload["core"], own)))
    cores = with_own_core(server.broadcast.extra["cores"], result.upload["mix"], own)
    after = {"cores": cores, "p0": server.broadcast.extra["p0"]}
    scored = algorithm.eval_params(ctx, Broadcast({}, extra=after), result.state)
    assert same(scored, result.upload["mix"])
    remixed = weighted_rows(result.state["p"], cores)
    assert not same(scored, remixed)


def test_apple_pfllib_compat_publishes_trained_cores_within_a_round_and_mixes_at_its_end() -> None:
    """PFLlib's sweep: later clients of a round read the trained cores of earlier ones; the mixes replace the
    cores when the round ends (the last of the cyclic pattern's steps; the only step of a star round)."""
    from fedloom.algorithms.base import Federation
    from fedloom.algorithms.uploads import Uploads
    from fedloom.pipeline.context import AggregationContext

    algorithm = APPLE(pfllib_compat=True)
    init = {"w": torch.zeros(2)}
    server = algorithm.init_server(init, Federation(2, (1, 1)))
    up = {0: {"core": {"w": torch.ones(2)}, "mix": {"w": torch.full((2,), 5.0)}},
          1: {"core": {"w": torch.full((2,), 2.0)}, "mix": {"w": torch.full((2,), 7.0)}}}

    def step(state, cid, q, n):
        context = AggregationContext(0, 1, {}, step=(q, n))
        return algorithm.server_update(state, Uploads(None, 1.0, 1, [(cid, up[cid], 1.0)], context=context))

    first = step(server.state, 0, 0, 2)
    assert first.broadcast.extra["cores"]["w"].tolist() == [[1.0, 1.0], [0.0, 0.0]]  # client 0's trained core
    assert "pending" not in first.broadcast.extra  # the mixes wait on the server, not on the wire
    last = step(first.state, 1, 1, 2)
    assert last.broadcast.extra["cores"]["w"].tolist() == [[5.0, 5.0], [7.0, 7.0]]  # round over: the mixes
    both = algorithm.server_update(server.state, Uploads(None, 2.0, 2, [(0, up[0], 1.0), (1, up[1], 1.0)]))
    assert both.broadcast.extra["cores"]["w"].tolist() == [[5.0, 5.0], [7.0, 7.0]]  # star: one step, the mixes


def test_apple_mixing_has_the_chain_rule_gradients_of_the_explicit_stack() -> None:
    exp = experiment("apple")
    ctx = exp.runtime.client_context(1, 1)
    init = dict(exp.runtime.init_params)
    n = 4
    cores = {k: torch.stack([noisy(init, 0.1, seed)[k] for seed in range(n)]) for k in init}
    own = torch.nn.functional.one_hot(torch.tensor(1), n).float()
    x, y = exp.data.dataset.x[ctx.train_indices[:8]], exp.data.dataset.y[ctx.train_indices[:8]]
    for compat in (False, True):
        algorithm = APPLE(pfllib_compat=compat)
        params = {**noisy(init, 0.1, 9), "apple/p": torch.tensor([0.1, 0.4, 0.3, 0.2])}
        params = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        fast = torch.autograd.grad(algorithm.personal_loss(cores, own, ctx)(params, x, y, {"own": own}).sum(),
                                   list(params.values()))
        scale = {k: 1.0 / (n * v[0].numel()) if compat else 1.0 for k, v in cores.items()}
        stack = with_own_core(cores, {k: params[k] for k in init}, own)
        p = params["apple/p"]
        personal = {k: torch.tensordot(p.detach(), v, dims=1)
                    + torch.tensordot(p - p.detach(), v.detach(), dims=1) * scale[k] for k, v in stack.items()}
        slow = torch.autograd.grad(ctx.task_loss(ctx.apply(personal, x), y).sum(), list(params.values()))
        for a, b in zip(fast, slow):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
