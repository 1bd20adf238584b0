"""Every HtFL method on a mixed federation (MLP and logistic regression, D = 64): the same metrics for the same
seed, and the same metrics on the serial and processes engines."""

from __future__ import annotations

from pathlib import Path

import pytest

from htfl_helpers import cli_metrics

METHODS = {"fedproto": [], "fedtgp": ["--fedtgp.server-epochs", "5"], "fd": [], "fedgh": [], "lg-fedavg": [],
           "fml": [], "fedkd": [], "fedgen": ["--fedgen.server-epochs", "5", "--fedgen.hidden-dim", "32"],
           "fedktl": ["--fedktl.server-epochs", "3", "--fedktl.generator-epochs", "2", "--fedktl.w-dim", "16"],
           "fedmrl": ["--fedmrl.sub-feature-dim", "16"],
           "fedl2g": ["--fedl2g.warm-up-rounds", "1"], "local": []}


def test_a_mixed_prototype_run_is_deterministic_per_seed(tmp_path: Path) -> None:
    first = cli_metrics(tmp_path, "fedproto")
    again = cli_metrics(tmp_path, "fedproto")
    assert first == again and first[-1]["accuracy"] > 0.3


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS))
def test_serial_and_processes_engines_agree_on_a_mixed_federation(name: str, tmp_path: Path) -> None:
    serial = cli_metrics(tmp_path, name, *METHODS[name])
    assert serial == cli_metrics(tmp_path, name, *METHODS[name])  # deterministic per seed
    assert serial == cli_metrics(tmp_path, name, *METHODS[name], engine="processes")


@pytest.mark.parametrize("name", ["fedproto", "fedtgp", "fedkd", "fedmrl", "fedktl", "fedl2g"])
def test_feature_methods_refuse_architectures_of_different_widths(name: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    from fedloom.cli import main

    code = main(["run", "--algorithm", name, "--model", "mlp,logreg", "--dataset", "digits", "--clients", "4",
                 "--rounds", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "r"),
                 *(["--fedmrl.sub-feature-dim", "16"] if name == "fedmrl" else [])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "same feature width" in err[0] and "'mlp': 200" in err[0]
    assert not (tmp_path / "r").exists()
