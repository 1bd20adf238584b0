"""``--on-divergence record`` (issue 19): a run whose training diverges (a non-finite loss or model) can end
there as its outcome instead of failing, because under attack divergence is what the attack achieved. The
default still fails with one error and a FAILED folder (tests/core/test_cli.py). Each test fails when its piece
is removed: the record and summary entry, the error type across worker processes, the evaluation that scores a
non-finite output as wrong, the identity that leaves the option out, and the report's diverged cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedloom.api import run
from fedloom.checkpoint import config_identity
from fedloom.cli import main
from fedloom.config import build_config
from fedloom.errors import ConfigError, DivergenceError, TrainingError
from fedloom.tasks.classification import Classification

DIVERGING = ["--dataset", "digits", "--model", "mlp", "--clients", "5", "--rounds", "4", "--lr", "1e12",
             "--batch-size", "20", "--device", "cpu", "--quiet"]


def test_recorded_divergence_ends_the_run_as_a_complete_outcome(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = main(["run", *DIVERGING, "--on-divergence", "record", "--checkpoint-every", "1", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and "diverged in round 1" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diverged"]["round"] == 1 and "non-finite" in summary["diverged"]["reason"]
    assert summary["rounds"] == 1 and summary["rounds_planned"] == 4 and "stopped_early" not in summary
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1] and records[-1]["diverged"] == 1
    # the model it ended with is the initial one (round 1 never produced a finite model): same evaluation
    assert records[-1]["accuracy"] == records[0]["accuracy"] == summary["final_accuracy"]
    assert not (out / "FAILED").exists() and not (out / "checkpoint.pt").exists()
    assert (out / "clients.csv").is_file()


def test_default_still_fails_and_invalid_value_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", *DIVERGING, "--out", str(tmp_path / "a")]) == 2
    assert (tmp_path / "a" / "FAILED").is_file()
    assert main(["run", *DIVERGING, "--on-divergence", "ignore", "--out", str(tmp_path / "b")]) == 2
    assert "--on-divergence must be fail or record" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_divergence_is_its_own_training_error() -> None:
    assert issubclass(DivergenceError, TrainingError)
    with pytest.raises(DivergenceError, match="non-finite"):
        run(build_config({"dataset": "digits", "model": "mlp", "clients": 4, "rounds": 2, "lr": 1e12}), out=None)


def test_processes_engine_keeps_the_type_and_records_it() -> None:
    cfg = {"dataset": "digits", "model": "mlp", "clients": 4, "rounds": 3, "lr": 1e12, "engine": "processes",
           "workers": 2}
    with pytest.raises(DivergenceError):  # re-raised by type from the worker's reply
        run(build_config(cfg), out=None)
    seen: list[int] = []
    result = run(build_config({**cfg, "on_divergence": "record"}), out=None,
                 callbacks=[lambda round_, record: seen.append(record.get("diverged", 0))])
    assert result.diverged_round == 1 and result.records[-1]["diverged"] == 1
    assert seen == [0, 1]  # the callback saw round 0 and the diverged round's record
    serial = run(build_config({**cfg, "engine": "serial", "on_divergence": "record"}), out=None)
    assert result.records == serial.records  # the evaluation after the failed round took fresh replies


def test_the_option_is_not_part_of_a_runs_identity() -> None:
    # a run that completes computes the same either way: grids that add it keep their folder names
    base = {"dataset": "digits", "model": "mlp"}
    assert config_identity(build_config(base)) == config_identity(build_config({**base, "on_divergence": "record"}))
    with pytest.raises(ConfigError):
        from fedloom.config_checks import validate_numbers
        validate_numbers(build_config({**base, "on_divergence": "maybe"}))


def test_a_non_finite_output_row_predicts_nothing() -> None:
    task = Classification()
    outputs = torch.tensor([[float("nan"), 0.0, 0.0],  # argmax would pick the NaN's index, 0 (= the target)
                            [0.0, float("inf"), 0.0],  # argmax 1 = the target, but the row is not finite
                            [0.0, 2.0, 1.0]])          # an ordinary correct row
    sums = task.eval_sums(outputs, torch.tensor([0, 1, 1]))
    assert int(sums["correct"]) == 1 and int(sums["count"]) == 3


def test_report_places_a_diverged_run_by_the_model_it_ended_with() -> None:
    from fedloom.bench.collect import RunData
    from fedloom.bench.report_trust import html_tables, markdown_tables, pick, trust_matrix
    from tests.bench.test_report_trust import fake_run, group_of

    ended = fake_run("gaussian-attack", "mean", 1, [(0.8, None), (0.1, None)])
    ended = RunData(ended.folder, ended.config, {"diverged": {"round": 2, "reason": "x"}}, ended.records, [])
    assert pick(ended, 5) == (0.1, None)  # not the best of its last 5 (0.8): it can never get back there
    healthy = fake_run("gaussian-attack", "median", 1, [(0.8, None), (0.7, None)])
    matrix = trust_matrix(group_of([ended, healthy]), last_k=5)
    assert matrix is not None and matrix.diverged == {("gaussian-attack", "mean"): [2]}
    text = "\n".join(markdown_tables(matrix))
    assert "| gaussian-attack | 10.00 † | **80.00** |" in text and "† = the run diverged" in text
    assert "diverged (round 2)" in html_tables(matrix)


DIVERGING_GRID = """
[grid]
name = "diverging"
seeds = [1]
workers = 1

[base]
dataset = "digits"
model = "mlp"
clients = 4
rounds = 3
lr = 1e12
batch_size = 20
device = "cpu"
"""


def test_a_grid_that_turns_recording_on_reruns_its_failed_runs_with_it(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    grid, out = tmp_path / "grid.toml", tmp_path / "runs"
    grid.write_text(DIVERGING_GRID)
    assert main(["bench", str(grid), "--out", str(out)]) == 1  # the run diverges and fails
    [folder] = [p for p in out.iterdir() if p.is_dir()]
    assert (folder / "FAILED").is_file()
    # the option is not part of the identity: the same folder, whose config.toml the grid now replaces
    grid.write_text(DIVERGING_GRID.replace("[base]\n", "[base]\non_divergence = \"record\"\n"))
    assert main(["bench", str(grid), "--out", str(out)]) == 0
    assert [p for p in out.iterdir() if p.is_dir()] == [folder]
    assert json.loads((folder / "summary.json").read_text())["diverged"]["round"] == 1
    assert "diverged in round 1" in capsys.readouterr().err + (folder / "run.log").read_text()


def test_a_leaderboard_row_says_its_runs_diverged() -> None:
    from fedloom.bench.collect import RunData, Variant
    from fedloom.bench.leaderboard import make_row, table

    cfg = build_config({"dataset": "digits"})
    records = [{"round": 0, "accuracy": 0.1}, {"round": 1, "accuracy": 0.2}]
    summary = {"best_accuracy": 0.2, "final_accuracy": 0.2}
    ended = RunData(Path("/a"), cfg, {**summary, "diverged": {"round": 1, "reason": "x"}}, records, [])
    healthy = RunData(Path("/b"), cfg, summary, records, [])
    row = make_row(Variant("k", [ended, healthy], label="fedavg"), 0.5)
    assert row.label == "fedavg" and row.note == " † 1 of 2 seeds diverged (round 1)"  # label: the variant's key
    assert table([row], 0.5, False)[1][0][0] == "fedavg † 1 of 2 seeds diverged (round 1)"
    assert make_row(Variant("k", [healthy], label="fedavg"), 0.5).note == ""


def test_vectorized_packs_record_the_same_outcome_as_serial() -> None:
    cfg = {"dataset": "digits", "model": "mlp", "clients": 4, "rounds": 3, "lr": 1e12, "on_divergence": "record"}
    packed = run(build_config({**cfg, "engine": "vectorized"}), out=None)
    serial = run(build_config(cfg), out=None)
    assert packed.diverged_round == serial.diverged_round == 1
    assert packed.records == serial.records
