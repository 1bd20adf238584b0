"""Fashion-MNIST end to end (slow: run with `pytest -m slow`)."""

import json
from pathlib import Path

import pytest

from conftest_paths import has_fmnist
from fedloom.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not has_fmnist, reason="dataset-fashion-mnist not installed")]


def test_fedavg_fmnist_cnn_two_rounds_learns(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(["run", "--algorithm", "fedavg", "--dataset", "fashion-mnist", "--partition", "iid",
                 "--clients", "10", "--rounds", "2", "--lr", "0.05", "--batch-size", "32", "--device", "cpu",
                 "--quiet", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "cnn" and summary["final_accuracy"] > 0.7
