"""Attacks, one mechanism per test, against hand-computed values on constructed data and uploads."""

from __future__ import annotations

import math

import pytest
import torch

from fedloom.config import make_component
from fedloom.errors import ConfigError
from fedloom.pipeline.aggregators import Mean
from fedloom.pipeline.attacks import (ALIE, ATTACKS, DBA, IPM, THREAT_NAMESPACE, THREATS, BadNets, Colluding,
                                      ExactSampler, GaussianAttack, LabelFlip, MinMax, MinSum, PoisonContext,
                                      Scaling, ThreatModel, alie_z)
from fedloom.pipeline.chain import UploadPipeline
from fedloom.pipeline.context import AggregationContext, TransformContext

IMAGE = (1, 8, 8)  # digits


def pctx(count: int = 20, rank: int = 0, shape: tuple[int, ...] = IMAGE) -> PoisonContext:
    return PoisonContext(seed=5, client_id=3, rank=rank, train_indices=torch.arange(100, 100 + count),
                         num_classes=10, input_shape=shape)


def batch(count: int = 20, shape: tuple[int, ...] = IMAGE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.arange(100, 100 + count)
    x = -torch.ones(count, *shape)  # black images: every trigger pixel (1.0) is a change
    y = torch.arange(count) % 10
    return ids, x, y


# ------------------------------------------------------------------------------------------------ data level
def test_badnets_stamps_the_trigger_and_target_on_the_poisoned_fraction_only() -> None:
    ids, x, y = batch()
    px, py = BadNets(pdr=0.3, target=1).poisoner(pctx()).corrupt_batch(ids, x.clone(), y.clone())
    poisoned = (px != x).flatten(1).any(dim=1)
    assert int(poisoned.sum()) == 6  # floor(0.3 · 20)
    # rows/cols -4 .. -2 of 8 = 4..6: exactly those 9 pixels, set to 1.0
    expected = x.clone()
    expected[poisoned, :, 4:7, 4:7] = 1.0
    assert torch.equal(px, expected)
    assert torch.equal(py[poisoned], torch.ones(6, dtype=torch.long))
    assert torch.equal(py[~poisoned], y[~poisoned])


def test_poisoning_depends_on_the_sample_not_on_the_batch() -> None:
    """Serial batches and vectorized packs cut a client's samples differently: the same samples are poisoned."""
    ids, x, y = batch()
    poison = BadNets().poisoner(pctx())
    whole = poison.corrupt_batch(ids, x.clone(), y.clone())
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    parts = [poison.corrupt_batch(ids[p], x[p].clone(), y[p].clone()) for p in order.split(7)]
    assert torch.equal(torch.cat([px for px, _ in parts]), whole[0][order])
    assert torch.equal(torch.cat([py for _, py in parts]), whole[1][order])
    again = BadNets().poisoner(pctx()).corrupt_batch(ids, x.clone(), y.clone())  # fixed by the seed
    assert torch.equal(again[0], whole[0])


def test_flat_inputs_are_stamped_as_square_images() -> None:
    ids, x, y = batch()
    flat = BadNets().poisoner(pctx(shape=(64,))).corrupt_batch(ids, x.reshape(20, 64).clone(), y.clone())
    image = BadNets().poisoner(pctx()).corrupt_batch(ids, x.clone(), y.clone())
    assert torch.equal(flat[0], image[0].reshape(20, 64)) and torch.equal(flat[1], image[1])


def test_dba_gives_each_attacker_its_piece_by_rank_and_tests_with_the_whole_trigger() -> None:
    ids, x, y = batch()
    stamped = []
    for rank in range(4):
        px, _ = DBA(pdr=1.0).poisoner(pctx(rank=rank)).corrupt_batch(ids, x.clone(), y.clone())
        stamped.append({(r, c) for r in range(8) for c in range(8) if px[0, 0, r, c] == 1.0})
    # Snowball's three 3-pixel patterns of the 3x3 square at rows/cols 4..6: below, on, above the diagonal
    assert stamped[0] == {(5, 4), (6, 4), (6, 5)}
    assert stamped[1] == {(4, 4), (5, 5), (6, 6)}
    assert stamped[2] == {(4, 5), (4, 6), (5, 6)}
    assert stamped[3] == stamped[0]  # rank 3: piece 3 mod 3
    view = DBA().test_view()
    full = view.stamp(x)
    assert {(r, c) for r in range(8) for c in range(8) if full[0, 0, r, c] == 1.0} == \
        stamped[0] | stamped[1] | stamped[2]
    rows = DBA(layout="rows", pdr=1.0).poisoner(pctx(rank=1)).corrupt_batch(ids, x.clone(), y.clone())[0]
    assert {(r, c) for r in range(8) for c in range(8) if rows[0, 0, r, c] == 1.0} == {(5, 4), (5, 5), (5, 6)}


def test_the_poisoned_test_view_excludes_target_class_samples() -> None:
    view = BadNets(target=1).test_view()
    y = torch.tensor([0, 1, 2, 1, 9])
    assert view.keep(y).tolist() == [True, False, True, False, True]
    assert view.relabel(y).tolist() == [1] * 5


def test_label_flip_all_labels_and_a_source_target_map() -> None:
    ids, x, y = batch()
    _, flipped = LabelFlip().poisoner(pctx()).corrupt_batch(ids, x.clone(), y.clone())
    assert torch.equal(flipped, 9 - y)  # pdr 1: every sample, y → C−1−y
    px, mapped = LabelFlip(pairs="5:3, 1:7").poisoner(pctx()).corrupt_batch(ids, x.clone(), y.clone())
    expected = y.clone()
    expected[y == 5], expected[y == 1] = 3, 7
    assert torch.equal(mapped, expected) and torch.equal(px, x)
    view = LabelFlip(pairs="5:3").test_view()
    assert view.keep(torch.tensor([5, 3, 1])).tolist() == [True, False, False]
    assert view.relabel(torch.tensor([5])).tolist() == [3]
    assert LabelFlip().test_view() is None  # untargeted: no asr
    half = LabelFlip(pdr=0.5).poisoner(pctx()).corrupt_batch(ids, x.clone(), y.clone())[1]
    assert int((half != y).sum()) == 10


@pytest.mark.parametrize("options, message", [
    ({"size": 3, "row": 6}, "rows 6..8"), ({"size": 9}, "outside the 8x8 image"), ({"col": -9}, "columns -1..1"),
    ({"target": 10}, "target must be a class")])
def test_a_trigger_outside_the_image_is_refused(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BadNets(**options).check_data(IMAGE, 10, torch.float32)
    BadNets().check_data((1, 28, 28), 10, torch.float32)  # Snowball's rows 24..26 of 28
    with pytest.raises(ConfigError, match="not an image"):
        BadNets().check_data((60,), 10, torch.float32)
    with pytest.raises(ConfigError, match="tokens"):
        BadNets().check_data((64,), 10, torch.int64)


# ------------------------------------------------------------------------------------------------ update level
def test_scaling_multiplies_the_update_and_constrain_and_scale_clips_it() -> None:
    tctx = TransformContext(0, 1, 0, True)
    upload = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[0.0, 4.0]])}  # norm 5
    scaled = Scaling(gamma=4.0).corrupt(tctx, upload)
    assert scaled["a"].tolist() == [12.0, 0.0] and scaled["b"].tolist() == [[0.0, 16.0]]
    bounded = Scaling(gamma=4.0, norm_bound=10.0).corrupt(tctx, upload)
    norm = math.sqrt(sum(float(v.pow(2).sum()) for v in bounded.values()))
    assert norm == pytest.approx(10.0) and bounded["a"].tolist() == pytest.approx([6.0, 0.0])
    assert Scaling().bind(50).gamma == 50.0 and Scaling(gamma=3.0).bind(50).gamma == 3.0  # γ = n by default
    assert BadNets(gamma=2.0).corrupt(tctx, upload)["a"].tolist() == [6.0, 0.0]  # model replacement
    assert BadNets().corrupt(tctx, upload) is upload


def test_gaussian_attack_replaces_the_upload_with_seeded_noise() -> None:
    upload = {"w": torch.zeros(20000)}
    a = GaussianAttack(sigma=3.0).corrupt(TransformContext(0, 1, 2, True), upload)["w"]
    b = GaussianAttack(sigma=3.0).corrupt(TransformContext(0, 1, 2, True), upload)["w"]
    c = GaussianAttack(sigma=3.0).corrupt(TransformContext(0, 2, 2, True), upload)["w"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.std().item() == pytest.approx(3.0, rel=0.03) and abs(a.mean().item()) < 0.1


# ------------------------------------------------------------------------------------------------ omniscient
def test_alie_z_from_n_and_f_as_in_the_paper() -> None:
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-4)  # s = 26 − 12 = 14, Φ⁻¹(36/50)
    assert alie_z(10, 2) == pytest.approx(0.2533, abs=1e-4)  # s = 6 − 2 = 4, Φ⁻¹(0.6)
    benign = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]], dtype=torch.float64)  # μ = (2, 1), σ = (2, 0)
    crafted = ALIE().craft(benign, 50, 12)
    assert crafted.tolist() == pytest.approx([2.0 - 2.0 * 0.58284, 1.0], abs=1e-4)
    assert ALIE(z=1.5).craft(benign, 50, 12).tolist() == pytest.approx([-1.0, 1.0])


def test_ipm_uploads_minus_epsilon_times_the_benign_mean() -> None:
    benign = torch.tensor([[1.0, -2.0], [3.0, 4.0]], dtype=torch.float64)
    assert IPM(epsilon=0.5).craft(benign, 4, 2).tolist() == [-1.0, -0.5]


def test_min_max_and_min_sum_find_gamma_by_hand() -> None:
    """Benign 0, 0, 3 (μ = 1, p = −1). Min-Max: max|μ − γ − g| = 2 + γ ≤ 3 → γ = 1. Min-Sum:
    2(1 − γ)² + (2 + γ)² = 3γ² + 6 ≤ max(9, 9, 18) = 18 → γ = 2."""
    benign = torch.tensor([[0.0], [0.0], [3.0]], dtype=torch.float64)
    assert MinMax().gamma(benign) == pytest.approx(1.0, abs=1e-4)
    assert MinMax().craft(benign, 5, 2).tolist() == pytest.approx([0.0], abs=1e-4)
    assert MinSum().gamma(benign) == pytest.approx(2.0, abs=1e-4)
    assert MinSum(direction="sign").craft(benign, 5, 2).tolist() == pytest.approx([-1.0], abs=1e-4)
    # std direction: p = −σ (unbiased σ = √3), Min-Max: 2 + γ√3 ≤ 3
    assert MinMax(direction="std").gamma(benign) == pytest.approx(1 / math.sqrt(3), abs=1e-4)


def test_colluding_replaces_only_the_malicious_uploads_before_the_inner_rule() -> None:
    items = [(0, {"w": torch.tensor([0.0])}, 1.0), (1, {"w": torch.tensor([2.0])}, 1.0),
             (2, {"w": torch.tensor([5.0])}, 2.0)]
    ctx = AggregationContext(seed=0, round=1, global_params={}, malicious=frozenset({2}))
    # IPM ε = 1: client 2 uploads −mean(0, 2) = −1; weighted mean (0 + 2 − 2) / 4 = 0
    assert Colluding(IPM(epsilon=1.0), Mean()).aggregate(items, ctx)["w"].tolist() == [0.0]
    clean = AggregationContext(seed=0, round=1, global_params={}, malicious=frozenset({7}))
    assert Colluding(IPM(epsilon=1.0), Mean()).aggregate(items, clean)["w"].tolist() == [3.0]


# ------------------------------------------------------------------------------------------------ threat model
def test_malicious_ids_are_fixed_by_the_seed_and_fraction_is_in_0_1() -> None:
    threat = ThreatModel(fraction=0.2)
    assert threat.malicious_clients(1, 50) == threat.malicious_clients(1, 50)
    assert len(threat.malicious_clients(1, 50)) == 10
    assert threat.malicious_clients(1, 50) != threat.malicious_clients(2, 50)
    assert ThreatModel(fraction=0.0).malicious_clients(1, 50) == frozenset()
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"attack.fraction must be in \[0, 1\)"):
            make_component(THREATS, THREAT_NAMESPACE, {"fraction": bad})


def test_exact_sampling_puts_round_k_fraction_attackers_in_every_cohort() -> None:
    malicious = ThreatModel(fraction=0.2).malicious_clients(7, 200)
    sampler = ThreatModel(fraction=0.2, sampling="exact").sampler(malicious)
    cohorts = [sampler(200, 50, 7, r) for r in range(1, 21)]
    assert all(len(c) == 50 == len(set(c)) and sum(i in malicious for i in c) == 10 for c in cohorts)
    assert cohorts == [sampler(200, 50, 7, r) for r in range(1, 21)]  # deterministic per seed
    assert len({tuple(c) for c in cohorts}) == 20 and sampler(200, 50, 8, 1) != cohorts[0]
    assert sum(i in malicious for i in sampler(200, 7, 7, 1)) == 1  # round(7 · 0.2) = 1
    assert ThreatModel(fraction=0.2).sampler(malicious) is None  # plain sampling
    # too few benign clients for the cohort: the rest are attackers
    assert ExactSampler(frozenset({0, 1, 2}), 0.2).attackers(size=5, num_clients=6) == 2


def test_every_attack_is_registered_and_pipeline_poison_is_for_malicious_clients_only() -> None:
    assert {"labelflip", "badnets", "dba", "scaling", "signflip", "gaussian-attack", "alie", "ipm", "minmax",
            "minsum"} <= set(ATTACKS.names())
    pipe = UploadPipeline(seed=5, attack=DBA(pdr=1.0), malicious=frozenset({4, 9}))
    train = torch.arange(10)
    assert pipe.poison_for(3, train, 10, IMAGE) is None
    assert pipe.poison_for(9, train, 10, IMAGE) is pipe.poison_for(9, train, 10, IMAGE)  # built once
    assert pipe.eval_view("test") is None and pipe.eval_view("poisoned") is not None
