"""Same seed, same metrics.jsonl, whatever the engine, worker count or pack size (through the CLI)."""

from pathlib import Path

import pytest

from fedloom.cli import main

RUN = ["run", "--dataset", "digits", "--model", "mlp", "--clients", "6", "--rounds", "3", "--lr", "0.05",
       "--algorithm", "fedprox", "--fedprox.mu", "0.1", "--join-ratio", "0.7", "--device", "cpu", "--quiet"]


def test_metrics_are_identical_on_every_engine(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    variants = {"serial": [], "processes": ["--engine", "processes", "--workers", "2"],
                "vectorized": ["--engine", "vectorized", "--pack-size", "4"],
                "vectorized-2": ["--engine", "vectorized", "--pack-size", "2"]}
    for name, flags in variants.items():
        assert main([*RUN, *flags, "--out", str(tmp_path / name)]) == 0, capsys.readouterr().err
    reference = (tmp_path / "serial" / "metrics.jsonl").read_bytes()
    assert (tmp_path / "processes" / "metrics.jsonl").read_bytes() == reference
    # vectorized packs sum in a different order: equal to float32 rounding, and equal across pack sizes
    assert (tmp_path / "vectorized" / "metrics.jsonl").read_bytes() == \
        (tmp_path / "vectorized-2" / "metrics.jsonl").read_bytes()


def test_engine_flags_are_validated(capsys: pytest.CaptureFixture) -> None:
    assert main([*RUN, "--engine", "processes", "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    assert main([*RUN, "--store", "cloud"]) == 2
    assert "--store must be memory, disk or auto" in capsys.readouterr().err
