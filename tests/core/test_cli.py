"""The CLI end to end on digits: run folder contents, determinism, config files, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedloom.cli import main

FAST = ["--dataset", "digits", "--model", "mlp", "--clients", "5", "--rounds", "3", "--lr", "0.05",
        "--batch-size", "20", "--device", "cpu", "--quiet"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_run_writes_a_complete_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code, stdout, _ = run_cli(["run", *FAST, "--out", str(out)], capsys)
    assert code == 0 and "final accuracy" in stdout
    for name in ["config.toml", "partition.json", "label_counts.csv", "partition.png", "metrics.jsonl",
                 "timings.jsonl", "clients.csv", "accuracy.png", "summary.json"]:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["final_accuracy"] <= 1 and 0 <= summary["best_accuracy"] <= 1
    assert summary["rounds"] == 3 and summary["wall_seconds"] > 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2, 3]
    assert records[1]["bytes_up"] > 0 and records[1]["bytes_up"] == records[1]["bytes_down"]
    assert len((out / "clients.csv").read_text().splitlines()) == 6
    assert not (out / "FAILED").exists()


def test_same_seed_gives_identical_metrics_and_other_seed_differs(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    for name, seed in [("a", "7"), ("b", "7"), ("c", "8")]:
        assert run_cli(["run", *FAST, "--algorithm", "fedprox", "--fedprox.mu", "0.1", "--seed", seed,
                        "--out", str(tmp_path / name)], capsys)[0] == 0
    a, b, c = ((tmp_path / n / "metrics.jsonl").read_bytes() for n in "abc")
    assert a == b and a != c


def test_config_file_with_set_overrides_and_resolved_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "exp.toml"
    config.write_text('algorithm = "FedProx"\ndataset = "digits"\nmodel = "mlp"\nclients = 4\nrounds = 5\n'
                      'lr = 0.05\ndevice = "cpu"\nquiet = true\n\n[fedprox]\nmu = 0.5\n')
    out = tmp_path / "run"
    code, _, _ = run_cli(["run", str(config), "--rounds", "2", "--set", "fedprox.mu=0.25", "--out", str(out)],
                         capsys)
    assert code == 0
    resolved = (out / "config.toml").read_text()
    assert 'algorithm = "fedprox"' in resolved and "rounds = 2" in resolved and "mu = 0.25" in resolved
    assert 'partition = "dirichlet"' in resolved and "[mlp]" in resolved  # defaults are written out
    # the resolved config reproduces the run
    code, _, _ = run_cli(["run", str(out / "config.toml"), "--out", str(tmp_path / "again")], capsys)
    assert code == 0
    assert (out / "metrics.jsonl").read_bytes() == (tmp_path / "again" / "metrics.jsonl").read_bytes()


@pytest.mark.parametrize("args, expected", [
    (["--algorithm", "fedavgg"], "unknown algorithm 'fedavgg'. Valid choices: "),
    (["--algorithm", "fedavgg"], "Did you mean 'fedavg'?"),
    (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["--partition", "dir"], "unknown partitioner 'dir'"),
    (["--model", "resnet"], "unknown model 'resnet'"),
    (["--engine", "warp"], "unknown engine 'warp'"),
    (["--alpha", "0"], "--alpha must be > 0"),
    (["--alpha", "-1"], "--alpha must be > 0"),
    (["--join-ratio", "1.5"], "--join-ratio must be in (0, 1]"),
    (["--rounds", "ten"], "invalid value 'ten' for rounds: expected int"),
    (["--clients", "5000"], "more clients than samples"),
    (["--fedprox.mu", "0.1"], "--fedprox.mu is an option of algorithm 'fedprox', but the run uses algorithm "
                              "'fedavg'; add --algorithm fedprox, or remove it"),
    (["--algorithm", "fedprox", "--fedprox.mu", "-1"], "fedprox.mu must be >= 0"),
    (["--set", "fedavg.beta=1"], "unknown option(s) ['fedavg.beta']"),
    (["--set", "nosuchkey=1"], "unknown config key(s) ['nosuchkey']"),
    (["--partition", "natural"], "has no natural partition"),
    (["--model", "cnn"], "model 'cnn' needs images of at least 16x16"),
    (["--device", "tpu"], "--device must be cpu, cuda or auto"),
])
def test_bad_input_is_one_clear_line(args: list[str], expected: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli(["run", *FAST, *args, "--out", str(out)], capsys)
    assert code == 2
    assert err.startswith("fedloom: error: ") and len(err.strip().splitlines()) == 1, err
    assert expected in err, err
    assert "Traceback" not in err and not (out / "summary.json").exists()


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(["run", str(tmp_path / "nope.toml")], capsys)
    assert code == 2 and "config file not found" in err


def test_corrupt_config_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3\n")
    code, _, err = run_cli(["run", str(bad)], capsys)
    assert code == 2 and "cannot parse config file" in err


def test_diverging_run_fails_cleanly_and_leaves_no_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli(["run", *FAST, "--lr", "1e12", "--out", str(out)], capsys)
    assert code == 2 and "non-finite" in err and "lower --lr" in err
    assert (out / "FAILED").is_file() and not (out / "summary.json").exists()


def test_existing_run_folder_is_not_clobbered(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert run_cli(["run", *FAST, "--out", str(out)], capsys)[0] == 0
    code, _, err = run_cli(["run", *FAST, "--out", str(out)], capsys)
    assert code == 2 and "already holds a completed run" in err and "--overwrite" in err
    assert run_cli(["run", *FAST, "--out", str(out), "--overwrite"], capsys)[0] == 0


def test_partition_command_prints_table_and_writes_plots(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(["partition", "--dataset", "digits", "--partition", "pathological",
                            "--classes-per-client", "2", "--clients", "5", "--seed", "3", "--out", str(tmp_path)],
                           capsys)
    assert code == 0 and "partition hash" in out
    other = run_cli(["partition", "--dataset", "digits", "--partition", "pathological", "--clients", "5",
                     "--seed", "4"], capsys)[1]
    assert other.split("partition hash")[1] != out.split("partition hash")[1]  # the seed changes the split
    assert (tmp_path / "partition.png").is_file() and (tmp_path / "label_counts.csv").is_file()


def test_partition_command_for_synthetic_natural(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(["partition", "--dataset", "synthetic", "--synthetic.alpha", "0.5", "--clients", "6"],
                           capsys)
    assert code == 0 and "natural" in out


def test_list_shows_every_registry(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    for name in ["fedavg", "fedprox", "local", "fedavg-ft", "fashion-mnist", "digits", "synthetic", "logreg",
                 "mlp", "cnn", "iid", "dirichlet", "pathological", "natural", "serial", "fedprox.mu"]:
        assert name in out, name


@pytest.mark.parametrize("algorithm", ["fedavg", "fedprox", "local", "fedavg-ft"])
def test_every_algorithm_learns_on_digits(algorithm: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / algorithm
    code, _, _ = run_cli(["run", *FAST, "--algorithm", algorithm, "--rounds", "5", "--out", str(out)], capsys)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_accuracy"] > 0.5  # chance is 0.1
