"""FedProto on a mixed federation (MLP and logistic regression, D = 64): nearest-prototype inference, the
prototype regularizer, the server's unweighted per-class mean and the C×D wire bytes."""

from __future__ import annotations

import torch

from fedloom.algorithms import _htfl as H
from fedloom.algorithms.base import Broadcast

from htfl_helpers import C, D, mixed, predictions, start, table_bytes, train_round


def test_inference_is_the_nearest_global_prototype_not_the_head() -> None:
    exp = mixed("fedproto")
    server = start(exp)
    _, server = train_round(exp, server, 1)
    for client in (0, 1):  # an MLP client and a logistic-regression client
        state = exp.runtime.store.load(client)
        ctx = exp.runtime.client_context(client, 1)
        predictor = exp.algorithm.eval_params(ctx, server.broadcast, state)
        x, _ = ctx.data(ctx.test_indices)
        feats = ctx.apply(state["params"], x, "body")
        protos, present = server.broadcast.extra["table"], server.broadcast.extra["present"] > 0
        dist = torch.cdist(feats, protos).masked_fill(~present, float("inf"))
        assert torch.equal(predictions(exp, predictor, client), dist.argmin(1))
        # a head scrambled beyond use changes nothing: the head is not part of inference
        scrambled = {k: (torch.randn_like(v) * 100 if k.startswith("head.") else v)
                     for k, v in state["params"].items()}
        other = exp.algorithm.eval_params(ctx, server.broadcast, {"params": scrambled})
        assert torch.equal(predictions(exp, other, client), dist.argmin(1))
        assert not torch.equal(predictions(exp, scrambled, client), dist.argmin(1))


def test_server_mean_is_unweighted_over_the_clients_holding_a_class() -> None:
    exp = mixed("fedproto")
    result, server = train_round(exp, start(exp), 1)
    ctxs = [exp.runtime.client_context(c, 1) for c in range(4)]
    protos = []
    for c, ctx in enumerate(ctxs):
        params = exp.runtime.store.load(c)["params"]
        x, y = ctx.data(ctx.train_indices)
        feats = ctx.apply(params, x, "body")
        protos.append({k: feats[y == k].mean(0) for k in range(C) if (y == k).any()})
    for k in range(C):
        holders = [p[k] for p in protos if k in p]
        if holders:  # a plain mean over holders, whatever their sample counts
            assert torch.allclose(server.broadcast.extra["table"][k], torch.stack(holders).mean(0), atol=1e-5)
    assert server.broadcast.extra["table"].shape == (C, D)


def test_the_regularizer_pulls_features_to_the_global_prototypes() -> None:
    exp = mixed("fedproto", lam=10.0)
    ctx = exp.runtime.client_context(0, 2)
    params = exp.runtime.for_client(0).init_params
    table = torch.randn(C, D)
    present = torch.ones(C, dtype=torch.bool)
    present[3] = False
    x, y = ctx.data(ctx.train_indices[:16])
    loss = H.proto_batch_loss(ctx.apply, table, present, 10.0)(params, x, y, None)
    feats = ctx.apply(params, x, "body")
    ce = torch.nn.functional.cross_entropy(ctx.apply(params, x), y, reduction="none")
    by_hand = ce + 10.0 * ((feats - table[y]) ** 2).mean(1) * (y != 3)
    assert torch.allclose(loss, by_hand, atol=1e-5)
    # trained against the prototypes, the client's features end nearer to them than without the term
    broadcast = Broadcast(params={}, extra={"table": table, "present": present.float()})
    near = exp.algorithm.client_update(ctx, broadcast, {"params": params}).state["params"]
    free = mixed("fedproto", lam=0.0).algorithm.client_update(ctx, broadcast, {"params": params}).state["params"]
    xs, ys = ctx.data(ctx.train_indices)
    gap = lambda p: float(((ctx.apply(p, xs, "body") - table[ys]) ** 2)[ys != 3].mean())  # noqa: E731
    assert gap(near) < 0.9 * gap(free)


def test_bytes_are_the_held_classes_prototypes() -> None:
    exp = mixed("fedproto")
    first, server = train_round(exp, start(exp), 1)
    assert first.bytes_up == table_bytes(exp, D)
    present = server.broadcast.extra["present"] > 0
    assert server.broadcast.nbytes(0) == int(present.sum()) * (4 * D + 1)


def _upload(exp, compat: bool, client: int = 0, lr: float = None):
    import dataclasses

    from fedloom.algorithms import ALGORITHMS

    runtime = exp.runtime if lr is None else dataclasses.replace(exp.runtime, sgd=dataclasses.replace(
        exp.runtime.sgd, lr=lr))
    algo = ALGORITHMS.get("fedproto")(pfllib_compat=compat)
    ctx = runtime.client_context(client, 1)
    state = algo.init_client_state(runtime.for_client(client).init_params, client)
    return H.decode_rows(algo.client_update(ctx, Broadcast(params={}), state).upload.arrays, C)


def test_pfllib_compat_prototypes_are_collected_during_training() -> None:
    exp = mixed("fedproto")
    # without learning the model never changes: the features of the training batches are the trained model's, so
    # PFLlib's collected means equal the separate pass (the collection covers every sample once per epoch)
    frozen_pass, frozen_collected = _upload(exp, False, lr=0.0), _upload(exp, True, lr=0.0)
    assert torch.allclose(frozen_pass["sum"], frozen_collected["sum"], atol=1e-5)
    assert torch.equal(frozen_pass["count"], frozen_collected["count"])
    # while learning, PFLlib's prototypes mix in features from before each step: they differ from the pass
    trained_pass, trained_collected = _upload(exp, False), _upload(exp, True)
    assert torch.equal(trained_pass["count"], trained_collected["count"])
    assert (trained_pass["sum"] - trained_collected["sum"]).abs().max() > 1e-3
