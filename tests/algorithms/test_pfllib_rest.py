"""FedLC, FedNTD, FedBN, FedCAC, FedAS, FedPAC: each defining mechanism against a hand computation or its
removal (issue 23, item 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.fedlc import FedLC, calibration
from fedloom.algorithms.fedntd import FedNTD, not_true_kl

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
