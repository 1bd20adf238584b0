"""Behaviour kept across refactors: every registered algorithm's metrics.jsonl on a small fixed digits setting
is byte-identical to the one recorded before the round-protocol refactor (tests/golden/metrics, made by
make_golden.py from commit 71bd885), on the serial engine and on the processes engine.

Re-recorded since, each for a change of arithmetic that was meant, with its equality to the old to float
rounding tested elsewhere: vhl and fedimpro (2026-12-05: their losses rewritten without data-dependent control
flow so that they run in vectorized packs; the records moved by ≤ 6e-8 relative in the training losses, every
accuracy equal; tests/algorithms/test_vhl_fedimpro.py compares the new estimator with the class-by-class one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedloom.algorithms import ALGORITHMS
from fedloom.cli import main

from make_golden import ENGINES, SETTING

GOLDEN = Path(__file__).parent / "metrics"
FAST_PROCESSES = {"ditto", "fedfomo"}
#: the golden setting is a server round; serverless algorithms (dpsgd) are pinned by tests/patterns
STAR_ALGORITHMS = [a for a in ALGORITHMS.names() if "star" in ALGORITHMS.get(a).patterns]  # one averaging server, one that needs every upload


def cases() -> list:
    out = []
    for algorithm in STAR_ALGORITHMS:
        out.append(pytest.param(algorithm, "serial", id=f"{algorithm}-serial"))
        marks = () if algorithm in FAST_PROCESSES else pytest.mark.slow
        out.append(pytest.param(algorithm, "processes", marks=marks, id=f"{algorithm}-processes"))
    return out


@pytest.mark.parametrize("algorithm, engine", cases())
def test_metrics_are_byte_identical_to_the_recorded_ones(algorithm: str, engine: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    golden = GOLDEN / f"{algorithm}-{engine}.jsonl"
    assert golden.is_file(), f"no golden record for {algorithm}: run tests/golden/make_golden.py on the old code"
    code = main(["run", "--algorithm", algorithm, *SETTING, *ENGINES[engine], "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == golden.read_bytes()


def test_every_registered_algorithm_has_a_golden_record() -> None:
    missing = [a for a in STAR_ALGORITHMS if not (GOLDEN / f"{a}-serial.jsonl").is_file()]
    assert not missing, f"record golden metrics for {missing} (tests/golden/make_golden.py)"
