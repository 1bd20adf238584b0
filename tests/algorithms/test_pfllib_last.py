"""FedCross, PFL-DA, FedGC, FedMTL, FedPCL (issue 23, the last five PFLlib methods) and FedCAC's threshold:
each defining mechanism against a hand computation or its removal, engine equivalence, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fedloom.algorithms.base import Federation
from fedloom.algorithms.uploads import UploadAccumulator
from fedloom.cli import main
from fedloom.rounds import federation_of

from bad_input import assert_one_clear_error, ids
from engine_equivalence import (assert_processes_match_serial, assert_vectorized_falls_back_to_serial,
                                assert_vectorized_matches_serial)
from helpers import make_experiment
from pfl_helpers import experiment, same, start


def server_after(algorithm, init, sizes, uploads):
    """One server step of ``algorithm`` from ``init`` after ``uploads`` [(client, upload, weight)]."""
    server = algorithm.init_server(init, Federation(len(sizes), tuple(sizes)))
    acc = UploadAccumulator(keep_all=True)
    for cid, upload, weight in uploads:
        acc.add(cid, upload, weight)
    return server, algorithm.server_update(server.state, acc.finish())


# ------------------------------------------------------------------ FedCross
def test_fedcross_collaborator_strategies_and_cross_aggregation_by_hand() -> None:
    from fedloom.algorithms.fedcross import collaborator, cross_aggregate, similarity

    stack = {"w": torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.1, 1.0], [-1.0, 0.0]])}
    sim = similarity(stack)
    assert abs(float(sim[0, 1]) - 0.9 / (0.81 + 0.01) ** 0.5) < 1e-9 and abs(float(sim[0, 3]) + 1) < 1e-9
    assert collaborator(sim, "highest", 0).tolist() == [1, 0, 1, 2]
    assert collaborator(sim, "lowest", 0).tolist() == [3, 3, 3, 0]
    assert collaborator(sim, "in-order", 0).tolist() == [1, 2, 3, 0]  # offset r mod (K−1) + 1
    assert collaborator(sim, "in-order", 4).tolist() == [2, 3, 0, 1]
    mixed = cross_aggregate(stack, torch.tensor([3, 3, 3, 0]), 0.75)["w"]
    assert torch.allclose(mixed[0], torch.tensor([0.5, 0.0])) and torch.allclose(mixed[3], torch.tensor([-0.5, 0.0]))
    pairs = similarity({"a.w": stack["w"], "a.b": stack["w"].flip(1), "c.w": stack["w"]}, layer_pairs=True)
    # (weight, bias) pairs: the pair's cosine equals the row's (a flip keeps norms and doubles the dot), and
    # PFLlib adds the unpaired last tensor twice: 1 + 2 cosines
    assert torch.allclose(pairs, 3 * sim)


def test_fedcross_server_keeps_k_middleware_models_and_cross_aggregates_them() -> None:
    from fedloom.algorithms.fedcross import FedCross

    init = {"w": torch.zeros(2)}
    values = {0: [1.0, 0.0], 1: [0.0, 1.0], 2: [-1.0, 0.0]}
    algo = FedCross(alpha=0.9, strategy="lowest")
    server = algo.init_server(init, Federation(3, (10, 10, 20)))
    assign = server.state.extra["assign"]
    assert sorted(assign.tolist()) == [0, 1, 2]  # K = N: every client its own middleware model
    acc = UploadAccumulator(keep_all=True)
    for cid, v in values.items():
        acc.add(cid, {"w": torch.tensor(v)}, (10, 10, 20)[cid])
    after = algo.server_update(server.state, acc.finish())
    assert torch.allclose(after.broadcast.params["w"], torch.tensor([-0.25, 0.25]))  # (10·a + 10·b + 20·c) / 40
    trained = torch.stack([torch.tensor(values[int((assign == j).nonzero())]) for j in range(3)])
    partner = [min((k for k in range(3) if k != j), key=lambda k: float(F.cosine_similarity(trained[j], trained[k], 0)))
               for j in range(3)]
    expected = 0.9 * trained + 0.1 * trained[partner]
    assert torch.allclose(after.state.extra["middleware"]["w"], expected)
    plain = FedCross(alpha=1.0).server_update(server.state, acc.finish())
    assert torch.allclose(plain.state.extra["middleware"]["w"], trained)  # α = 1: no cross-aggregation
    for cid in range(3):  # each client downloads exactly one middleware model, never the global one
        got = after.broadcast.for_client(cid).personal["model"]["w"]
        assert torch.equal(got, after.state.extra["middleware"]["w"][after.state.extra["assign"][cid]])
        assert after.broadcast.nbytes(cid) == 2 * 4


def test_fedcross_with_fewer_middleware_models_than_clients_averages_each_models_trainers() -> None:
    from fedloom.algorithms.fedcross import FedCross

    assign = torch.tensor([0, 1, 0, 1])
    stack = {"w": torch.tensor([[10.0], [20.0]])}
    items = [(0, {"w": torch.tensor([1.0])}, 1.0), (2, {"w": torch.tensor([4.0])}, 3.0)]  # only model 0 trained
    got = FedCross.trained_middleware(stack, items, assign)["w"]
    assert torch.allclose(got, torch.tensor([[3.25], [20.0]]))  # (1·1 + 3·4) / 4; model 1 kept as it was
    algo = FedCross(models=2)
    server = algo.init_server({"w": torch.zeros(1)}, Federation(4, (1, 1, 1, 1)))
    assert server.state.extra["middleware"]["w"].shape == (2, 1)
    later = algo.server_update(server.state, UploadAccumulator(keep_all=True).finish())
    firsts = [server.state.extra["assign"].tolist(), later.state.extra["assign"].tolist()]
    assert all(sorted(a) == [0, 0, 1, 1] for a in firsts)  # perm(c) mod K: every model to two clients


# ------------------------------------------------------------------ PFL-DA
def test_pfl_da_trains_personal_head_then_body_with_the_global_head() -> None:
    from fedloom.algorithms.pfl_da import PFLDA, head_distance

    exp = experiment("pfl-da")
    ctx = exp.runtime.client_context(0, 1)
    broadcast = start(exp).broadcast
    assert all(not k.startswith("body.") for k in broadcast.params)  # only the head is shared

    def run(lamda: float):
        result = PFLDA(lamda=lamda).client_update(ctx, broadcast, None)
        model = result.state["model"]
        personal = {k: model[k] for k in broadcast.params}
        shared = {k: broadcast.params[k] + result.upload[k] for k in broadcast.params}
        return result, model, personal, shared

    result, model, personal, shared = run(1.0)
    assert set(result.upload) == set(broadcast.params)  # the body and the personal head never leave
    assert not same(personal, shared, atol=1e-6)  # two heads: the personal one and the global copy
    body = {k: v for k, v in model.items() if k.startswith("body.")}
    assert not same(body, {k: exp.runtime.init_params[k] for k in body})  # phase 2 trained the body
    free = run(0.0)[2]  # λ = 0: the personal head drifts freely (0.57 here); λ = 1 holds it near h_g (0.04)
    assert float(head_distance(personal, broadcast.params)) < 0.2 * float(head_distance(free, broadcast.params))
    assert PFLDA().eval_params(ctx, broadcast, result.state) is result.state["model"]


# ------------------------------------------------------------------ FedGC
def test_fedgc_spread_out_regularizer_by_hand_and_its_step_pushes_non_holders_away() -> None:
    from fedloom.algorithms.fedgc import FedGC, spread_out

    w = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [2.0, 0.0]]])  # [clients, classes, D]
    held = torch.tensor([[True, False], [False, True]])  # client 0 holds class 0, client 1 class 1
    e0, e1 = w[0, 0], w[1, 1]  # one holder each: e_c is that client's row
    # class 0: the other client (1) holds only class 1: its row W_1[1]·e_0; class 1 likewise with W_0[0]
    expected = (-torch.log(torch.exp(e0 @ e0) / (torch.exp(e0 @ e0) + torch.exp(w[1, 1] @ e0)))
                - torch.log(torch.exp(e1 @ e1) / (torch.exp(e1 @ e1) + torch.exp(w[0, 0] @ e1))))
    assert torch.allclose(spread_out(w, held), expected)
    before = spread_out(w, held)
    corrected, reg = FedGC(server_lr=0.1).corrected(w, held)
    assert abs(reg - float(before)) < 1e-6 and float(spread_out(corrected, held)) < float(before)
    assert corrected[1, 1] @ e0 < w[1, 1] @ e0  # client 1's class-1 vector pushed away from class 0's embedding
    assert corrected[0, 0] @ e1 < w[0, 0] @ e1
    assert torch.equal(FedGC(server_lr=0.0).corrected(w, held)[0], w)


def test_fedgc_client_softmax_covers_only_its_classes() -> None:
    from fedloom.algorithms.fedgc import FedGC
    from fedloom.algorithms.fedavg import FedAvg

    exp = make_experiment(algorithm="fedgc", alpha=0.1, options={"mlp": {"hidden": 32, "layers": 1}})
    cid = next(c for c in range(exp.data.num_clients)
               if (exp.runtime.client_context(c, 1).train_label_counts() == 0).any())
    ctx = exp.runtime.client_context(cid, 1)
    absent = (ctx.train_label_counts() == 0).nonzero().flatten()
    server = start(exp)
    result = FedGC().client_update(ctx, server.broadcast.for_client(cid), None)
    head = server.broadcast.personal[cid]["head"]
    assert torch.equal(result.upload["head"]["head.weight"][absent], head["head.weight"][absent])
    assert result.upload["held"].tolist() == (ctx.train_label_counts() > 0).tolist()
    plain = FedAvg().client_update(ctx, type(server.broadcast)(params=exp.runtime.init_params), None)
    assert plain.upload["head.weight"][absent].abs().max() > 0  # a full softmax moves the absent rows
    scored = FedGC().eval_params(ctx, server.broadcast.for_client(cid), None)
    x, _ = ctx.data(ctx.test_indices)
    assert not torch.isin(exp.runtime.apply(scored, x).argmax(1), absent).any()


def test_fedgc_pfllib_compat_heads_have_no_bias_and_are_drawn_per_client() -> None:
    from fedloom.algorithms.fedgc import FedGC

    exp = make_experiment(algorithm="fedgc", alpha=0.1, options={"mlp": {"hidden": 32, "layers": 1},
                                                                 "fedgc": {"pfllib_compat": True}})
    server = exp.algorithm.init_server(exp.runtime.init_params, federation_of(exp.data))
    heads = [server.broadcast.personal[c]["head"] for c in range(exp.data.num_clients)]
    bound = 1 / heads[0]["head.weight"].shape[1] ** 0.5
    assert all(float(h["head.bias"].abs().max()) == 0 for h in heads)
    assert all(float(h["head.weight"].abs().max()) <= bound for h in heads)
    assert not torch.equal(heads[0]["head.weight"], heads[1]["head.weight"])  # each client its own draw
    default = FedGC().init_server(exp.runtime.init_params, federation_of(exp.data)).broadcast.personal
    assert torch.equal(default[0]["head"]["head.weight"], default[1]["head"]["head.weight"])
    result = exp.algorithm.client_update(exp.runtime.client_context(0, 1), server.broadcast.for_client(0), None)
    assert float(result.upload["head"]["head.bias"].abs().max()) == 0  # trained without a bias
    assert not torch.equal(result.upload["head"]["head.weight"], heads[0]["head.weight"])


# ------------------------------------------------------------------ FedMTL
def test_fedmtl_client_term_is_the_gradient_of_the_full_objective_and_omega_closed_form() -> None:
    from fedloom.algorithms.fedmtl import FedMTL, learned_omega, mean_omega, pull

    torch.manual_seed(0)
    W = torch.randn(3, 4, dtype=torch.float64)
    omega = learned_omega(W.float(), 1e-3)
    gram = W @ W.T
    values, vectors = torch.linalg.eigh(gram)
    root = vectors @ torch.diag(values.sqrt()) @ vectors.T
    assert torch.allclose(torch.linalg.inv(omega), root / root.trace() + 1e-3 * torch.eye(3), atol=1e-4)
    assert torch.allclose(mean_omega(3) @ mean_omega(3), mean_omega(3))
    algo = FedMTL(lambda1=0.3, lambda2=0.2)
    stack = {"w": W.float()}
    u = pull(omega.float(), stack)
    full = torch.zeros(3, 4).requires_grad_(True)
    for t in range(3):  # ∇_{w_t} [λ₁ tr(W Ω Wᵀ) + λ₂‖W‖²] == ∇ of the client's own terms
        Wt = W.float().clone()
        Wt[t] = full[t] + W[t].float()
        objective = 0.3 * torch.trace(Wt.T @ omega.float() @ Wt) + 0.2 * Wt.pow(2).sum()
        (g_full,) = torch.autograd.grad(objective, full)
        w = {"w": W[t].float().clone().requires_grad_(True)}
        local = algo.regularizer(w, {"pull": {"w": u["w"][t]}, "diag": omega[t, t].float()})
        (g_local,) = torch.autograd.grad(local, w["w"])
        assert torch.allclose(g_full[t], g_local, rtol=1e-4, atol=1e-4)


def test_fedmtl_without_regularization_is_local_training_and_with_it_models_move_together() -> None:
    from fedloom.algorithms.fedmtl import FedMTL

    exp = experiment("fedmtl")
    ctx = exp.runtime.client_context(0, 1)
    server = start(exp)
    local, _ = ctx.local_sgd(exp.runtime.init_params)
    free = FedMTL(lambda1=0.0, lambda2=0.0).client_update(ctx, server.broadcast.for_client(0), None)
    assert same(free.upload, local)
    others = {k: v + 1.0 for k, v in exp.runtime.init_params.items()}  # every other client sits at w₀ + 1
    stack = {k: torch.stack([exp.runtime.init_params[k]] + [others[k]] * 3) for k in others}
    state = server.state.replace(extra={"models": stack, "omega": torch.eye(4, dtype=torch.float64) - 0.25})
    pulled = FedMTL(lambda1=1.0, lambda2=0.0).client_update(ctx, FedMTL.broadcast(state).for_client(0), None)
    gap = lambda p: sum(float((p[k] - others[k]).pow(2).sum()) for k in p)  # noqa: E731
    assert gap(pulled.upload) < gap(local)  # the task-relation term pulls client 0 toward the others
    # PFLlib's regularizer is built from detached state_dict tensors: its compat trains as Local even under the pull
    compat = FedMTL(lambda1=1.0, lambda2=0.0, pfllib_compat=True)
    assert same(compat.client_update(ctx, FedMTL.broadcast(state).for_client(0), None).upload, local)


# ------------------------------------------------------------------ FedPCL
def test_fedpcl_contrastive_loss_by_hand() -> None:
    from fedloom.algorithms.fedpcl import contrastive_loss

    feats = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    apply = lambda params, x, part="all": x  # noqa: E731  (the body is the identity here)
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    clients = torch.stack([g, torch.tensor([[0.6, 0.8], [-1.0, 0.0]])])
    y = torch.tensor([1, 0])
    got = contrastive_loss(apply, g, clients, tau=0.5)({}, feats, y, None)
    f = feats / feats.norm(dim=1, keepdim=True)

    def ce(table, i):
        z = f[i] @ table.T / 0.5
        return float(torch.logsumexp(z, 0) - z[y[i]])

    for i in range(2):
        expected = ce(g, i) + (ce(clients[0], i) + ce(clients[1], i)) / 2
        assert abs(float(got[i]) - expected) < 1e-5


def test_fedpcl_first_round_only_collects_prototypes_and_server_pads_with_global() -> None:
    from fedloom.algorithms.fedpcl import FedPCL

    exp = experiment("fedpcl")
    ctx = exp.runtime.client_context(0, 1)
    first = FedPCL().client_update(ctx, start(exp).broadcast, None)
    assert same(first.state["params"], exp.runtime.init_params)  # nothing to contrast with yet: no training
    protos = first.state["protos"][first.state["held"] > 0]
    assert torch.allclose(protos.norm(dim=1), torch.ones(len(protos)), atol=0.2) or (protos.norm(dim=1) <= 1.0001).all()
    sums = [torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.6, 0.8]])]
    counts = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])]
    _, after = server_after(FedPCL(), {}, (5, 5, 5),
                            [(cid, {"sum": s, "count": c}, 1.0) for cid, (s, c) in enumerate(zip(sums, counts))])
    g = after.broadcast.extra["global"]
    assert torch.allclose(g, torch.tensor([[0.5, 0.5], [0.6, 0.8]]))
    padded = after.broadcast.extra["clients"]
    assert torch.allclose(padded[0], torch.tensor([[1.0, 0.0], [0.6, 0.8]]))  # class 1 from the global table
    assert torch.allclose(padded[2], g)  # a client not heard from: the global table
    second = FedPCL().client_update(ctx, FedPCLBroadcast(exp, after), first.state)
    assert not same(second.state["params"], first.state["params"])


def FedPCLBroadcast(exp, after):
    """A broadcast of the right width for the test model: the hand tables above are 2-wide."""
    from fedloom.algorithms.base import Broadcast

    ctx = exp.runtime.client_context(0, 1)
    x, _ = ctx.data(ctx.train_indices[:1])
    d = exp.runtime.apply(exp.runtime.init_params, x, part="body").flatten(1).shape[1]
    c = int(ctx.train_label_counts().numel())
    gen = torch.Generator().manual_seed(0)
    g = F.normalize(torch.randn(c, d, generator=gen), dim=1)
    return Broadcast(params={}, extra={"global": g, "clients": g.unsqueeze(0).repeat(3, 1, 1)})


def test_fedpcl_predicts_the_most_similar_own_prototype() -> None:
    from fedloom.algorithms.fedpcl import nearest_own_prototype

    apply = lambda params, x, part="all": x  # noqa: E731
    tree = {"params": {}, "protos": torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]),
            "held": torch.tensor([1.0, 1.0, 0.0])}
    scores = nearest_own_prototype(apply, tree, torch.tensor([[0.2, 1.0], [1.0, -5.0]]))
    assert scores.argmax(1).tolist() == [1, 0]  # class 2 (not held) never wins, even over negative scores


def test_fedpcl_pfllib_orders_by_hand() -> None:
    """PFLlib's dict orders: a client's classes as first seen, then its missing ones by id; the global order as
    classes first appear over the clients in selection order; a client never heard from gets the global's."""
    from fedloom.algorithms.fedpcl import pfllib_orders

    held = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    rank = torch.tensor([[1.0, 4.0, 0.0, 4.0], [4.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])  # client 0: 2, 0
    g_order, orders = pfllib_orders(rank, held, selection=[1, 0])
    assert g_order.tolist() == [2, 3, 1, 0]  # client 1's 2, 3, 1, then client 0's 0
    assert orders.tolist() == [[2, 0, 1, 3], [2, 3, 1, 0], [2, 3, 1, 0]]


def test_fedpcl_pfllib_compat_stacks_tables_in_insertion_order_and_scores_missing_classes_by_the_global() -> None:
    from fedloom.algorithms.fedpcl import FedPCL, decode_ordered_rows, ordered_rows_message

    message = ordered_rows_message(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]), torch.tensor([2, 0]))
    decoded = decode_ordered_rows(message.arrays, classes=3)
    assert decoded["rank"].tolist() == [1.0, 3.0, 0.0] and decoded["count"].tolist() == [1.0, 0.0, 1.0]
    ups = [{"sum": torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]), "count": torch.tensor([1.0, 0.0, 1.0]),
            "rank": torch.tensor([1.0, 3.0, 0.0])},
           {"sum": torch.tensor([[0.0, 0.0], [0.6, 0.8], [0.0, 0.0]]), "count": torch.tensor([0.0, 1.0, 0.0]),
            "rank": torch.tensor([3.0, 0.0, 3.0])}]
    _, plain = server_after(FedPCL(), {}, (5, 5), [(cid, up, 1.0) for cid, up in enumerate(ups)])
    _, compat = server_after(FedPCL(pfllib_compat=True), {}, (5, 5), [(cid, up, 1.0) for cid, up in enumerate(ups)])
    g, order = plain.broadcast.extra["global"], compat.broadcast.extra["client_orders"].long()
    assert sorted(compat.broadcast.extra["global"].tolist()) == sorted(g.tolist())  # the same rows, reordered
    assert order[0].tolist() == [2, 0, 1] and order[1].tolist() == [1, 0, 2]
    assert torch.equal(compat.broadcast.extra["clients"][0], plain.broadcast.extra["clients"][0][order[0]])
    # scoring: client 0 lacks class 1, which PFLlib's padded dict scores against the global prototype
    exp = experiment("fedpcl")
    state = {"params": exp.runtime.init_params, "protos": ups[0]["sum"], "held": ups[0]["count"]}
    ctx = exp.runtime.client_context(0, 1)
    predictor = FedPCL(pfllib_compat=True).eval_params(ctx, compat.broadcast, state)
    assert torch.equal(predictor.tree["protos"][1], g[1]) and bool((predictor.tree["held"] > 0).all())
    assert FedPCL().eval_params(ctx, plain.broadcast, state).tree["held"][1] == 0


# ------------------------------------------------------------------ FedCAC threshold
def test_fedcac_first_customization_uses_one_over_beta_as_pfllib() -> None:
    from fedloom.algorithms.fedcac import FedCAC

    masks = [torch.tensor(m, dtype=torch.bool) for m in ([1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0])]
    uploads = [(cid, {"params": {"w": torch.full((4,), v)}, "critical": {"w": masks[cid]}}, 1.0)
               for cid, v in enumerate((1.0, 5.0, 3.0))]
    # overlaps 0-2: 0.75, mean 0.694, max 0.833: after round 1 with β = 4 the threshold is 0.729 (1/β), so
    # client 0 collaborates with client 2; with (t + 1)/β = 2/β it would be 0.764 and client 0 stays alone
    _, after = server_after(FedCAC(beta=4), {"w": torch.zeros(4)}, (1, 1, 1), uploads)
    assert torch.allclose(after.broadcast.for_client(0).personal["customized"]["w"], torch.full((4,), 2.0))
    _, compat = server_after(FedCAC(beta=4, pfllib_compat=True), {"w": torch.zeros(4)}, (1, 1, 1), uploads)
    for cid in range(3):  # PFLlib after round 1: the customized models are still the initial model
        assert torch.equal(compat.broadcast.for_client(cid).personal["customized"]["w"], torch.zeros(4))


# ------------------------------------------------------------------ engines and bad input
VECTORIZABLE = [("fedcross", {}), ("pfl-da", {}), ("fedmtl", {}), ("fedgc", {}),
                ("fedgc", {"fedgc": {"pfllib_compat": True}})]


@pytest.mark.parametrize("algorithm, options", VECTORIZABLE, ids=[a + "-compat" * bool(o) for a, o in VECTORIZABLE])
def test_vectorized_matches_serial_and_really_vectorizes(algorithm: str, options: dict) -> None:
    assert_vectorized_matches_serial(algorithm=algorithm, options=options, clients=6, join_ratio=0.9, rounds=2,
                                     alpha=0.2, compare_params=False)


@pytest.mark.parametrize("algorithm", ["fedpcl"])
def test_predictor_methods_fall_back_to_serial_on_the_vectorized_engine_with_the_same_result(algorithm) -> None:
    assert_vectorized_falls_back_to_serial(tol=1e-6, compare_params=False, algorithm=algorithm, clients=4,
                                           join_ratio=1.0, rounds=2)


@pytest.mark.slow  # spawning workers takes longer than a unit test may
@pytest.mark.parametrize("algorithm", ["fedcross", "pfl-da", "fedgc", "fedmtl", "fedpcl"])
def test_processes_match_serial(algorithm: str) -> None:
    assert_processes_match_serial(compare_params=False, algorithm=algorithm, clients=6, join_ratio=0.7)


BAD = [
    (["--algorithm", "fedcross", "--fedcross.alpha", "0"], "fedcross.alpha must be in (0, 1]"),
    (["--algorithm", "fedcross", "--fedcross.strategy", "random"], "fedcross.strategy must be one of"),
    (["--algorithm", "fedcross", "--fedcross.models", "-1"], "fedcross.models must be >= 0"),
    (["--algorithm", "pfl-da", "--pfl-da.lamda", "-1"], "pfl-da.lamda must be >= 0"),
    (["--algorithm", "fedgc", "--fedgc.server-lr", "-1"], "fedgc.server_lr must be >= 0"),
    (["--algorithm", "fedmtl", "--fedmtl.eps", "0"], "fedmtl.eps must be > 0"),
    (["--algorithm", "fedmtl", "--fedmtl.lambda1", "-1"], "fedmtl.lambda1 must be >= 0"),
    (["--algorithm", "fedpcl", "--fedpcl.tau", "0"], "fedpcl.tau must be > 0"),
    (["--algorithm", "fedpcl", "--fedpcl.pfllib-compat", "2"], "invalid value '2' for fedpcl.pfllib_compat"),
    (["--algorithm", "fedgc", "--fedgc.pfllib-compat", "yes please"], "for fedgc.pfllib_compat: expected bool"),
    (["--algorithm", "fedmtl", "--fedmtl.pfllib-compat", "x"], "invalid value 'x' for fedmtl.pfllib_compat"),
    (["--algorithm", "fedavg", "--pattern", "cycle"], "unknown round pattern 'cycle'"),
]


@pytest.mark.parametrize("args, expected", BAD, ids=ids(BAD))
def test_bad_options_are_one_clear_error_before_training(args: list[str], expected: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert_one_clear_error(args, expected, tmp_path / "run", capsys)


@pytest.mark.parametrize("algorithm", ["fedcross", "pfl-da", "fedgc", "fedmtl", "fedpcl"])
def test_interrupted_run_resumes_to_the_golden_metrics(algorithm: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """Server memory (middleware models, heads, Ω, prototype tables) and client state survive a checkpoint."""
    from fedloom.cli import build_config, make_parser, raw_from_args
    from fedloom.run import run_experiment

    sys.path.insert(0, str(Path(__file__).parent.parent / "golden"))
    from make_golden import SETTING

    run = tmp_path / "run"
    args = make_parser().parse_args(["run", "--algorithm", algorithm, *SETTING, "--checkpoint-every", "1",
                                     "--out", str(run)])

    def stop(round_: int, record: dict) -> None:
        if round_ == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(build_config(raw_from_args(args)), progress=stop)
    assert main(["run", "--resume", str(run), "--quiet"]) == 0, capsys.readouterr().err
    golden = Path(__file__).parent.parent / "golden" / "metrics" / f"{algorithm}-serial.jsonl"
    assert (run / "metrics.jsonl").read_bytes() == golden.read_bytes()
