"""Defenses (robust aggregators) against hand-computed values on constructed updates."""

from __future__ import annotations

import math

import pytest
import torch

from fedloom.errors import ConfigError
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.defenses.clipping import NormClip
from fedloom.pipeline.defenses.flame import Flame
from fedloom.pipeline.defenses.fltrust import trust_coefficients
from fedloom.pipeline.defenses.foolsgold import FoolsGold, foolsgold_weights
from fedloom.pipeline.defenses.geomed import GeometricMedian
from fedloom.pipeline.defenses.krum import Bulyan, MultiKrum
from fedloom.pipeline.defenses.oracle import Ideal
from fedloom.pipeline.defenses.rlr import RobustLR


def items(rows: list[list[float]], weights: list[float] | None = None) -> list:
    weights = weights or [1.0] * len(rows)
    return [(i, {"w": torch.tensor(r, dtype=torch.float32)}, w) for i, (r, w) in enumerate(zip(rows, weights))]


def context(malicious: set[int] = frozenset(), round_: int = 1, params: dict | None = None) -> AggregationContext:
    return AggregationContext(seed=7, round=round_, global_params=params or {}, malicious=frozenset(malicious))


SQUARE = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5], [50.0, 50.0]]


def test_multi_krum_averages_the_n_minus_f_best_and_reports_admitted_rates() -> None:
    ctx = context({5})
    out = MultiKrum(f=1).aggregate(items(SQUARE), ctx)  # m = n - f = 5: everything but the outlier
    assert out["w"].tolist() == pytest.approx([0.5, 0.5])  # (0+1+0+1+0.5)/5 per coordinate
    assert (ctx.metrics["admitted"], ctx.metrics["admitted_tpr"], ctx.metrics["admitted_fpr"]) == (5.0, 1.0, 0.0)
    # m = 2: the centre (score 1.5) and the first corner (2.5, ties broken by position)
    assert MultiKrum(f=1, m=2).aggregate(items(SQUARE))["w"].tolist() == pytest.approx([0.25, 0.25])


def test_multi_krum_snowball_repo_rule_ranks_by_mean_distance() -> None:
    # keeps n - f - 2 = 3: the centre, then (1,1) (nearest the outlier among the corners), then (1,0) by position
    out = MultiKrum(f=1, rule="snowball-repo").aggregate(items(SQUARE, [1, 1, 1, 1, 1, 1]))
    assert out["w"].tolist() == pytest.approx([2.5 / 3, 1.5 / 3])


def test_krum_family_refuses_small_cohorts() -> None:
    with pytest.raises(ConfigError, match="multi-krum with f=2 needs more than 2f\\+2 = 6"):
        MultiKrum(f=2).check_cohort(6)
    with pytest.raises(ConfigError, match="exceeds"):
        MultiKrum(f=1, m=9).check_cohort(8)
    Bulyan(f=1).check_cohort(7)
    with pytest.raises(ConfigError, match="at least 4f\\+3 = 7"):
        Bulyan(f=1).check_cohort(6)


def test_bulyan_iterated_krum_then_closest_to_median() -> None:
    # iterated Krum, f=1, by hand (score = sum of squared distances to the n'-3 nearest others):
    #   n'=7: 3 and 4 score 1+1+4+4 = 10 (lowest, 3 comes first); n'=6 without 3: 4 scores 1+4+4 = 9;
    #   n'=5: 2 and 5 score 1+9 = 10 (2 first); n'=4: 5 scores 1; n'=3 (one neighbour): 1 and 6 tie at 25 -> 1.
    # theta = n - 2f = 5 picked, never 6 or 1000; beta = 5 - 2 = 3 values closest to the median 3: {2, 3, 4}
    ctx = context({6})
    rows = [[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [1000.0]]
    assert Bulyan(f=1).selection(torch.tensor(rows)) == [2, 3, 1, 4, 0]
    assert Bulyan(f=1).aggregate(items(rows), ctx)["w"].item() == pytest.approx(3.0)
    assert ctx.metrics["admitted_tpr"] == pytest.approx(5 / 6) and ctx.metrics["admitted_fpr"] == 0.0


def test_geometric_median_of_collinear_points_is_the_middle_one() -> None:
    rows = [[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]]
    out = GeometricMedian(iterations=100, tolerance=0).aggregate(items(rows))
    assert out["w"].tolist() == pytest.approx([1.0, 0.0], abs=1e-3)
    # one Weiszfeld step from the mean 11/3 already moves towards the median: weights 1/d = 3/11, 3/8, 3/19
    one = GeometricMedian(iterations=1, tolerance=0).aggregate(items(rows))
    inv = [3 / 11, 3 / 8, 3 / 19]
    assert one["w"][0].item() == pytest.approx((inv[1] * 1 + inv[2] * 10) / sum(inv), rel=1e-5)


def test_geometric_median_resists_one_far_outlier() -> None:
    rows = [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [1000.0, 0.0]]
    out = GeometricMedian(iterations=50).aggregate(items(rows))["w"]
    assert torch.linalg.vector_norm(out) < 1.0  # the mean is at (200, 0)
    sym = GeometricMedian(iterations=50).aggregate(items(rows[:4]))["w"]
    assert sym.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_norm_clip_bounds_each_update_then_averages() -> None:
    out = NormClip(norm=2.0, sigma=0.0).aggregate(items([[3.0, 4.0], [0.0, 1.0]]))
    assert out["w"].tolist() == pytest.approx([0.6, 1.3])  # (1.2, 1.6) and (0, 1) averaged
    noisy = NormClip(norm=2.0, sigma=0.5).aggregate([(0, {"w": torch.zeros(20000)}, 1.0)], context())
    assert noisy["w"].std().item() == pytest.approx(0.5, rel=0.03)


def test_rlr_flips_the_rate_where_signs_disagree() -> None:
    rows = [[1.0, 1.0], [2.0, 2.0], [3.0, 1.0], [4.0, -1.0], [5.0, -1.0]]
    ctx = context()
    out = RobustLR(threshold=4).aggregate(items(rows), ctx)
    # mean (3, 0.4); |sum of signs| = 5 >= 4 keeps +1, |3 - 2| = 1 < 4 flips to -1
    assert out["w"].tolist() == pytest.approx([3.0, -0.4])
    assert ctx.metrics["rlr_flipped_share"] == 0.5
    with pytest.raises(ConfigError, match="rlr.threshold"):
        RobustLR(threshold=6).check_cohort(5)


def test_fltrust_zero_weight_for_an_update_opposite_the_servers() -> None:
    points = torch.tensor([[2.0, 0.0], [-3.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    coeffs = trust_coefficients(points, torch.tensor([1.0, 0.0]))
    assert coeffs[1] == 0 and coeffs[2] == 0
    # by hand: g0 = (1,0); TS = 1 and 1/sqrt2 for rows 0 and 3, rescaled to |g0| = 1:
    # ((1,0) + (1,1)/2) / (1 + 1/sqrt2)
    aggregate = coeffs.double() @ points.double()
    total = 1 + 1 / math.sqrt(2)
    assert aggregate.tolist() == pytest.approx([1.5 / total, 0.5 / total])


def test_foolsgold_weights_by_hand() -> None:
    # rows 0 and 1 have cosine 0.6, row 2 is orthogonal to both
    alpha = foolsgold_weights(torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]), kappa=1.0)
    # alpha = 1 - 0.6 = 0.4 (then / max 1, the max becoming 0.99); logit ln(0.4/0.6) + 0.5 = 0.0945
    assert alpha.tolist() == pytest.approx([math.log(0.4 / 0.6) + 0.5] * 2 + [1.0])


def test_foolsgold_down_weights_identical_sybils_and_remembers_histories() -> None:
    honest = [[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0], [0, 0, 1.0, 0, 0]]
    sybil = [0, 0, 0, 1.0, 1.0]
    ctx = context({3, 4})
    out = FoolsGold().aggregate(items(honest + [sybil, sybil]), ctx)
    assert out["w"].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0, 0])
    assert (ctx.metrics["admitted_tpr"], ctx.metrics["admitted_fpr"]) == (1.0, 0.0)
    assert sorted(ctx.state["history"]) == ["0", "1", "2", "3", "4"]
    # next round the sybils send different-looking updates, but their histories still coincide mostly
    ctx2 = context({3, 4}, round_=2)
    ctx2.state = ctx.state
    FoolsGold().aggregate(items(honest + [[0, 0, 0, 1.0, 0.9], [0, 0, 0, 0.9, 1.0]]), ctx2)
    assert ctx2.metrics["admitted_fpr"] == 0.0
    assert ctx2.state["history"]["3"].tolist() == pytest.approx([0, 0, 0, 2.0, 1.9])


def _flame_rows() -> tuple[list[list[float]], list[float]]:
    # 7 benign updates of norms 1..7 pointing near (1, 0); 3 attackers of norm 10 near (0, 1)
    radii = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    benign = [[r * math.cos(0.01 * i), r * math.sin(0.01 * i)] for i, r in enumerate(radii)]
    attack = [[10 * math.cos(1.5 + 0.01 * i), 10 * math.sin(1.5 + 0.01 * i)] for i in range(3)]
    return benign + attack, radii


@pytest.mark.parametrize("cluster_on", ["models", "updates"])
def test_flame_drops_the_outlier_cluster_and_clips_to_the_median_norm(cluster_on: str) -> None:
    rows, radii = _flame_rows()
    ctx = context({7, 8, 9}, params={"w": torch.zeros(2)})
    out = Flame(noise_lambda=0.0, cluster_on=cluster_on).aggregate(items(rows), ctx)
    bound = 5.5  # median of the 10 norms 1..7, 10, 10, 10
    expected = [sum(min(r, bound) * f(0.01 * i) for i, r in enumerate(radii)) / 7 for f in (math.cos, math.sin)]
    assert out["w"].tolist() == pytest.approx(expected, rel=1e-5)
    assert ctx.metrics["flame_clip_bound"] == pytest.approx(bound)
    assert (ctx.metrics["admitted_tpr"], ctx.metrics["admitted_fpr"]) == (1.0, 0.0)


def test_flame_noise_is_lambda_times_the_bound_and_seeded() -> None:
    base = torch.ones(20000)
    uploads = [(i, {"w": base * (1 + 0.01 * i)}, 1.0) for i in range(5)]
    one = Flame(noise_lambda=0.1, cluster_on="updates").aggregate(uploads, context())
    two = Flame(noise_lambda=0.1, cluster_on="updates").aggregate(uploads, context())
    bound = 1.02 * math.sqrt(20000)  # the median norm
    clean = torch.stack([u["w"] * min(1.0, bound / float(u["w"].norm())) for _, u, _ in uploads]).mean(0)
    assert (one["w"] - clean).std().item() == pytest.approx(0.1 * bound, rel=0.03)
    assert torch.equal(one["w"], two["w"])


def test_flame_snowball_repo_variant_admits_the_same_majority() -> None:
    rows, _ = _flame_rows()
    ctx = context({7, 8, 9})
    Flame(variant="snowball-repo").aggregate(items(rows), ctx)
    assert ctx.metrics["admitted_fpr"] == 0.0 and ctx.metrics["flame_clip_bound"] == pytest.approx(4.0)


def test_ideal_aggregates_only_benign_clients() -> None:
    ctx = context({1})
    out = Ideal().aggregate(items([[1.0], [100.0], [4.0]], [1.0, 5.0, 2.0]), ctx)
    assert out["w"].item() == pytest.approx(3.0)  # (1·1 + 2·4) / 3
    assert (ctx.metrics["admitted_tpr"], ctx.metrics["admitted_fpr"]) == (1.0, 0.0)
    everyone_bad = context({0})
    assert Ideal().aggregate(items([[5.0]]), everyone_bad)["w"].item() == 0.0
    assert math.isnan(context().metrics.get("admitted_fpr", math.nan))
