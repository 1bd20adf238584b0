"""FedTGP: margin min(max_gap, τ), a server that trains only its TGP module and sends TGP(c), FedProto's
nearest-prototype inference, C×D bytes."""

from __future__ import annotations

import torch

from fedloom.algorithms import _htfl as H
from fedloom.algorithms.fedtgp import max_gap, tgp_forward

from htfl_helpers import C, D, mixed, predictions, start, table_bytes, train_round


def hand_max_gap(exp, server) -> float:
    """max over classes of the distance to the nearest other class mean, from the clients' own prototypes."""
    protos = []
    for c in range(exp.data.num_clients):
        ctx = exp.runtime.client_context(c, 1)
        params = exp.runtime.store.load(c)["params"]
        x, y = ctx.data(ctx.train_indices)
        feats = ctx.apply(params, x, "body")
        protos.append({k: feats[y == k].mean(0) for k in range(C) if (y == k).any()})
    means = {k: torch.stack([p[k] for p in protos if k in p]).mean(0) for k in range(C)
             if any(k in p for p in protos)}
    gaps = [min(float((means[a] - means[b]).norm()) for b in means if b != a) for a in means]
    return max(gaps)


def test_margin_is_min_of_max_gap_and_tau() -> None:
    for tau, capped in [(0.5, True), (1e6, False)]:
        exp = mixed("fedtgp", tau=tau, server_epochs=1)
        _, server = train_round(exp, start(exp), 1)
        gap = hand_max_gap(exp, server)
        assert gap > 0.5
        expected = 0.5 if capped else gap
        assert abs(server.metrics["margin"] - expected) < 1e-4 * max(1.0, gap)


def test_server_trains_only_the_tgp_module_and_sends_its_outputs() -> None:
    exp = mixed("fedtgp", server_epochs=5)
    server0 = start(exp)
    result, server1 = train_round(exp, server0, 1)
    uploads_before = [(c, {k: v.clone() for k, v in u.items()}) for c, u, _ in result.uploads.all()]
    _, server2 = train_round(exp, server1, 2)
    # the server's only trained tensors are the TGP module's (no model, no client head)
    assert server1.state.params == {} and set(server1.state.extra["tgp"]) == {
        "embedding", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert server1.state.extra["tgp"]["embedding"].shape == (C, D)
    assert not torch.equal(server1.state.extra["tgp"]["fc2.weight"], server2.state.extra["tgp"]["fc2.weight"])
    # the broadcast prototypes are TGP(c) under the trained module, not the uploads' mean
    table = server1.broadcast.extra["table"]
    assert torch.allclose(table, tgp_forward(server1.state.extra["tgp"], torch.arange(C)))
    mean, _ = H.per_class_mean(result.uploads)
    assert not torch.allclose(table, mean, atol=1e-2)
    # the uploads themselves are never touched by the server step
    for (c, before), (c2, after, _) in zip(uploads_before, result.uploads.all()):
        assert c == c2 and all(torch.equal(before[k], after[k]) for k in before)


def test_training_the_tgp_separates_classes_with_the_margin() -> None:
    exp = mixed("fedtgp", server_epochs=0)
    result, untrained = train_round(exp, start(exp), 1)
    trained = exp.algorithm.__class__(server_epochs=30).server_update(start(exp).state, result.uploads)
    protos, labels = H.uploaded_pairs(result.uploads)

    def nearest_accuracy(table: torch.Tensor) -> float:
        return float((torch.cdist(protos, table).argmin(1) == labels).float().mean())

    assert nearest_accuracy(trained.broadcast.extra["table"]) > nearest_accuracy(untrained.broadcast.extra["table"])


def test_inference_is_the_nearest_tgp_prototype_and_bytes_are_c_by_d() -> None:
    exp = mixed("fedtgp", server_epochs=2)
    first, server = train_round(exp, start(exp), 1)
    assert first.bytes_up == table_bytes(exp, D)
    client = 1
    ctx = exp.runtime.client_context(client, 1)
    state = exp.runtime.store.load(client)
    predictor = exp.algorithm.eval_params(ctx, server.broadcast, state)
    x, _ = ctx.data(ctx.test_indices)
    dist = torch.cdist(ctx.apply(state["params"], x, "body"), server.broadcast.extra["table"])
    dist = dist.masked_fill(server.broadcast.extra["present"] == 0, float("inf"))
    assert torch.equal(predictions(exp, predictor, client), dist.argmin(1))
    assert max_gap(torch.eye(3), torch.ones(3, dtype=torch.bool)) == torch.tensor(2.0).sqrt().item()


def test_the_margin_enters_the_tgp_loss() -> None:
    exp = mixed("fedtgp", server_epochs=0)
    result, _ = train_round(exp, start(exp), 1)
    cls = exp.algorithm.__class__
    with_margin = cls(server_epochs=3).server_update(start(exp).state, result.uploads)
    without = cls(server_epochs=3, tau=0.0).server_update(start(exp).state, result.uploads)
    assert without.metrics["margin"] == 0.0 and with_margin.metrics["margin"] > 0
    assert not torch.allclose(with_margin.broadcast.extra["table"], without.broadcast.extra["table"])
