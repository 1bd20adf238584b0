"""Aggregation rules against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from fedloom.errors import ConfigError
from fedloom.pipeline.aggregators import AGGREGATORS, Krum, Mean, Median, TrimmedMean


def items(rows: list[list[float]], weights: list[float] | None = None) -> list:
    weights = weights or [1.0] * len(rows)
    return [(i, {"w": torch.tensor(r)}, w) for i, (r, w) in enumerate(zip(rows, weights))]


def test_mean_is_the_weighted_mean() -> None:
    out = Mean().aggregate(items([[0.0, 4.0], [3.0, 1.0]], [1.0, 2.0]))
    assert torch.allclose(out["w"], torch.tensor([2.0, 2.0]))  # (0+6)/3, (4+2)/3


def test_median_is_per_coordinate_and_averages_the_middle_pair() -> None:
    odd = Median().aggregate(items([[1.0, 9.0], [5.0, -1.0], [100.0, 3.0]]))
    assert odd["w"].tolist() == [5.0, 3.0]
    even = Median().aggregate(items([[1.0, 9.0], [5.0, -1.0], [100.0, 3.0], [2.0, 4.0]]))
    assert even["w"].tolist() == [3.5, 3.5]  # (2+5)/2, (3+4)/2


def test_trimmed_mean_drops_beta_n_from_each_end_per_coordinate() -> None:
    rows = [[1.0, 10.0], [2.0, 20.0], [3.0, -30.0], [4.0, 40.0], [1000.0, 50.0]]
    out = TrimmedMean(beta=0.2).aggregate(items(rows))  # floor(0.2*5) = 1 from each end
    assert torch.allclose(out["w"], torch.tensor([3.0, 70.0 / 3]))  # (2+3+4)/3, (10+20+40)/3


def test_krum_picks_the_point_closest_to_its_neighbours() -> None:
    rows = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5], [50.0, 50.0]]
    krum = Krum(f=1)  # n - f - 2 = 3 nearest neighbours
    scores = krum.scores(items(rows))
    # by hand: the centre (0.5, 0.5) is 0.5 from the four corners -> 3 * 0.5 = 1.5; a corner: 0.5 + 1 + 1 = 2.5
    assert scores[4].item() == pytest.approx(1.5)
    assert scores[0].item() == pytest.approx(2.5)
    assert krum.aggregate(items(rows))["w"].tolist() == [0.5, 0.5]
    assert Krum(f=1, m=2).aggregate(items(rows))["w"].tolist() == pytest.approx([0.25, 0.25])


def test_krum_refuses_too_small_a_cohort() -> None:
    Krum(f=1).check_cohort(5)
    with pytest.raises(ConfigError, match="more than 2f\\+2"):
        Krum(f=1).check_cohort(4)


def test_robust_rules_resist_one_huge_outlier_where_the_mean_does_not() -> None:
    rows = [[1.0], [1.1], [0.9], [1.05], [1e6]]
    assert Mean().aggregate(items(rows))["w"].item() > 1e5
    for rule in (AGGREGATORS.get("median")(), TrimmedMean(beta=0.2), Krum(f=1)):
        assert abs(rule.aggregate(items(rows))["w"].item() - 1.0) < 0.11


def test_option_ranges() -> None:
    with pytest.raises(ConfigError):
        TrimmedMean(beta=0.5).validate()
    with pytest.raises(ConfigError):
        Krum(f=-1).validate()
