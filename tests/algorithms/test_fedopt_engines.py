"""The federated-optimization methods on the vectorized and processes engines (same results as serial), and
their bad input (one clear error before training)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fedloom.cli import main
from fedloom.engines import EngineOptions

sys.path.insert(0, str(Path(__file__).parent.parent / "engines"))
from engine_helpers import assert_records_close, max_param_diff, on_engine, run_records  # noqa: E402
from helpers import make_experiment  # noqa: E402

VECTORIZABLE = [("scaffold", {}), ("fednova", {}), ("feddyn", {"feddyn": {"alpha": 0.1}}),
                ("moon", {"moon": {"mu": 5.0}}), ("fedavgm", {}), ("fedadagrad", {}), ("fedadam", {}),
                ("fedyogi", {}), ("fedexp", {})]


@pytest.mark.parametrize("algorithm, options", VECTORIZABLE, ids=[a for a, _ in VECTORIZABLE])
def test_vectorized_matches_serial_and_really_vectorizes(algorithm: str, options: dict) -> None:
    kwargs = dict(algorithm=algorithm, options=options, clients=6, join_ratio=0.9, rounds=2)
    serial_records, serial_params = run_records(on_engine("serial", **kwargs), 2)
    vectorized = on_engine("vectorized", EngineOptions(slots=3), **kwargs)
    vector_records, vector_params = run_records(vectorized, 2)
    assert vectorized.engine.serial_reason is None and vectorized.engine.usage.slot_steps > 0
    assert_records_close(serial_records, vector_records, tol=1e-5)
    assert max_param_diff(serial_params, vector_params) < 1e-5


def test_fednova_with_heterogeneous_epochs_falls_back_to_serial_with_the_same_results() -> None:
    kwargs = dict(algorithm="fednova", options={"fednova": {"max_epochs": 3}}, clients=5, rounds=2)
    serial_records, serial_params = run_records(on_engine("serial", **kwargs), 2)
    vectorized = on_engine("vectorized", EngineOptions(slots=3), **kwargs)
    records, params = run_records(vectorized, 2)
    assert "fednova-epochs" in vectorized.engine.serial_reason
    assert records == serial_records and max_param_diff(serial_params, params) == 0


@pytest.mark.slow  # spawning workers takes longer than a unit test may
@pytest.mark.parametrize("algorithm", ["scaffold", "feddyn", "fednova", "moon", "fedadam"])
def test_processes_match_serial(algorithm: str) -> None:
    kwargs = dict(algorithm=algorithm, clients=6, join_ratio=0.7)
    reference, ref_params = run_records(on_engine("serial", **kwargs), 2)
    base = make_experiment(**kwargs)
    options = EngineOptions(workers=2, worker_engine="vectorized", slots=3, run_config=base.config)
    records, params = run_records(on_engine("processes", options, **kwargs), 2)
    assert_records_close(reference, records, tol=1e-5)
    assert max_param_diff(ref_params, params) < 1e-5


FAST = ["run", "--quiet", "--rounds", "1", "--dataset", "digits", "--device", "cpu", "--clients", "4"]
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
]


@pytest.mark.parametrize("args, expected", BAD, ids=[row[1].split(" ")[0] for row in BAD])
def test_bad_options_are_one_clear_error_before_training(args: list[str], expected: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    code = main([*FAST, *args, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fedloom: error: "), err
    assert expected in err[0], err
    assert not (tmp_path / "run" / "summary.json").exists()
