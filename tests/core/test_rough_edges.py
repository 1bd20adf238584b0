"""The rough edges a new user hit (issue 18 item 9), each pinned: the message for options of an unselected
algorithm, a closed pipe, per-selection --help, wrapped `fedloom list`, the README's dataset table, packaging."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedloom.cli import main
from fedloom.cli_help import wrapped_entry
from fedloom.resources import packaged, shipped

REPO = Path(__file__).resolve().parents[2]
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_options_of_another_algorithm_name_the_flag(capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--fedprox.mu", "0.1", "--rounds", "1"]) == 2
    assert capsys.readouterr().err == ("fedloom: error: --fedprox.mu is an option of algorithm 'fedprox', but the "
                                       "run uses algorithm 'fedavg'; add --algorithm fedprox, or remove it\n")
    assert main(["run", "--aggregator", "median", "--krum.f", "1", "--rounds", "1"]) == 2
    assert "of aggregator 'krum', but the run uses aggregator 'median'; add --aggregator krum" in \
        capsys.readouterr().err


class ClosedPipe:
    """A stdout whose reader has gone away."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_ends_quietly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["partition", "--dataset", "digits", "--clients", "5"]) == 141  # 128 + SIGPIPE
    assert capsys.readouterr().err == ""


@pytest.mark.slow  # a fresh Python process (torch's import): ~5-15 s here
def test_partition_into_head_has_no_traceback() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "fedloom.cli", "partition", "--dataset", "digits",
                             "--clients", "200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    head = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()  # what `| head -3` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err
    assert head[0].startswith(b"digits: 200 clients")


def _help(args: list[str], capsys: pytest.CaptureFixture) -> set[str]:
    """The flags `args` lists in its help (the first word of each option line)."""
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    return set(re.findall(r"^  (--[\w.-]+)", capsys.readouterr().out, re.M))


def test_run_help_shows_the_selected_components_only(capsys: pytest.CaptureFixture) -> None:
    text = _help(["run", "--algorithm", "fedprox", "--help"], capsys)
    assert "--fedprox.mu" in text and "--rounds" in text and "--mlp.hidden" in text  # run options, FedProx, models
    assert "--ditto.mu" not in text and "--krum.f" not in text and "--synthetic.alpha" not in text
    assert "--help-all" in text
    chosen = _help(["run", "--algorithm", "ditto", "--dataset", "synthetic", "--model", "logreg",
                    "--aggregator", "krum", "--help"], capsys)
    assert all(flag in chosen for flag in ("--ditto.mu", "--synthetic.alpha", "--krum.f"))
    assert "--fedprox.mu" not in chosen and "--mlp.hidden" not in chosen
    everything = _help(["run", "--help-all"], capsys)
    assert all(flag in everything for flag in ("--fedprox.mu", "--ditto.mu", "--krum.f", "--mlp.hidden"))


def test_hidden_option_flags_are_still_accepted(capsys: pytest.CaptureFixture) -> None:
    # --ditto.mu is not in `run --help` for the default algorithm, but parses (then names --algorithm ditto)
    assert main(["run", "--ditto.mu", "0.1", "--rounds", "1"]) == 2
    assert "add --algorithm ditto" in capsys.readouterr().err


def test_list_wraps_instead_of_cutting(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines if " " in line.strip()) <= 80
    joined = " ".join(line.strip() for line in lines)
    # FedALA's description is 120+ characters: the old list cut it at 70, mid-word
    assert "FedALA: Adaptive Local Aggregation for Personalized Federated Learning\", AAAI 2023)" in joined
    assert out.count("round patterns:") == 1


def test_wrapped_entry_by_hand() -> None:
    text = wrapped_entry("ab", "one two three four", width=30, name_width=4)
    assert text == "  ab   one two three four"
    lines = wrapped_entry("ab", "alpha beta gamma delta epsilon zeta", width=40, name_width=4).splitlines()
    assert lines == ["  ab   alpha beta gamma delta epsilon", "       zeta"]  # 42 characters would not fit


def test_readme_dataset_table_matches_fedloom_list(capsys: pytest.CaptureFixture) -> None:
    row = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| datasets |"))
    in_readme = set(re.findall(r"`([a-z][a-z0-9-]*)`", row))
    assert main(["list"]) == 0
    listed = capsys.readouterr().out.split("datasets:\n", 1)[1].split("\nmodels:", 1)[0]
    names = {line.split()[0] for line in listed.splitlines() if line.startswith("  ") and line[2] != " "}
    assert in_readme == names


def test_license_and_package_data() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"  # an SPDX expression, not the deprecated table
    assert project["project"]["license-files"] == ["LICENSE"]
    assert "Apache License" in (REPO / "LICENSE").read_text()
    patterns = project["tool"]["setuptools"]["package-data"]["fedloom.resources"]
    assert patterns == ["grids/*.toml", "reference/*.csv"]
    used = re.findall(r"benchmarks/(grids|reference)/([\w.-]+)", (REPO / "README.md").read_text())
    assert used
    for kind, name in used:  # every grid and reference file the README runs is shipped in the package
        assert name in {p.name for p in shipped(kind)}, name


def test_readme_paths_work_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # not a checkout: benchmarks/ is not here
    grid = packaged(Path("benchmarks/grids/fmnist-pfl.toml"))
    assert grid.is_file() and grid.read_bytes() == (REPO / "benchmarks/grids/fmnist-pfl.toml").read_bytes()
    assert packaged(Path("nowhere.toml")) == Path("nowhere.toml")
