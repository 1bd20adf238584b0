"""SCAFFOLD, FedNova, FedDyn, MOON: each mechanism against a hand computation (a quadratic client running the
real local-SGD loop) or a property that vanishes without it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedloom.algorithms.base import Broadcast, Federation
from fedloom.algorithms.feddyn import FedDyn
from fedloom.algorithms.fednova import FedNova, momentum_norm
from fedloom.algorithms.moon import Moon, contrastive_loss
from fedloom.algorithms.scaffold import Scaffold
from fedloom.algorithms.tree import tree_add, tree_select
from fedloom.models.base import is_body

from fedopt_helpers import QuadraticContext, scalar, uploads_of, value
from pfl_helpers import experiment, start

FOUR = Federation(num_clients=4, train_sizes=(10, 10, 10, 10))


# ---------------------------------------------------------------------------------------------- SCAFFOLD
def test_scaffold_corrected_steps_and_option_two_control_by_hand() -> None:
    # f(w) = ½(w − 3)², θ = 1, η = 0.1, K = 2, c = 0.5, c_i = 0.2: each step adds c − c_i = 0.3 to the gradient
    #   w1 = 1 − 0.1(1 − 3 + 0.3) = 1.17,   w2 = 1.17 − 0.1(1.17 − 3 + 0.3) = 1.323
    #   c_i⁺ = c_i − c + (θ − w2)/(Kη) = 0.2 − 0.5 − 0.323/0.2 = −1.915 (the mean raw gradient (−2 − 1.83)/2)
    ctx = QuadraticContext(target=3.0)
    result = Scaffold().client_update(ctx, Broadcast(scalar(1.0), {"control": scalar(0.5)}),
                                      {"control": scalar(0.2)})
    assert value(result.upload["delta"]) == pytest.approx(0.323, abs=1e-6)
    assert value(result.state["control"]) == pytest.approx(-1.915, abs=1e-5)
    assert value(result.upload["control"]) == pytest.approx(-1.915 - 0.2, abs=1e-5)
    assert result.weight == 1.0  # clients count equally, as in the paper


def test_scaffold_server_steps_model_by_global_lr_and_control_by_the_sampled_share() -> None:
    algorithm = Scaffold(global_lr=0.5)
    server = algorithm.init_server(scalar(1.0), FOUR)
    assert value(server.broadcast.extra["control"]) == 0.0 and "clients" not in server.broadcast.extra
    uploads = uploads_of([({"delta": scalar(0.4), "control": scalar(-2.0)}, 1.0),
                          ({"delta": scalar(0.2), "control": scalar(1.0)}, 1.0)])
    after = algorithm.server_update(server.state, uploads)
    assert value(after.state.params) == pytest.approx(1.0 + 0.5 * 0.3)  # θ + η_g · mean Δy
    assert value(after.broadcast.extra["control"]) == pytest.approx(0.0 + (2 / 4) * (-0.5))  # c + |S|/N · mean Δc
    # the control is downloaded with the model: it counts in the bytes
    assert after.broadcast.nbytes(0) == 2 * 4


def test_scaffold_real_clients_carry_their_control_across_rounds() -> None:
    exp = experiment("scaffold")
    server = start(exp)
    result = exp.engine.train_cohort(exp.algorithm, server.broadcast, [0, 1], 1)
    after = exp.algorithm.server_update(server.state, result.uploads)
    own = exp.runtime.store.load(0)["control"]
    assert float(sum(t.abs().sum() for t in own.values())) > 0
    assert float(sum(t.abs().sum() for t in after.broadcast.extra["control"].values())) > 0


# ---------------------------------------------------------------------------------------------- FedNova
def test_fednova_normalizes_by_local_steps_and_rescales_by_tau_eff() -> None:
    algorithm = FedNova()
    short = algorithm.client_update(QuadraticContext(target=3.0, epochs=1), Broadcast(scalar(1.0)), None)
    long = algorithm.client_update(QuadraticContext(target=3.0, epochs=4), Broadcast(scalar(1.0)), None)
    assert float(short.upload["a"]) == 1.0 and float(long.upload["a"]) == 4.0  # ‖a_i‖₁ = τ_i for plain SGD
    # w after τ GD steps on ½(w − 3)² from 1: 3 − 2·0.9^τ, so Δ_1 = 0.2 and Δ_4 = 2 − 2·0.9⁴ = 0.6878
    assert value(short.upload["d"]) == pytest.approx(0.2, abs=1e-6)
    assert value(long.upload["d"]) == pytest.approx((2 - 2 * 0.9 ** 4) / 4, abs=1e-6)
    uploads = uploads_of([(short.upload, 10.0), (long.upload, 30.0)])
    after = algorithm.server_update(algorithm.init_server(scalar(1.0), FOUR).state, uploads)
    tau_eff = 0.25 * 1 + 0.75 * 4
    expected = 1.0 + tau_eff * (0.25 * 0.2 + 0.75 * 0.6878 / 4)
    assert value(after.state.params) == pytest.approx(expected, abs=1e-4)
    assert after.metrics["tau_eff"] == pytest.approx(tau_eff)
    fedavg = FedNova(normalize=False).server_update(algorithm.init_server(scalar(1.0), FOUR).state, uploads_of(
        [({"d": scalar(0.2), "a": torch.tensor(1.0)}, 10.0), ({"d": scalar(0.6878), "a": torch.tensor(4.0)}, 30.0)]))
    assert value(fedavg.state.params) == pytest.approx(1.0 + 0.25 * 0.2 + 0.75 * 0.6878, abs=1e-5)


def test_fednova_removes_the_objective_inconsistency_of_unequal_local_work() -> None:
    # two equally weighted clients, f_i = ½(w − b_i)², b = (0, 10), τ = (1, 10) GD steps of η = 0.05, so client i
    # moves c_i = 1 − 0.95^τ_i of the way to b_i. FedAvg's fixed point weights b_i by c_i (8.89, far from the
    # optimum 5); FedNova's by c_i/τ_i (4.45)
    c = (0.05, 1 - 0.95 ** 10)

    def fixed_point(algorithm: FedNova) -> float:
        server = algorithm.init_server(scalar(0.0), FOUR)
        for _ in range(50):
            results = [algorithm.client_update(QuadraticContext(target=b, epochs=tau, lr=0.05), server.broadcast,
                                               None) for b, tau in ((0.0, 1), (10.0, 10))]
            server = algorithm.server_update(server.state, uploads_of([(r.upload, 10.0) for r in results]))
        return value(server.state.params)

    assert fixed_point(FedNova()) == pytest.approx(10 * (c[1] / 10) / (c[0] + c[1] / 10), abs=0.01)
    assert fixed_point(FedNova(normalize=False)) == pytest.approx(10 * c[1] / (c[0] + c[1]), abs=0.01)


def test_fednova_momentum_norm_is_the_sum_of_the_heavy_ball_coefficients() -> None:
    # ρ = 0.5, τ = 3: the first gradient is applied 1 + ρ + ρ², the second 1 + ρ, the last 1: 1.75 + 1.5 + 1
    assert float(momentum_norm(torch.tensor(3.0), 0.5)) == pytest.approx(4.25)
    assert float(momentum_norm(torch.tensor(3.0), 0.0)) == 3.0
    ctx = QuadraticContext(target=3.0, epochs=3, momentum=0.5)
    assert float(FedNova().client_update(ctx, Broadcast(scalar(1.0)), None).upload["a"]) == pytest.approx(4.25)


def test_fednova_heterogeneous_epochs_are_seeded_per_client_and_round() -> None:
    exp = experiment("fednova", min_epochs=1, max_epochs=4)
    algorithm = exp.algorithm
    draws = {(c, r): algorithm.local_epochs(exp.runtime.client_context(c, r)) for c in range(4) for r in (1, 2, 3)}
    assert set(draws.values()) <= {1, 2, 3, 4} and len(set(draws.values())) > 1
    assert draws == {(c, r): algorithm.local_epochs(exp.runtime.client_context(c, r)) for c, r in draws}
    server = start(exp)
    result = exp.engine.train_cohort(algorithm, server.broadcast, [0, 1, 2, 3], 1)
    batches = {c: -(-exp.runtime.client_context(c, 1).num_train_samples // exp.runtime.sgd.batch_size)
               for c in range(4)}
    for c in range(4):  # τ_i = (drawn epochs) × (batches per epoch)
        assert result.client_metrics[c]["steps"] == draws[(c, 1)] * batches[c]


# ---------------------------------------------------------------------------------------------- FedDyn
def test_feddyn_linear_term_and_client_state_by_hand() -> None:
    # f(w) = ½(w − 3)² − g w + (α/2)(w − θ)², θ = 1, g = 0.5, α = 0.1, η = 0.1, two steps:
    #   ∇ at 1 = (1 − 3) − 0.5 + 0 = −2.5 → w1 = 1.25;  ∇ at 1.25 = −1.75 − 0.5 + 0.025 = −2.225 → w2 = 1.4725
    #   g⁺ = g − α(w2 − θ) = 0.5 − 0.04725
    result = FedDyn(alpha=0.1).client_update(QuadraticContext(target=3.0), Broadcast(scalar(1.0)),
                                             {"grad": scalar(0.5)})
    assert value(result.upload) == pytest.approx(0.4725, abs=1e-6)
    assert value(result.state["grad"]) == pytest.approx(0.45275, abs=1e-6)


def test_feddyn_server_h_and_model_by_hand() -> None:
    algorithm = FedDyn(alpha=0.1)
    server = algorithm.init_server(scalar(1.0), FOUR)
    uploads = uploads_of([(scalar(0.4), 1.0), (scalar(0.2), 1.0)])
    after = algorithm.server_update(server.state, uploads)
    h = 0.0 - 0.1 * (0.4 + 0.2) / 4  # h − α (1/N) Σ_S Δ_i
    assert value(after.state.extra["h"]) == pytest.approx(h)
    assert value(after.state.params) == pytest.approx(1.0 + 0.3 - h / 0.1)  # mean client model − h/α
    again = algorithm.server_update(after.state, uploads)  # h keeps accumulating
    assert value(again.state.extra["h"]) == pytest.approx(2 * h)


# ---------------------------------------------------------------------------------------------- MOON
def test_moon_contrastive_loss_by_hand_and_its_gradient_pulls_toward_the_global_representation() -> None:
    z, z_glob, z_prev = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # cosines 1 and 0 at τ = 0.5: −log(e² / (e² + e⁰))
    assert float(contrastive_loss(z, z_glob, z_prev, 0.5)) == pytest.approx(float(torch.log1p(torch.exp(
        torch.tensor(-2.0)))))
    z = torch.tensor([[0.6, 0.8]], requires_grad=True)
    contrastive_loss(z, z_glob, z_prev, 0.5).sum().backward()
    moved = (z - 0.1 * z.grad).detach()
    assert F.cosine_similarity(moved, z_glob) > F.cosine_similarity(z.detach(), z_glob)
    assert F.cosine_similarity(moved, z_prev) < F.cosine_similarity(z.detach(), z_prev)


def _body_similarity(exp, params, reference) -> float:
    ctx = exp.runtime.client_context(0, 2)
    x, _ = ctx.data(ctx.train_indices)
    z = ctx.apply(tree_select(params, is_body), x, part="body").flatten(1)
    return float(F.cosine_similarity(z, ctx.apply(tree_select(reference, is_body), x, part="body").flatten(1)).mean())


def test_moon_training_moves_representations_toward_the_global_model() -> None:
    exp = experiment("moon")
    theta = exp.runtime.init_params
    g = torch.Generator().manual_seed(1)
    previous = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in tree_select(theta, is_body).items()}
    ctx = exp.runtime.client_context(0, 2)
    similarity = {}
    for mu in (0.0, 5.0):
        trained = tree_add(theta, Moon(mu=mu).client_update(ctx, Broadcast(theta), {"previous": previous}).upload)
        similarity[mu] = _body_similarity(exp, trained, theta)
    assert similarity[5.0] > similarity[0.0]


def test_moon_keeps_the_trained_body_as_the_next_previous_model() -> None:
    exp = experiment("moon")
    theta = exp.runtime.init_params
    ctx = exp.runtime.client_context(0, 1)
    state = exp.algorithm.init_client_state(theta, 0)
    result = exp.algorithm.client_update(ctx, Broadcast(theta), state)
    trained = tree_add(theta, result.upload)
    assert set(result.state["previous"]) == {k for k in theta if is_body(k)}
    assert all(torch.allclose(result.state["previous"][k], trained[k], atol=1e-6) for k in result.state["previous"])
