"""Same seed, same metrics.jsonl, whatever the engine, worker count or pack size (through the CLI)."""

import json
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


SEAMS = ["run", "--dataset", "digits", "--model", "mlp", "--clients", "6", "--rounds", "3", "--lr", "0.05",
         "--algorithm", "ditto", "--aggregator", "median", "--transform", "clip,quantize", "--clip.norm", "5",
         "--join-ratio", "0.7", "--device", "cpu", "--quiet"]


def test_seams_give_the_same_metrics_on_every_engine(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The round-protocol issue's acceptance line: Ditto under a median aggregator with a clip,quantize chain
    gives one metrics.jsonl on serial, vectorized and processes; its uploads cost about a quarter of float32."""
    variants = {"serial": [], "processes": ["--engine", "processes", "--workers", "2"],
                "vectorized": ["--engine", "vectorized", "--pack-size", "4"], "dense": ["--transform", "clip"]}
    for name, flags in variants.items():
        assert main([*SEAMS, *flags, "--out", str(tmp_path / name)]) == 0, capsys.readouterr().err
    reference = (tmp_path / "serial" / "metrics.jsonl").read_bytes()
    assert (tmp_path / "processes" / "metrics.jsonl").read_bytes() == reference
    # vmap's batched matmuls round differently from the per-client loop: equal up to float32 rounding
    for mine, theirs in zip(records(tmp_path / "vectorized"), records(tmp_path / "serial")):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    quantized = json.loads(reference.splitlines()[-1])["bytes_up"]
    dense = json.loads((tmp_path / "dense" / "metrics.jsonl").read_bytes().splitlines()[-1])["bytes_up"]
    assert 0.24 < quantized / dense < 0.27
    last = json.loads(reference.splitlines()[-1])  # each step's bytes (issue 20): dense after clip, then 8-bit
    assert (last["bytes_up_after_clip"], last["bytes_up_after_quantize"]) == (dense, quantized)


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
