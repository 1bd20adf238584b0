"""kill -9 of the CLI at random rounds, then ``--resume``: byte-identical to the uninterrupted run, for every
engine × client-state store. The kill rounds are drawn from a generator seeded by the case name (random but
reproducible); a checkpoint every 3 rounds means most kills land between checkpoints, where client states
written after the checkpoint (the disk store's old defect) would leak into the resumed run."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from faulthelpers import STATEFUL_ARGS, fedloom, kill9, rows, start, wait_for_rows

ENGINES = {"serial": [], "vectorized": ["--engine", "vectorized"],
           "processes": ["--engine", "processes", "--workers", "2"]}
ROUNDS = 12


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted runs, one per engine, made on first use (the store does not change a single byte)."""
    made: dict[str, Path] = {}

    class Lazy(dict):
        def __missing__(self, engine: str) -> Path:
            out = tmp_path_factory.mktemp("ref") / engine
            done = fedloom(["run", *STATEFUL_ARGS, *ENGINES[engine], "--store", "memory", "--out", str(out)])
            assert done.returncode == 0, done.stderr
            self[engine] = out
            return out

    return Lazy(made)


def kill_and_resume(out: Path, args: list[str], kill_after: list[int]) -> None:
    """Start the run, SIGKILL it once round k has been written, resume; again for each k; then finish."""
    first = True
    for k in kill_after:
        proc = start(["run", "--resume", str(out)] if not first else ["run", *args, "--out", str(out)])
        first = False
        wait_for_rows(out / "metrics.jsonl", k + 1, proc)
        assert proc.poll() is None, f"the run ended before round {k} could be killed: {proc.stderr.read()}"
        kill9(proc)
        assert not (out / "summary.json").exists()
    done = fedloom(["run", "--resume", str(out)])
    assert done.returncode == 0, done.stderr


def check_identical(out: Path, reference: Path) -> None:
    assert (out / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()
    assert (out / "clients.csv").read_bytes() == (reference / "clients.csv").read_bytes()
    assert rows(out / "metrics.jsonl") == ROUNDS + 1
    assert not (out / "checkpoint.pt").exists() and not (out / "client_states").exists()
    assert not list(out.glob(".*.tmp"))


def _kill_rounds(case: str, count: int) -> list[int]:
    rng = random.Random(case)
    return sorted(rng.sample(range(2, ROUNDS - 1), count))


MATRIX = [(engine, store) for engine in ENGINES for store in ("memory", "disk")]
FAST = {("serial", "disk"), ("vectorized", "memory")}


@pytest.mark.parametrize("engine, store", [pytest.param(e, s, marks=() if (e, s) in FAST else pytest.mark.slow)
                                           for e, s in MATRIX])
def test_kill9_at_a_random_round_then_resume_is_byte_identical(engine: str, store: str, tmp_path: Path,
                                                                references: dict[str, Path]) -> None:
    args = [*STATEFUL_ARGS, *ENGINES[engine], "--store", store, "--checkpoint-every", "3"]
    kill_and_resume(tmp_path / "run", args, _kill_rounds(f"{engine}-{store}", 1))
    check_identical(tmp_path / "run", references[engine])


@pytest.mark.slow
@pytest.mark.parametrize("engine, store", MATRIX)
def test_two_kills_in_one_run_then_resume_is_byte_identical(engine: str, store: str, tmp_path: Path,
                                                             references: dict[str, Path]) -> None:
    args = [*STATEFUL_ARGS, *ENGINES[engine], "--store", store, "--checkpoint-every", "3"]
    kill_and_resume(tmp_path / "run", args, _kill_rounds(f"twice-{engine}-{store}", 2))
    check_identical(tmp_path / "run", references[engine])
