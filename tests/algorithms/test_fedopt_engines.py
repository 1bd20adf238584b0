"""The federated-optimization methods on the vectorized and processes engines (same results as serial), and
their bad input (one clear error before training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bad_input import assert_one_clear_error, ids
from engine_equivalence import (assert_processes_match_serial, assert_vectorized_falls_back_to_serial,
                                assert_vectorized_matches_serial)

VECTORIZABLE = [("scaffold", {}), ("fednova", {}), ("feddyn", {"feddyn": {"alpha": 0.1}}),
                ("moon", {"moon": {"mu": 5.0}}), ("fedavgm", {}), ("fedadagrad", {}), ("fedadam", {}),
                ("fedyogi", {}), ("fedexp", {}), ("fedexp", {"fedexp": {"eval_average": True}})]


@pytest.mark.parametrize("algorithm, options", VECTORIZABLE,
                         ids=[a + "".join(f"-{k}" for k in o.get(a, {})) for a, o in VECTORIZABLE])
def test_vectorized_matches_serial_and_really_vectorizes(algorithm: str, options: dict) -> None:
    assert_vectorized_matches_serial(algorithm=algorithm, options=options, clients=6, join_ratio=0.9, rounds=2)


def test_fednova_with_heterogeneous_epochs_falls_back_to_serial_with_the_same_results() -> None:
    assert_vectorized_falls_back_to_serial("fednova-epochs", slots=3, algorithm="fednova",
                                           options={"fednova": {"max_epochs": 3}}, clients=5, rounds=2)


@pytest.mark.slow  # spawning workers takes longer than a unit test may
@pytest.mark.parametrize("algorithm", ["scaffold", "feddyn", "fednova", "moon", "fedadam"])
def test_processes_match_serial(algorithm: str) -> None:
    assert_processes_match_serial(algorithm=algorithm, clients=6, join_ratio=0.7)


BAD = [
    (["--algorithm", "fedadam", "--fedadam.beta1", "1"], "fedadam.beta1 must be"),
    (["--algorithm", "fedyogi", "--fedyogi.beta2", "-0.1"], "fedyogi.beta2 must be"),
    (["--algorithm", "fedadagrad", "--fedadagrad.tau", "0"], "fedadagrad.tau must be > 0"),
    (["--algorithm", "fedadam", "--fedadam.server-lr", "0"], "fedadam.server_lr must be > 0"),
    (["--algorithm", "fedavgm", "--fedavgm.momentum", "1"], "fedavgm.momentum must be"),
    (["--algorithm", "scaffold", "--scaffold.global-lr", "-1"], "scaffold.global_lr must be > 0"),
    (["--algorithm", "feddyn", "--feddyn.alpha", "0"], "feddyn.alpha must be > 0"),
    (["--algorithm", "moon", "--moon.tau", "0"], "moon.tau must be > 0"),
    (["--algorithm", "moon", "--moon.mu", "-1"], "moon.mu must be >= 0"),
    (["--algorithm", "fednova", "--fednova.min-epochs", "3", "--fednova.max-epochs", "2"],
     "fednova.max_epochs (2) must be >= fednova.min_epochs (3)"),
    (["--algorithm", "fednova", "--fednova.min-epochs", "0"], "fednova.min_epochs must be >= 1"),
    (["--algorithm", "fedexp", "--fedexp.eps", "0"], "fedexp.eps must be > 0"),
    (["--algorithm", "fedexp", "--fedexp.eval-average", "maybe"], "fedexp.eval_average: expected bool"),
]


@pytest.mark.parametrize("args, expected", BAD, ids=ids(BAD))
def test_bad_options_are_one_clear_error_before_training(args: list[str], expected: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert_one_clear_error(args, expected, tmp_path / "run", capsys)
