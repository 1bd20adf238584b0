"""FedLC, FedNTD, FedBN, FedCAC, FedAS, FedPAC: each defining mechanism against a hand computation or its
removal (issue 23, item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.fedlc import FedLC, calibration
from fedloom.algorithms.fedntd import FedNTD, not_true_kl

from bad_input import assert_one_clear_error, ids
from engine_equivalence import assert_processes_match_serial, assert_vectorized_matches_serial
from fedopt_helpers import uploads_of
from helpers import make_experiment
from pfl_helpers import SMALL_MLP, experiment, same, start


def first_update(exp, algorithm, client: int = 0):
    ctx = exp.runtime.client_context(client, 1)
    return ctx, algorithm.client_update(ctx, start(exp).broadcast, None)


def client_missing_a_class(exp) -> int:
    for cid in range(exp.data.num_clients):
        if (exp.runtime.client_context(cid, 1).train_label_counts() == 0).any():
            return cid
    raise AssertionError("every client holds every class: lower alpha")


def test_fedlc_loss_is_cross_entropy_of_the_calibrated_logits_by_hand() -> None:
    exp = experiment("fedlc", tau=0.7)
    ctx = exp.runtime.client_context(0, 1)
    counts = ctx.train_label_counts()
    present = torch.nonzero(counts > 0).flatten()
    x, y = ctx.data(ctx.train_indices[:8])
    params = exp.runtime.init_params
    got = FedLC.calibrated_loss(ctx)(params, x, y, {"calibration": calibration(counts, 0.7)})
    logits = ctx.apply(params, x)
    for i in range(len(y)):  # −log e^{z_y − τ n_y^{−1/4}} / Σ_{c: n_c > 0} e^{z_c − τ n_c^{−1/4}}
        shifted = {int(c): float(logits[i, c]) - 0.7 * float(counts[c]) ** -0.25 for c in present}
        expected = -shifted[int(y[i])] + torch.logsumexp(torch.tensor(list(shifted.values())), 0)
        assert abs(float(got[i]) - float(expected)) < 1e-5


def test_fedlc_never_pushes_down_a_class_the_client_lacks_while_fedavg_does() -> None:
    exp = make_experiment(algorithm="fedlc", alpha=0.1, options=SMALL_MLP)
    cid = client_missing_a_class(exp)
    absent = torch.nonzero(exp.runtime.client_context(cid, 1).train_label_counts() == 0).flatten()
    _, calibrated = first_update(exp, FedLC(), cid)
    _, plain = first_update(exp, FedAvg(), cid)
    assert calibrated.upload["head.bias"][absent].abs().max() == 0  # no softmax mass on it: no gradient
    assert plain.upload["head.bias"][absent].max() < 0  # plain CE lowers every absent class's bias


def test_fedntd_term_is_the_not_true_kl_by_hand_and_ignores_the_true_class() -> None:
    torch.manual_seed(0)
    local, teacher, y, tau = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2]), 2.0
    got = not_true_kl(local, teacher, y, tau)
    for i in range(5):
        keep = [c for c in range(4) if c != int(y[i])]
        p = F.log_softmax(local[i, keep] / tau, 0)
        q = F.softmax(teacher[i, keep] / tau, 0)
        assert abs(float(got[i]) - float((q * (q.log() - p)).sum())) < 1e-6
    bumped_local, bumped_teacher = local.clone(), teacher.clone()
    rows = torch.arange(5)
    bumped_local[rows, y] += 10.0
    bumped_teacher[rows, y] -= 10.0  # the true class's logits do not enter the term at all
    assert torch.allclose(not_true_kl(bumped_local, bumped_teacher, y, tau), got, atol=1e-6)
    logits = local.clone().requires_grad_(True)
    not_true_kl(logits, teacher, y, tau).sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[rows, y] == 0).all()


def test_fedntd_with_beta_zero_is_fedavg_and_beta_pulls_local_training_toward_the_teacher() -> None:
    exp = experiment("fedntd")
    _, fedavg = first_update(exp, FedAvg())
    assert same(first_update(exp, FedNTD(beta=0.0))[1].upload, fedavg.upload, atol=1e-6)
    ctx, distilled = first_update(exp, FedNTD(beta=5.0))
    assert not same(distilled.upload, fedavg.upload, atol=1e-4)
    moved = sum(float(v.pow(2).sum()) for v in distilled.upload.values())
    free = sum(float(v.pow(2).sum()) for v in fedavg.upload.values())
    assert moved < free  # the teacher term holds the model nearer the global one


class ShiftContext:
    """A client whose 'local training' adds its own constant to every parameter (enough to follow where each
    tensor goes through FedBN's halves)."""

    def __init__(self, shift: float, samples: int) -> None:
        self.shift, self.num_train_samples = shift, samples

    def local_sgd(self, params, **hooks):
        return {k: v + self.shift for k, v in params.items()}, {}


def test_fedbn_never_sends_or_averages_batch_norm_parameters() -> None:
    from fedloom.algorithms.base import Federation
    from fedloom.algorithms.fedbn import FedBN
    from fedloom.algorithms.tree import tree_bytes

    init = {"body.conv1.weight": torch.zeros(2), "body.bn1.weight": torch.ones(2), "body.bn1.bias": torch.zeros(2),
            "head.weight": torch.zeros(3)}
    fedbn = FedBN()
    server = fedbn.init_server(init, Federation(2, (10, 30)))
    assert set(server.broadcast.params) == {"body.conv1.weight", "head.weight"}
    states = [fedbn.init_client_state(init, cid) for cid in range(2)]
    results = [fedbn.client_update(ShiftContext(s, n), server.broadcast, st)
               for s, n, st in zip((1.0, 5.0), (10, 30), states)]
    assert all(set(r.upload) == {"body.conv1.weight", "head.weight"} for r in results)
    assert tree_bytes(results[0].upload) == 4 * 5  # 5 float32 numbers: no BN tensor on the wire
    after = fedbn.server_update(server.state, uploads_of([(r.upload, r.weight) for r in results]))
    assert torch.allclose(after.broadcast.params["head.weight"], torch.full((3,), 4.0))  # (10·1 + 30·5) / 40
    for cid, shift in enumerate((1.0, 5.0)):  # each client keeps its own BN, never the mean (4.0)
        scored = fedbn.eval_params(None, after.broadcast, results[cid].state)
        assert torch.equal(scored["body.bn1.weight"], torch.full((2,), 1.0 + shift))
        assert torch.equal(scored["body.bn1.bias"], torch.full((2,), shift))
        assert torch.allclose(scored["body.conv1.weight"], torch.full((2,), 4.0))


def test_cnn_bn_names_its_batch_norm_layers_keeps_no_buffers_and_vmaps() -> None:
    from torch.func import functional_call, stack_module_state, vmap

    from fedloom.models.base import build_model
    from fedloom.models.cnn_bn import is_batch_norm

    model = build_model("cnn-bn", {}, (1, 28, 28), 10, seed=0)
    names = [n for n, _ in model.named_parameters()]
    assert [n for n in names if is_batch_norm(n)] == ["body.bn1.weight", "body.bn1.bias", "body.bn2.weight",
                                                      "body.bn2.bias"]
    assert list(model.buffers()) == []  # no running statistics: nothing outside the parameter dict
    params = {n: p.detach() for n, p in model.named_parameters()}
    x = torch.randn(6, 1, 28, 28)
    out = functional_call(model, params, (x,))
    assert not torch.allclose(functional_call(model, params, (x[:3],)), out[:3])  # batch statistics
    other = {n: p + 0.01 for n, p in params.items()}
    stacked = {n: torch.stack([params[n], other[n]]) for n in params}
    both = vmap(lambda p, xb: functional_call(model, p, (xb,)))(stacked, torch.stack([x, x]))
    assert torch.allclose(both[0], out, atol=1e-5)
    assert torch.allclose(both[1], functional_call(model, other, (x,)), atol=1e-5)


def test_fedcac_critical_masks_and_overlaps_by_hand() -> None:
    from fedloom.algorithms.fedcac import collaborators, critical_mask, overlaps

    assert critical_mask(torch.tensor([0.1, 0.5, 0.3, 0.0]), 0.5).tolist() == [False, True, True, False]
    # the τ-quantile is 0: every nonzero sensitivity at or above the smallest nonzero one is critical
    assert critical_mask(torch.tensor([0.0, 0.0, 1e-15, 0.0]), 0.5).tolist() == [False, False, True, False]
    masks = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]], dtype=torch.bool)
    o = overlaps(masks)  # row i normalised by client i's critical count
    assert torch.allclose(o, torch.tensor([[1, 0.5, 0.75], [0.5, 1, 0.75], [5 / 6, 5 / 6, 1]], dtype=o.dtype))
    early, late = collaborators(o, 1, beta=100), collaborators(o, 99, beta=100)
    # threshold after round t = mean off-diagonal overlap (0.694) + t/β · (max − mean): 0.696 early, 0.832 late
    assert early.tolist() == [[True, False, True], [False, True, True], [True, True, True]]
    assert late.tolist() == [[True, False, False], [False, True, False], [True, True, True]]


def test_fedcac_server_customizes_critical_parameters_among_similar_clients_only() -> None:
    from fedloom.algorithms.base import Federation
    from fedloom.algorithms.fedcac import FedCAC
    from fedloom.algorithms.uploads import UploadAccumulator

    init = {"w": torch.zeros(4)}
    cac = FedCAC(tau=0.5, beta=3)  # after round 1: threshold = mean + 1/3 (max − mean) of the overlaps
    server = cac.init_server(init, Federation(3, (10, 10, 20)))
    masks = [torch.tensor(m, dtype=torch.bool) for m in ([1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0])]
    acc = UploadAccumulator(keep_all=True)
    for cid, (value, n) in enumerate(zip((1.0, 5.0, 3.0), (10, 10, 20))):
        acc.add(cid, {"params": {"w": torch.full((4,), value)}, "critical": {"w": masks[cid]}}, n)
    after = cac.server_update(server.state, acc.finish())
    assert torch.allclose(after.broadcast.params["w"], torch.full((4,), 3.0))  # (10 + 50 + 60) / 40
    custom = {cid: after.broadcast.for_client(cid).personal["customized"]["w"] for cid in range(3)}
    assert torch.allclose(custom[0], torch.full((4,), 2.0)) and torch.allclose(custom[2], torch.full((4,), 2.0))
    assert torch.allclose(custom[1], torch.full((4,), 5.0))  # overlap 0.5 with both: alone, its own model
    start = cac.start_model(after.broadcast.for_client(0), {"critical": {"w": masks[0]}})
    assert start["w"].tolist() == [2.0, 2.0, 3.0, 3.0]  # critical from the customized model, the rest global


def test_fedas_alignment_pulls_the_received_body_to_the_old_prototypes_and_weights_are_fisher_traces() -> None:
    from fedloom.algorithms.fedas import FedAS, class_prototypes, fisher_trace
    from fedloom.algorithms.tree import tree_select
    from fedloom.models.base import is_body

    exp = experiment("fedas")
    ctx = exp.runtime.client_context(0, 1)
    old, _ = ctx.local_sgd(exp.runtime.init_params, epochs=3)  # a local model that differs from the global
    old_body, received = tree_select(old, is_body), tree_select(exp.runtime.init_params, is_body)
    protos = class_prototypes(ctx, old_body)
    x, y = ctx.data(ctx.train_indices)

    def gap(body) -> float:  # Σ_c MSE(φ(x_c), p_c) over the client's classes, by hand
        z = ctx.apply(body, x, part="body").flatten(1)
        return sum(float((z[y == c] - protos[c]).pow(2).mean()) for c in y.unique())

    aligned = FedAS(align_epochs=2).aligned_body(ctx, received, old_body)
    assert gap(aligned) < 0.8 * gap(received)
    assert FedAS(align_epochs=0).aligned_body(ctx, received, old_body) is received
    result = FedAS().client_update(ctx, start(exp).broadcast, {"model": old})
    order = ctx.train_indices[torch.randperm(ctx.num_train_samples, generator=ctx.generator("fedas-fim"))]
    params = {k: v.detach().clone().requires_grad_(True) for k, v in result.state["model"].items()}
    expected = 0.0
    for s in range(0, len(order), ctx.sgd.batch_size):
        xb, yb = ctx.data(order[s:s + ctx.sgd.batch_size])
        loss = F.cross_entropy(ctx.apply(params, xb), yb)
        expected += sum(float(g.pow(2).sum()) for g in torch.autograd.grad(loss, list(params.values())))
    assert abs(result.weight - expected) < 1e-4 * expected
    assert abs(float(fisher_trace(ctx, result.state["model"])) - expected) < 1e-4 * expected


VECTORIZABLE = [("fedlc", {}), ("fedntd", {"fedntd": {"beta": 2.0}}), ("fedbn", {})]


@pytest.mark.parametrize("algorithm, options", VECTORIZABLE, ids=[a for a, _ in VECTORIZABLE])
def test_vectorized_matches_serial_and_really_vectorizes(algorithm: str, options: dict) -> None:
    assert_vectorized_matches_serial(algorithm=algorithm, options=options, clients=6, join_ratio=0.9, rounds=2,
                                     alpha=0.2)


@pytest.mark.slow  # spawning workers takes longer than a unit test may
@pytest.mark.parametrize("algorithm", ["fedlc", "fedntd", "fedbn", "fedcac", "fedas", "fedpac"])
def test_processes_match_serial(algorithm: str) -> None:
    assert_processes_match_serial(algorithm=algorithm, clients=6, join_ratio=0.7)


BAD = [
    (["--algorithm", "fedlc", "--fedlc.tau", "0"], "fedlc.tau must be > 0"),
    (["--algorithm", "fedntd", "--fedntd.beta", "-1"], "fedntd.beta must be >= 0"),
    (["--algorithm", "fedntd", "--fedntd.tau", "0"], "fedntd.tau must be > 0"),
    (["--algorithm", "fedcac", "--fedcac.tau", "1.5"], "fedcac.tau must be in (0, 1], got 1.5"),
    (["--algorithm", "fedcac", "--fedcac.beta", "0"], "fedcac.beta must be >= 1"),
    (["--algorithm", "fedas", "--fedas.align-lr", "0"], "fedas.align_lr must be > 0"),
    (["--algorithm", "fedpac", "--fedpac.lamda", "-1"], "fedpac.lamda must be >= 0"),
    (["--algorithm", "fedpac", "--fedpac.pfllib-compat", "maybe"], "invalid value 'maybe' for fedpac.pfllib_compat"),
    (["--algorithm", "fedbn", "--model", "cnn-bn"], "model 'cnn-bn' needs images of at least 16x16"),
]


@pytest.mark.parametrize("args, expected", BAD, ids=ids(BAD))
def test_bad_options_are_one_clear_error_before_training(args: list[str], expected: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert_one_clear_error(args, expected, tmp_path / "run", capsys)


def test_fedpac_statistics_and_collaboration_weights_by_hand() -> None:
    from fedloom.algorithms.fedpac import collaboration_weights, solve_simplex_qp, statistics

    z = {0: torch.tensor([[1.0, 0.0], [3.0, 2.0]]), 2: torch.tensor([[0.0, 4.0]])}  # class -> features; class 1 absent
    counts = torch.tensor([2.0, 0.0, 1.0])
    sums = torch.stack([z[0].sum(0), torch.zeros(2), z[2].sum(0)])
    squares = torch.tensor([float(z[0].pow(2).sum()), 0.0, float(z[2].pow(2).sum())])
    v, h = statistics(counts, sums, squares)
    p = {0: 2 / 3, 2: 1 / 3}
    expected_v = sum(p[k] * float(z[k].pow(2).sum()) / len(z[k]) - p[k] ** 2 * float(z[k].mean(0).pow(2).sum())
                     for k in z) / 3
    assert abs(float(v) - expected_v) < 1e-6
    assert torch.allclose(h, torch.tensor([[4 / 3, 2 / 3], [0.0, 0.0], [0.0, 4 / 3]]))
    alpha = solve_simplex_qp(torch.diag(torch.tensor([1.0, 4.0])))
    assert torch.allclose(alpha, torch.tensor([0.8, 0.2], dtype=alpha.dtype), atol=1e-6)  # α_j ∝ 1/V_j
    # M = diag(1, 1, 1 + 6·51²): α ∝ 1/M_jj, client 2's weight (6e-5) falls under 1e-3 and is zeroed
    hs = torch.stack([torch.ones(3, 2), torch.ones(3, 2), -50 * torch.ones(3, 2)])
    weights = collaboration_weights(torch.tensor([1.0, 1.0, 1.0]), hs, 0)
    assert weights[2] == 0 and torch.allclose(weights[:2], torch.full((2,), 0.5, dtype=weights.dtype), atol=1e-4)


def test_fedpac_alignment_term_and_global_prototypes() -> None:
    from fedloom.algorithms.base import Federation
    from fedloom.algorithms.fedpac import FedPAC
    from fedloom.algorithms.uploads import UploadAccumulator

    exp = experiment("fedpac")
    ctx = exp.runtime.client_context(0, 1)
    params = exp.runtime.init_params
    x, y = ctx.data(ctx.train_indices[:6])
    z = ctx.apply(params, x, part="body").flatten(1)
    protos, absent = torch.randn(10, z.shape[1]), torch.zeros(10)
    plain = FedPAC(lamda=2.0).aligned_loss(ctx)(params, x, y, {"protos": protos, "present": absent})
    assert torch.allclose(plain, ctx.task_loss(ctx.apply(params, x), y))
    pulled = FedPAC(lamda=2.0).aligned_loss(ctx)(params, x, y, {"protos": protos, "present": torch.ones(10)})
    assert torch.allclose(pulled - plain, 2.0 * (z - protos[y]).pow(2).mean(1), atol=1e-5)
    pac = FedPAC()
    server = pac.init_server({"body.w": torch.zeros(1), "head.w": torch.zeros(1)}, Federation(2, (1, 1)))
    acc = UploadAccumulator(keep_all=True)
    for cid, (proto, present) in enumerate([([1.0, 5.0], [1.0, 0.0]), ([3.0, 7.0], [1.0, 1.0])]):
        acc.add(cid, {"body": {"body.w": torch.ones(1)}, "head": {"head.w": torch.full((1,), float(cid))},
                      "protos": torch.tensor(proto).unsqueeze(1), "present": torch.tensor(present),
                      "V": torch.tensor(1.0), "H": torch.zeros(2, 1)}, 1)
    after = pac.server_update(server.state, acc.finish())
    assert after.broadcast.extra["protos"].flatten().tolist() == [2.0, 7.0]  # class 1: client 1's only
    assert torch.allclose(after.broadcast.for_client(0).personal["head"]["head.w"], torch.tensor([0.5]), atol=1e-4)


def test_fedpac_pfllib_compat_hands_out_permuted_alphas_in_a_sweep() -> None:
    """PFLlib's serverpac: position q of the drawn order gets the α's solved for position q of the selection
    order, over the heads in the drawn order, each new head replacing its old one before the next is mixed."""
    from fedloom.algorithms.fedpac import pfllib_heads

    heads = [{"w": torch.tensor([v])} for v in (1.0, 10.0, 100.0)]  # clients 7, 8, 9 in selection order
    alphas = [torch.tensor(a) for a in ([1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5])]
    out = pfllib_heads(alphas, heads, ids=[7, 8, 9], order=[2, 0, 1])  # drawn order: clients 9, 7, 8
    # q=0, client 9: α0 over (100, 1, 10) -> 100; q=1, client 7: α1 over (100, 1, 10) -> 50.5;
    # q=2, client 8: α2 over (100, 50.5, 10) -> 30.25 (client 7's new head already in place)
    assert {cid: float(h["head"]["w"]) for cid, h in out.items()} == {9: 100.0, 7: 50.5, 8: 30.25}


def test_fedpac_pfllib_compat_changes_the_heads_the_default_hands_out() -> None:
    from fedloom.algorithms.base import Federation
    from fedloom.algorithms.fedpac import FedPAC
    from fedloom.algorithms.uploads import UploadAccumulator

    acc = UploadAccumulator(keep_all=True)
    for cid in range(4):
        acc.add(cid, {"body": {"body.w": torch.ones(1)}, "head": {"head.w": torch.full((1,), 10.0 ** cid)},
                      "protos": torch.zeros(2, 1), "present": torch.ones(2), "V": torch.tensor(1.0),
                      "H": torch.full((2, 1), float(cid))}, 1)
    uploads = acc.finish()
    heads = {}
    for compat in (False, True):
        pac = FedPAC(pfllib_compat=compat)
        server = pac.init_server({"body.w": torch.zeros(1), "head.w": torch.zeros(1)}, Federation(4, (1,) * 4))
        result = pac.server_update(server.state, uploads)
        heads[compat] = [float(result.broadcast.for_client(c).personal["head"]["head.w"]) for c in range(4)]
    assert heads[True] != pytest.approx(heads[False], rel=1e-3)


def test_fedlc_pfllib_compat_calibrates_every_client_with_the_federations_counts() -> None:
    """PFLlib's serverlc sums every client's label counts into one calibration vector; the default uses the
    client's own counts (the paper)."""
    exp = make_experiment(algorithm="fedlc", alpha=0.1, options=SMALL_MLP)
    server = start(exp)
    compat = FedLC(pfllib_compat=True)
    from fedloom.rounds import federation_of
    result = compat.init_server(exp.runtime.init_params, federation_of(exp.data))
    counts = torch.zeros(exp.data.num_classes)
    for cid in range(exp.data.num_clients):
        counts += exp.runtime.client_context(cid, 1).train_label_counts()
    assert torch.allclose(result.broadcast.extra["calibration"], calibration(counts, 1.0))
    cid = client_missing_a_class(exp)
    ctx = exp.runtime.client_context(cid, 1)
    with_all = compat.client_update(ctx, result.broadcast, None)
    own = FedLC().client_update(ctx, server.broadcast, None)
    absent = torch.nonzero(ctx.train_label_counts() == 0).flatten()
    assert own.upload["head.bias"][absent].abs().max() == 0  # own counts: absent classes leave the softmax
    assert with_all.upload["head.bias"][absent].max() < 0  # federation counts: they are pushed down
    kept = compat.server_update(result.state, uploads_of([(with_all.upload, 1.0)]))
    assert torch.equal(kept.broadcast.extra["calibration"], result.broadcast.extra["calibration"])
    assert_vectorized_matches_serial(algorithm="fedlc", options={**SMALL_MLP, "fedlc": {"pfllib_compat": True}},
                                     clients=6, rounds=2)


def test_fedntd_pfllib_compat_averages_the_uploads_unweighted() -> None:
    exp = experiment("fedntd")
    ctx = exp.runtime.client_context(0, 1)
    broadcast = start(exp).broadcast
    assert FedNTD(pfllib_compat=True).client_update(ctx, broadcast, None).weight == 1.0
    assert FedNTD().client_update(ctx, broadcast, None).weight == ctx.num_train_samples
