"""Every pFL baseline runs 3 rounds on digits through the CLI and clearly beats chance (0.10)."""

import json

import pytest

from fedloom.cli import main

METHODS = ["per-fedavg", "pfedme", "ditto", "apfl", "fedper", "fedrep", "fedbabu", "fedrod", "fedfomo",
           "fedamp", "apple", "fedphp"]


@pytest.mark.parametrize("name", METHODS)
def test_three_rounds_on_digits_beat_chance(name: str, tmp_path) -> None:
    out = tmp_path / name
    code = main(["run", "--algorithm", name, "--dataset", "digits", "--model", "mlp", "--clients", "5",
                 "--rounds", "3", "--lr", "0.05", "--batch-size", "16", "--seed", "1", "--device", "cpu",
                 "--out", str(out), "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_accuracy"] > 0.5
    assert summary["total_bytes_up"] > 0
