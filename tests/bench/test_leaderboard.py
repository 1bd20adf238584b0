"""Leaderboard arithmetic on hand-made records."""

import pytest

from fedloom.bench.leaderboard import first_round_at, fmt_pm, late_gain


def curve(*accuracies: float, every: int = 1) -> list[dict]:
    return [{"round": i * every, "accuracy": a} for i, a in enumerate(accuracies)]


def test_late_gain_is_the_last_accuracy_minus_the_one_five_rounds_earlier() -> None:
    records = curve(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.62, 0.7)  # rounds 0..7: 0.7 - acc(round 2) = 0.4
    assert late_gain(records) == pytest.approx(40.0)
    assert late_gain(curve(0.5, 0.6, 0.55)) is None  # fewer than 5 rounds: unknown, not zero
    # evaluated every 2 rounds (0..10): the latest round <= 10 - 5 is round 4
    assert late_gain(curve(0.1, 0.2, 0.3, 0.35, 0.36, 0.30, every=2)) == pytest.approx(0.0)
    assert late_gain(curve(0.9, 0.9, 0.9, 0.9, 0.9, 0.8)) == pytest.approx(-10.0)  # falling


def test_rounds_to_target_is_the_first_evaluated_round_reaching_it() -> None:
    assert first_round_at(curve(0.1, 0.5, 0.4, 0.6), 0.5) == 1
    assert first_round_at(curve(0.1, 0.2), 0.5) is None


def test_one_seed_shows_no_spread_several_show_mean_and_std() -> None:
    assert fmt_pm((96.934, 0.0), seeds=1) == "96.93"
    assert fmt_pm((96.934, 0.4567), seeds=3) == "96.93 ± 0.46"
