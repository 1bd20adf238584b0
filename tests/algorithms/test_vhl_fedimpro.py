"""VHL (Tang et al., ICML 2022) and FedImpro (Tang et al., ICLR 2024): each mechanism against a hand computation or
a run that fails without it; the one-time download of VHL's virtual data; VHL on its base optimisers; bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fedloom.algorithms import ALGORITHMS
from fedloom.algorithms._virtual_data import virtual_dataset
from fedloom.algorithms.base import Federation, ServerState
from fedloom.algorithms.fedimpro import (FedImpro, pooled_statistics, sample_features, synthetic_noise,
                                         update_estimate)
from fedloom.algorithms.tree import tree_bytes
from fedloom.algorithms.uploads import UploadAccumulator
from fedloom.algorithms.vhl import HEAD_B, HEAD_W, VHL, extended_logits, supcon_loss, virtual_targets
from fedloom.engines.context import ClientContext
from fedloom.rounds import sample_cohort

from bad_input import assert_one_clear_error, ids
from engine_equivalence import (assert_processes_match_serial, assert_vectorized_falls_back_to_serial,
                                assert_vectorized_matches_serial, on_engine, run_records)
from helpers import make_experiment


# ---------------------------------------------------------------------------------------------------------- VHL
def test_virtual_labels_are_shifted_by_the_number_of_real_classes() -> None:
    assert virtual_targets(torch.tensor([0, 3, 9]), 10).tolist() == [10, 13, 19]


def test_trained_vhl_predicts_virtual_data_in_the_extended_label_space() -> None:
    exp = on_engine("serial", algorithm="vhl", clients=4, options={"vhl": {"per_class": 20, "noise_weight": 0.0}})
    _, params = run_records(exp, 2)
    x, y = virtual_dataset(exp.config.seed, tuple(exp.data.input_shape), 10, 20)
    ctx = ClientContext(exp.runtime, 0, 2)
    with torch.no_grad():
        predicted = extended_logits(ctx, params, ctx.apply(params, x, part="body")).argmax(1)
    classes = exp.data.num_classes
    assert (predicted >= classes).float().mean() > 0.9  # virtual samples land on the C_v extra outputs...
    assert (predicted == y + classes).float().mean() > 0.5  # ...on their own class C + c
    assert params[HEAD_W].shape == (10, exp.runtime.model.feature_dim) and params[HEAD_B].shape == (10,)


def test_supcon_matches_a_hand_computation() -> None:
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    tau = 0.5
    z = feats / feats.norm(dim=1, keepdim=True)
    sim = z @ z.T / tau
    # anchors 0 and 1 have one positive each (each other); anchor 2 has none and is left out
    terms = [sim[0, 1] - torch.logsumexp(sim[0, [1, 2]], 0), sim[1, 0] - torch.logsumexp(sim[1, [0, 2]], 0)]
    expected = -(tau / 0.07) * torch.stack(terms).mean()
    assert torch.allclose(supcon_loss(feats, labels, tau), expected, atol=1e-6)


def test_supcon_is_lower_when_same_class_features_align() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    aligned = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    assert supcon_loss(aligned, labels, 0.07) < supcon_loss(mixed, labels, 0.07)


def test_the_virtual_dataset_is_downloaded_once_per_client() -> None:
    exp = on_engine("serial", algorithm="vhl", clients=6, join_ratio=0.5, options={"vhl": {"per_class": 5}})
    first = exp.algorithm.init_server(exp.runtime.init_params, _federation(exp)).broadcast
    model_bytes = tree_bytes(first.params) + tree_bytes(first.extra)  # the model, VHL's head, the data set's id
    records, _ = run_records(exp, 3)
    x, y = virtual_dataset(exp.config.seed, tuple(exp.data.input_shape), 10, 5)
    data_bytes = tree_bytes({"x": x, "y": y})
    seen: set[int] = set()
    for r in (1, 2, 3):
        cohort = sample_cohort(6, 0.5, exp.config.seed, r)
        first_timers = len(set(cohort) - seen)
        seen |= set(cohort)
        assert records[r]["bytes_down"] == len(cohort) * model_bytes + first_timers * data_bytes, r
    assert len(seen) < 6 * 3  # some clients came back and downloaded the model only


def test_the_virtual_dataset_is_seeded_and_its_classes_differ() -> None:
    x1, y1 = virtual_dataset(5, (1, 8, 8), 4, 30)
    x2, _ = virtual_dataset(5, (1, 8, 8), 4, 30)
    x3, _ = virtual_dataset(6, (1, 8, 8), 4, 30)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3) and x1.shape == (120, 1, 8, 8)
    means = torch.stack([x1[y1 == c].flatten(1).mean(0) for c in range(4)])
    nearest = torch.cdist(x1.flatten(1), means).argmin(1)
    assert (nearest == y1).float().mean() > 0.9


def test_vhl_composes_with_its_base_optimisers() -> None:
    assert VHL(base="fedprox", mu=0.3).base_algorithm() == ALGORITHMS.get("fedprox")(mu=0.3)
    assert VHL(base="scaffold", global_lr=0.5).base_algorithm() == ALGORITHMS.get("scaffold")(global_lr=0.5)
    exp = on_engine("serial", algorithm="vhl", clients=4, options={"vhl": {"base": "scaffold", "per_class": 5}})
    server = exp.algorithm.init_server(exp.runtime.init_params, _federation(exp))
    assert set(server.broadcast.extra["control"]) == set(server.broadcast.params) >= {HEAD_W, HEAD_B}
    records, _ = run_records(exp, 2)
    assert records[-1]["accuracy"] > 0


# batch 7 leaves every client a partial last batch (a pack steps it without padding); join 0.5 mixes clients that
# already hold VHL's data with clients that download it; fedimpro's default schedule gives its loss weight 1
ENGINE_CASES = [("vhl", {"vhl": {"per_class": 5}}, 1.0), ("fedimpro", {"fedimpro": {"schedule": "default"}}, 1.0),
                ("vhl", {"vhl": {"per_class": 5, "base": "scaffold"}}, 1.0),
                ("vhl", {"vhl": {"per_class": 5, "base": "fedprox", "mu": 0.5}}, 1.0),
                ("vhl", {"vhl": {"per_class": 5}}, 0.5),
                ("fedimpro", {"fedimpro": {"schedule": "default"}, "infobatch": {"prune_ratio": 0.5}}, 1.0)]


@pytest.mark.parametrize("algorithm, options, join", ENGINE_CASES,
                         ids=["vhl", "fedimpro", "vhl-scaffold", "vhl-fedprox", "vhl-join", "fedimpro-infobatch"])
def test_packs_train_as_the_serial_loop(algorithm: str, options: dict, join: float) -> None:
    assert_vectorized_matches_serial(slots=3, steps=2, tol=2e-5, algorithm=algorithm, clients=8, join_ratio=join,
                                     batch_size=7, options=options)


@pytest.mark.parametrize("algorithm, options, join", ENGINE_CASES[:2], ids=["vhl", "fedimpro"])
def test_worker_processes_train_as_the_serial_loop(algorithm: str, options: dict, join: float) -> None:
    assert_processes_match_serial(steps=1, tol=2e-5, algorithm=algorithm, clients=4, batch_size=7, options=options)


def test_fedimpro_with_noisy_statistics_runs_serially_on_the_vectorized_engine() -> None:
    assert_vectorized_falls_back_to_serial("ctx.generator('fedimpro-stat-noise')", slots=2, steps=1,
                                           algorithm="fedimpro", clients=4, options={"fedimpro": {"stat_noise": 0.1}})


def _federation(exp) -> Federation:
    return Federation(exp.data.num_clients, tuple(int(i.numel()) for i in exp.data.train_idx),
                      tuple(exp.data.input_shape), exp.data.num_classes)


# ----------------------------------------------------------------------------------------------------- FedImpro
def test_aggregated_variance_equals_the_pooled_variance() -> None:
    generator = torch.Generator().manual_seed(0)
    classes, width = 3, 4
    clients = []  # (features, labels) of three clients with different class mixes and feature shifts
    for k, sizes in enumerate([(5, 0, 7), (3, 9, 2), (0, 4, 6)]):
        labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
        clients.append((torch.randn(labels.shape[0], width, generator=generator) * (k + 1) + k, labels))
    acc, shares, sds = UploadAccumulator(), [], []
    for k, (feats, labels) in enumerate(clients):
        n_k = labels.shape[0]
        counts = torch.bincount(labels, minlength=classes).float()
        mu = torch.stack([feats[labels == c].mean(0) if counts[c] else torch.zeros(width) for c in range(classes)])
        sd = torch.stack([feats[labels == c].std(0, unbiased=False) if counts[c] else torch.zeros(width)
                          for c in range(classes)])
        share = counts / n_k
        shares.append(counts)
        sds.append(sd)
        acc.add(k, {"share": share, "m": share[:, None] * mu, "s": share[:, None] * (sd ** 2 + mu ** 2)}, n_k)
    mean = acc.finish().weighted_mean()
    mu, sigma = pooled_statistics(mean["share"], mean["m"], mean["s"], torch.zeros(classes, width),
                                  torch.zeros(classes, width))
    pooled_x = torch.cat([f for f, _ in clients])
    pooled_y = torch.cat([y for _, y in clients])
    for c in range(classes):
        assert torch.allclose(mu[c], pooled_x[pooled_y == c].mean(0), atol=1e-5)
        assert torch.allclose(sigma[c], pooled_x[pooled_y == c].std(0, unbiased=False), atol=1e-4)
    # the within-client variances alone (without Σ_k π_kc (μ_kc − μ_c)²) fall short of it: the clients' means differ
    within = sum(share_k[:, None] * sd_k ** 2 for share_k, sd_k in zip(shares, sds)) / sum(shares)[:, None]
    assert torch.all(within.sqrt() < sigma) and (sigma - within.sqrt()).mean() > 0.2


def test_the_server_pools_client_statistics_and_keeps_classes_nobody_holds() -> None:
    algo = FedImpro()
    state = ServerState(params={"w": torch.zeros(2)}, extra={"mu": torch.full((2, 1), 7.0),
                                                             "sigma": torch.full((2, 1), 0.1)})
    acc = UploadAccumulator()
    # two clients of class 0 only: (n=1, μ=0, σ=1) and (n=3, μ=4, σ=0) → μ = 3, σ² = (1·1 + 3·0)/4 + (1·9 + 3·1)/4
    for k, (n, m, s) in enumerate([(1.0, 0.0, 1.0), (3.0, 4.0, 0.0)]):
        share = torch.tensor([1.0, 0.0])
        acc.add(k, {"delta": {"w": torch.ones(2)}, "share": share, "m": share[:, None] * m,
                    "s": share[:, None] * (s ** 2 + m ** 2)}, n)
    result = algo.server_update(state, acc.finish())
    assert torch.allclose(result.state.extra["mu"], torch.tensor([[3.0], [7.0]]))
    assert torch.allclose(result.state.extra["sigma"], torch.tensor([[math.sqrt(0.25 + 3.0)], [0.1]]))
    assert torch.equal(result.state.params["w"], torch.ones(2))  # the model: plain FedAvg


def test_the_estimator_follows_the_batch_with_the_official_weight_and_caps_sigma() -> None:
    carry = {"mu": torch.zeros(3, 2), "sigma": torch.full((3, 2), 0.05)}
    feats = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 5.0]])
    new = update_estimate(carry, feats, torch.tensor([0, 0, 2]), cap=0.1)
    w = 2 / 5000  # min(1, feature width / 5000), as the official code computes it
    assert torch.allclose(new["mu"][0], w * torch.tensor([2.0, 4.0]))
    assert torch.allclose(new["mu"][2], w * torch.tensor([5.0, 5.0])) and torch.equal(new["mu"][1], torch.zeros(2))
    assert torch.all(new["sigma"][0] <= 0.1) and torch.equal(new["sigma"][2], torch.full((2,), 0.05))  # 1 sample


def _estimate_by_class(carry: dict, feats: torch.Tensor, labels: torch.Tensor, cap: float) -> dict:
    """The official update class by class (a loop over the classes present, boolean selection, torch.std)."""
    mu, sigma = carry["mu"].clone(), carry["sigma"].clone()
    weight = min(1.0, feats.shape[1] / 5000)
    for c in torch.unique(labels).tolist():
        members = feats[labels == c]
        mu[c] = (1 - weight) * mu[c] + weight * members.mean(0)
        if members.shape[0] > 1:
            sigma[c] = (1 - weight) * sigma[c] + weight * members.std(0)
    return {"mu": mu, "sigma": sigma.clamp_max(cap)}


def test_the_one_hot_estimator_equals_the_class_by_class_update() -> None:
    g = torch.Generator().manual_seed(3)
    carry = {"mu": torch.randn(5, 6000, generator=g), "sigma": torch.rand(5, 6000, generator=g)}
    feats = torch.randn(9, 6000, generator=g) * 3
    labels = torch.tensor([0, 0, 0, 1, 3, 3, 0, 1, 1])  # classes 2 and 4 absent, none with one sample
    for batch in (labels, torch.tensor([4, 0, 0, 1, 3, 3, 0, 1, 1])):  # class 4 with a single sample
        new, ref = update_estimate(carry, feats, batch, cap=0.9), _estimate_by_class(carry, feats, batch, cap=0.9)
        torch.testing.assert_close(new["mu"], ref["mu"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(new["sigma"], ref["sigma"], rtol=1e-5, atol=1e-6)


def test_synthetic_features_cycle_every_class_around_the_estimate() -> None:
    carry = {"mu": torch.tensor([[0.0], [10.0], [20.0]]), "sigma": torch.full((3, 1), 0.01)}
    feats, labels = sample_features(carry, synthetic_noise(torch.Generator().manual_seed(0), 7, 3, 1))
    assert labels.tolist() == [0, 1, 2] * 3
    assert torch.allclose(feats[:, 0], labels.float() * 10, atol=0.1)


def test_synthetic_features_train_only_the_high_level_part() -> None:
    exp = make_experiment(algorithm="fedimpro", clients=4)
    ctx = ClientContext(exp.runtime, 0, 1)
    params = {k: v.clone().requires_grad_(True) for k, v in exp.runtime.init_params.items()}
    width = exp.runtime.model.feature_dim
    carry = {"mu": torch.rand(10, width), "sigma": torch.full((10, width), 0.1)}
    loss, draws = FedImpro().batch_loss(ctx, 10, width, real_weight=0.0, fake_weight=1.0)
    x, y = ctx.data(ctx.train_indices[:8])
    value, _ = loss(params, x, y, None, carry, draws.draw(torch.Generator().manual_seed(0), 8))
    grads = torch.autograd.grad(value.mean(), list(params.values()), allow_unused=True)
    for name, g in zip(params, grads):
        assert (g is not None and g.abs().sum() > 0) == name.startswith("head."), name


def test_the_weight_schedules() -> None:
    assert FedImpro(weight_max_rounds=4).synthetic_weight(1) == (1.0, 0.25)
    assert FedImpro(weight_max_rounds=4).synthetic_weight(9) == (1.0, 1.0)
    assert FedImpro(schedule="gradual", weight_max_rounds=4).synthetic_weight(1) == (0.75, 0.25)
    assert FedImpro(schedule="default", loss_weight=0.5).synthetic_weight(1) == (1.0, 0.5)


def test_noise_on_the_uploaded_statistics() -> None:
    exp = make_experiment(algorithm="fedimpro", clients=4)
    broadcast = exp.algorithm.init_server(exp.runtime.init_params, _federation(exp)).broadcast
    plain = FedImpro().client_update(ClientContext(exp.runtime, 0, 1), broadcast, None).upload
    noisy = FedImpro(stat_noise=0.5).client_update(ClientContext(exp.runtime, 0, 1), broadcast, None).upload
    assert all(torch.equal(plain["delta"][k], noisy["delta"][k]) for k in plain["delta"])  # the model: untouched
    held = plain["share"] > 0
    assert torch.equal(plain["share"], noisy["share"])
    mu_plain, mu_noisy = (u["m"][held] / u["share"][held][:, None] for u in (plain, noisy))
    assert (mu_plain - mu_noisy).abs().mean() > 0.2  # μ (and σ) are uploaded with N(0, 0.5²) noise


def test_fedimpro_trains_and_moves_the_global_estimate() -> None:
    exp = on_engine("serial", algorithm="fedimpro", clients=4, options={"fedimpro": {"schedule": "default"}})
    server = exp.algorithm.init_server(exp.runtime.init_params, _federation(exp))
    records, _ = run_records(exp, 2)
    assert records[-1]["accuracy"] > records[0]["accuracy"]
    assert "server_sigma_mean" in records[-1] and server.state.extra["mu"].shape[0] == exp.data.num_classes


# ---------------------------------------------------------------------------------------------------- bad input
BAD = [
    (["--algorithm", "vhl", "--vhl.base", "moon"], "vhl.base must be one of"),
    (["--algorithm", "vhl", "--vhl.temperature", "0"], "vhl.temperature must be > 0"),
    (["--algorithm", "vhl", "--vhl.per-class", "0"], "vhl.per_class must be >= 1"),
    (["--algorithm", "fedimpro", "--fedimpro.schedule", "milestone"], "fedimpro.schedule must be one of"),
    (["--algorithm", "fedimpro", "--fedimpro.noise-std", "0"], "fedimpro.noise_std must be > 0"),
    (["--algorithm", "fedimpro", "--fedimpro.stat-noise", "-1"], "fedimpro.stat_noise must be >= 0"),
    # their losses couple a batch's samples: DP-SGD's per-sample clipping would not bound one sample's influence
    (["--algorithm", "vhl", "--transform", "sample-dp"], "--transform sample-dp cannot run VHL"),
    (["--algorithm", "fedimpro", "--transform", "sample-dp"], "--transform sample-dp cannot run FedImpro"),
]


@pytest.mark.parametrize("args, expected", BAD, ids=ids(BAD))
def test_bad_options_are_one_clear_error_before_training(args: list[str], expected: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert_one_clear_error(args, expected, tmp_path / "run", capsys, no_folder=True)
