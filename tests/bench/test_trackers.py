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
