"""The Python API (fedloom.run / partition / load_runs): CLI-identical coercion and results, in-memory runs,
callbacks that stop early, the caller's torch threads restored, tidy tables of run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fedloom
from fedloom.api import StopRun, make_config
from fedloom.cli import main
from fedloom.errors import ConfigError

SMALL = dict(dataset="digits", model="mlp", clients=4, rounds=2, lr=0.05, batch_size=20, device="cpu")
FLAGS = ["--dataset", "digits", "--model", "mlp", "--clients", "4", "--rounds", "2", "--lr", "0.05",
         "--batch-size", "20", "--device", "cpu", "--quiet"]


def test_in_memory_run_matches_the_cli_run_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["run", *FLAGS, "--algorithm", "fedprox", "--fedprox.mu", "0.1", "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    cli_records = [json.loads(x) for x in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    monkeypatch.chdir(tmp_path)  # a default run folder would appear here
    # strings coerced as the CLI does, component names case-insensitive
    result = fedloom.run(**{**SMALL, "lr": "0.05", "rounds": "2"}, algorithm="FedProx",
                         options={"FedProx": {"mu": "0.1"}})
    assert result.records == cli_records  # the same run, value for value
    assert result.folder is None and sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    assert result.config.options["fedprox"] == {"mu": 0.1} and result.config.lr == 0.05
    assert [c["client"] for c in result.clients] == [0, 1, 2, 3]
    assert result.clients[0]["train_samples"] > 0 and 0 <= result.clients[0]["accuracy"] <= 1
    assert set(result.server_state.params) and result.summary["rounds"] == 2
    frame = result.frame()
    assert list(frame["round"]) == [0, 1, 2] and frame["accuracy"].iloc[-1] == result.final_accuracy


def test_bad_values_are_the_clis_config_errors(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError) as api_error:
        fedloom.run(**{**SMALL, "lr": "fast"})
    assert main(["run", *FLAGS, "--lr", "fast"]) == 2
    assert capsys.readouterr().err.strip() == f"fedloom: error: {api_error.value}"
    with pytest.raises(ConfigError, match="unknown algorithm 'fedprx'.*Did you mean 'fedprox'"):
        fedloom.run(**SMALL, algorithm="fedprx")
    with pytest.raises(ConfigError, match="fedprox.mu must be >= 0"):
        fedloom.run(**SMALL, algorithm="fedprox", fedprox={"mu": -1})
    with pytest.raises(ConfigError, match="checkpoint_every needs a run folder"):
        fedloom.run(**SMALL, checkpoint_every=1)


def test_config_forms_merge_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('algorithm = "fedprox"\nrounds = 7\n[FedProx]\nmu = 0.5\n')
    cfg = make_config(path, options={"fedprox": {"mu": 0.2}}, rounds="3")
    assert (cfg.algorithm, cfg.rounds, cfg.options) == ("fedprox", 3, {"fedprox": {"mu": 0.2}})
    again = make_config(cfg, lr="0.5")  # a RunConfig goes through the same coercion
    assert again.lr == 0.5 and again.options == cfg.options


def test_callbacks_see_every_round_and_can_stop_early() -> None:
    seen: list[int] = []

    def stop_after_one(round_: int, metrics: dict) -> bool:
        seen.append(round_)
        assert "accuracy" in metrics
        return round_ < 1  # False at round 1

    result = fedloom.run(**{**SMALL, "rounds": 5}, callbacks=[stop_after_one])
    assert seen == [0, 1] and [r["round"] for r in result.records] == [0, 1]
    assert result.stopped_early and result.summary["rounds"] == 1 and result.summary["rounds_planned"] == 5

    def raise_stop(round_: int, metrics: dict) -> None:
        raise StopRun

    assert [r["round"] for r in fedloom.run(**SMALL, callbacks=[raise_stop]).records] == [0]


def test_a_run_folder_when_asked_and_the_callers_threads_restored(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = fedloom.run(**SMALL, threads=1, out=tmp_path / "r", callbacks=[lambda r, m: r < 1])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert result.folder == tmp_path / "r" and (tmp_path / "r" / "summary.json").is_file()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["stopped_early"] and summary["rounds"] == 1  # the folder's run is complete, with 1 round


def test_load_runs_is_one_tidy_table(tmp_path: Path) -> None:
    for mu in (0.1, 0.5):
        fedloom.run(**SMALL, algorithm="fedprox", fedprox={"mu": mu}, out=tmp_path / f"mu{mu}")
    rows = fedloom.load_runs(tmp_path, frame=False)
    assert len(rows) == 6  # 2 runs x rounds 0..2
    assert {(r["run"], r["fedprox.mu"], r["round"]) for r in rows} == {
        (f"mu{mu}", mu, rnd) for mu in (0.1, 0.5) for rnd in range(3)}
    assert "lr" not in rows[0]  # only settings that differ between the runs, besides the key columns
    per_run = fedloom.load_runs(tmp_path, per="run")
    assert sorted(per_run["fedprox.mu"]) == [0.1, 0.5] and "final_accuracy" in per_run.columns
    with pytest.raises(ConfigError, match="per must be"):
        fedloom.load_runs(tmp_path, per="client")


def test_partition_object_has_indices_summary_and_a_figure(tmp_path: Path) -> None:
    part = fedloom.partition(dataset="digits", partition="dirichlet", alpha="0.5", clients=5)
    train, test = part.train_indices, part.test_indices
    assert len(train) == len(test) == part.num_clients == 5
    every = sorted(int(i) for arr in train + test for i in arr)
    assert every == sorted(set(every))  # no sample in two places
    assert part.summary()["num_clients"] == 5 and part.label_counts.sum() == len(every)
    assert part.hash == fedloom.run(**{**SMALL, "clients": 5, "partition": "dirichlet", "alpha": 0.5,
                                       "rounds": 1}).summary["partition_hash"]
    fig = part.plot(tmp_path / "p.png")
    assert fig.__class__.__name__ == "Figure" and (tmp_path / "p.png").stat().st_size > 0
    assert part.plot(kind="labels").axes
