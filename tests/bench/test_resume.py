"""Exact resume: SIGKILL mid-run then --resume gives a byte-identical metrics.jsonl; bad checkpoints are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchhelpers import RESUME_ARGS, cli
from fedloom.checkpoint import CHECKPOINT_NAME, RunProgress, read_header, save_checkpoint
from fedloom.cli import build_config, raw_from_args, make_parser
from fedloom.run import run_experiment


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_sigkill_after_round_4_then_resume_is_byte_identical(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert cli(["run", *RESUME_ARGS, "--out", str(full)], capsys)[0] == 0
    proc = subprocess.Popen([sys.executable, "-m", "fedloom.cli", "run", *RESUME_ARGS, "--out", str(killed),
                             "--checkpoint-every", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _lines(killed / "metrics.jsonl") < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # rounds 0..4 written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed / "summary.json").exists(), "run ended before the kill"
    assert 2 <= read_header(killed / CHECKPOINT_NAME)[0]["round"] < 10
    code, out, _ = cli(["run", "--resume", str(killed), "--quiet"], capsys)
    assert code == 0 and "final accuracy" in out
    assert (killed / "metrics.jsonl").read_bytes() == (full / "metrics.jsonl").read_bytes()
    assert (killed / "clients.csv").read_bytes() == (full / "clients.csv").read_bytes()
    assert (killed / "summary.json").is_file() and not (killed / CHECKPOINT_NAME).exists()


def _interrupted_run(out: Path, stop_at: int) -> None:
    """A run that dies (KeyboardInterrupt) right after evaluating round ``stop_at``."""
    args = make_parser().parse_args(["run", *RESUME_ARGS, "--rounds", "5", "--batch-size", "20",
                                     "--checkpoint-every", "1", "--out", str(out)])

    def stop(round_: int, record: dict) -> None:
        if round_ == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(build_config(raw_from_args(args)), progress=stop)


def test_bad_checkpoints_are_refused_then_resume_matches(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    _interrupted_run(run, stop_at=3)
    assert (run / "FAILED").is_file() and read_header(run / CHECKPOINT_NAME)[0]["round"] == 2
    good = (run / CHECKPOINT_NAME).read_bytes()

    code, _, err = cli(["run", "--resume", str(run), "--lr", "0.5"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "lr would change the results" in err  # a result-changing flag is refused before the checkpoint
    config = (run / "config.toml").read_text()
    # config.toml edited by hand: the checkpoint's own check still catches it
    (run / "config.toml").write_text(config.replace("\nlr = 0.02\n", "\nlr = 0.5\n"))
    code, _, err = cli(["run", "--resume", str(run)], capsys)
    assert code == 2 and "different config" in err and "differs in: lr" in err
    (run / "config.toml").write_text(config)

    for damaged in (good[:-100], good[:200] + bytes([good[200] ^ 0xFF]) + good[201:], b"garbage"):
        (run / CHECKPOINT_NAME).write_bytes(damaged)
        code, _, err = cli(["run", "--resume", str(run), "--quiet"], capsys)
        assert code == 2 and "corrupted" in err and len(err.strip().splitlines()) == 1

    (run / CHECKPOINT_NAME).write_bytes(good)
    assert cli(["run", "--resume", str(run), "--quiet", "--threads", "1"], capsys)[0] == 0
    assert not (run / "FAILED").exists()
    ref = tmp_path / "ref"
    assert cli(["run", *RESUME_ARGS, "--rounds", "5", "--batch-size", "20", "--out", str(ref)], capsys)[0] == 0
    assert (run / "metrics.jsonl").read_bytes() == (ref / "metrics.jsonl").read_bytes()

    code, _, err = cli(["run", "--resume", str(run)], capsys)
    assert code == 2 and "already complete" in err


def test_resume_without_checkpoint_restarts_from_round_0(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    _interrupted_run(run, stop_at=1)  # dies after evaluating round 1, before its checkpoint
    assert not (run / CHECKPOINT_NAME).exists() and (run / "metrics.jsonl").is_file()
    assert cli(["run", "--resume", str(run), "--quiet"], capsys)[0] == 0
    records = (run / "metrics.jsonl").read_text().splitlines()
    assert [int(r.split('"round": ')[1].split(",")[0].rstrip("}")) for r in records] == [0, 1, 2, 3, 4, 5]


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash during a checkpoint write leaves the previous checkpoint intact and no stray files."""
    run = tmp_path / "run"
    _interrupted_run(run, stop_at=3)
    before = (run / CHECKPOINT_NAME).read_bytes()
    cfg = build_config(raw_from_args(make_parser().parse_args(["run", *RESUME_ARGS, "--out", str(run)])))

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    progress = RunProgress(server=None, round=9, records=[], per_client={}, last_train={}, totals={})  # type: ignore
    with pytest.raises(Exception):
        save_checkpoint(run, cfg, progress, [])
    monkeypatch.undo()
    assert (run / CHECKPOINT_NAME).read_bytes() == before
    read_header(run / CHECKPOINT_NAME)
