"""Trackers: off by default, one clear line when unknown or not installed, and pure mirrors of metrics.jsonl."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from benchhelpers import cli
from fedloom.errors import ConfigError
from fedloom.trackers import make_trackers

FAST = ["--dataset", "digits", "--model", "mlp", "--clients", "4", "--rounds", "2", "--lr", "0.05",
        "--batch-size", "20", "--device", "cpu", "--quiet"]


def test_unknown_tracker_is_one_line_with_choices(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = cli(["run", *FAST, "--trackers", "neptune", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "unknown tracker 'neptune'" in err and "csv, mlflow, tensorboard, wandb" in err
    assert not (tmp_path / "r").exists()
    assert make_trackers(None) == [] and make_trackers("") == []


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_missing_extra_names_the_install_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = cli(["run", *FAST, "--trackers", "tensorboard", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "pip install 'fedloom[tensorboard]'" in err
    assert not (tmp_path / "r").exists()  # refused before the run folder exists


def test_mlflow_tracker_mirrors_every_record(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    fake = types.ModuleType("mlflow")
    for name in ("set_experiment", "start_run", "log_params", "set_tag", "log_metrics", "end_run"):
        setattr(fake, name, lambda *a, _n=name, **k: calls.append((_n, a, k)))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    plain, tracked = tmp_path / "plain", tmp_path / "tracked"
    assert cli(["run", *FAST, "--out", str(plain)], capsys)[0] == 0
    assert cli(["run", *FAST, "--trackers", "mlflow", "--out", str(tracked)], capsys)[0] == 0
    steps = [k["step"] for n, a, k in calls if n == "log_metrics" and "step" in k]
    assert steps == [0, 1, 2]  # every evaluated round, the initial model included
    assert calls[-1] == ("end_run", (), {"status": "FINISHED"})
    assert (plain / "metrics.jsonl").read_bytes() == (tracked / "metrics.jsonl").read_bytes()


def test_csv_tracker_is_metrics_jsonl_as_a_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import csv
    import json

    out = tmp_path / "r"
    assert cli(["run", *FAST, "--trackers", "csv", "--out", str(out)], capsys)[0] == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    for row, record in zip(rows, records):  # every key of every round, blank where a round has none
        assert {k: float(v) for k, v in row.items() if v} == {k: float(v) for k, v in record.items()}
    assert rows[0]["clients_sampled"] == "" and rows[1]["clients_sampled"] == "4"


def test_csv_tracker_on_resume_keeps_earlier_rounds_once(tmp_path: Path) -> None:
    from fedloom.trackers import CSVTracker

    first = CSVTracker()
    first.start(tmp_path, {})
    for round_ in (0, 1, 2):
        first.log(round_, {"round": round_, "accuracy": round_ / 10})
    again = CSVTracker()  # resumed from a checkpoint at round 1: round 2 is computed again
    again.start(tmp_path, {})
    again.log(2, {"round": 2, "accuracy": 0.25})
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == ["round,accuracy", "0,0.0", "1,0.1", "2,0.25"]


def test_wandb_tracker_mirrors_every_record(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    class FakeRun:
        summary: dict = {}

        def log(self, values: dict, step: int) -> None:
            calls.append(("log", step, values))

        def finish(self, exit_code: int) -> None:
            calls.append(("finish", exit_code))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or FakeRun()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert cli(["run", *FAST, "--trackers", "wandb", "--out", str(tmp_path / "r")], capsys)[0] == 0
    init = calls[0][1]
    assert init["name"] == "r" and init["dir"] == str(tmp_path / "r") and init["config"]["lr"] == 0.05
    assert [c[1] for c in calls if c[0] == "log"] == [0, 1, 2]
    assert calls[-1] == ("finish", 0) and "summary.final_accuracy" in FakeRun.summary


@pytest.mark.slow  # wandb's service process takes ~20 s to start here
@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_offline_run_writes_its_files(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "r"
    assert cli(["run", *FAST, "--trackers", "wandb", "--out", str(out)], capsys)[0] == 0
    (offline,) = (out / "wandb").glob("offline-run-*")
    assert list(offline.glob("*.wandb"))[0].stat().st_size > 0
