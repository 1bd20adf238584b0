"""Plugins: an algorithm from an installed distribution's entry point and one from a --import file are found by
`fedloom run`, `fedloom list` and the runs of `fedloom bench` (separate processes)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from fedloom import plugins
from fedloom.algorithms import ALGORITHMS
from fedloom.cli import main
from fedloom.errors import ConfigError

FLAGS = ["--dataset", "digits", "--model", "mlp", "--clients", "4", "--rounds", "2", "--lr", "0.05",
         "--batch-size", "20", "--device", "cpu", "--quiet"]

PLUGIN = '''
"""A test plugin: FedAvg whose server moves by ``step`` times the mean update."""
from dataclasses import dataclass

from fedloom.algorithms import ALGORITHMS
from fedloom.algorithms.base import Broadcast, ServerResult
from fedloom.algorithms.fedavg import FedAvg
from fedloom.algorithms.tree import tree_add, tree_scale
from fedloom.config import hp


@ALGORITHMS.register("{name}")
@dataclass(frozen=True)
class StepAvg(FedAvg):
    step: float = hp(0.5, gt=0, le=1, help="server step on the mean update")

    def server_update(self, server, uploads):
        mean = uploads.weighted_mean()
        params = tree_add(server.params, tree_scale(mean, self.step))
        return ServerResult(state=server.replace(params=params, round=server.round + 1),
                            broadcast=Broadcast(params=params))
'''


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Registries and plugin state restored after the test; $FEDLOOM_IMPORT private to it."""
    monkeypatch.setattr(ALGORITHMS, "_items", dict(ALGORITHMS._items))
    monkeypatch.setenv(plugins.ENV, "")
    monkeypatch.setattr(plugins, "_imported", {})
    monkeypatch.setattr(plugins, "_loaded", False)
    return monkeypatch


def installed_plugin(site: Path, module: str, name: str) -> None:
    """A distribution in ``site`` as pip would leave it: the package and a dist-info with entry_points.txt."""
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(PLUGIN.format(name=name))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[fedloom.algorithms]\n{name} = {module}\n")


def test_entry_point_plugin_runs_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 isolated: pytest.MonkeyPatch) -> None:
    installed_plugin(tmp_path / "site", "fedloom_test_ep", "ep-avg")
    isolated.syspath_prepend(str(tmp_path / "site"))
    isolated.delitem(sys.modules, "fedloom_test_ep", raising=False)
    assert main(["list"]) == 0
    assert "ep-avg" in capsys.readouterr().out  # loaded on first registry use
    out = tmp_path / "r"
    assert main(["run", *FLAGS, "--algorithm", "ep-avg", "--ep-avg.step", "0.25", "--out", str(out)]) == 0
    assert 'step = 0.25' in (out / "config.toml").read_text()
    sys.modules.pop("fedloom_test_ep", None)


def test_step_option_is_the_plugins_mechanism(tmp_path: Path, isolated: pytest.MonkeyPatch) -> None:
    """The plugin's own code runs: step=1 is FedAvg exactly, a smaller step is not."""
    import fedloom

    path = tmp_path / "fedloom_test_file_plugin.py"
    path.write_text(PLUGIN.format(name="file-avg"))
    plugins.import_plugin(str(path))
    assert os.environ[plugins.ENV] == str(path)  # handed down to child processes
    small = dict(dataset="digits", model="mlp", clients=4, rounds=2, lr=0.05, batch_size=20, device="cpu")
    plain = fedloom.run(**small).records
    assert fedloom.run(**small, algorithm="file-avg", options={"file-avg": {"step": 1.0}}).records == plain
    assert fedloom.run(**small, algorithm="file-avg").records != plain
    sys.modules.pop("fedloom_test_file_plugin", None)


def test_import_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                    isolated: pytest.MonkeyPatch) -> None:
    assert main(["list", "--import", str(tmp_path / "missing.py")]) == 2
    assert capsys.readouterr().err.strip() == f"fedloom: error: --import {tmp_path / 'missing.py'}: no such file"
    bad = tmp_path / "fedloom_broken_plugin.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="fedloom_broken_plugin.py failed: RuntimeError: boom"):
        plugins.import_plugin(str(bad))
    with pytest.raises(ConfigError, match="no such module"):
        plugins.import_plugin("fedloom_no_such_plugin_module")


def test_specs_are_read_before_the_parser() -> None:
    assert plugins.specs_from_argv(["run", "--import", "a", "--import=b.py", "--", "--import", "c"]) == ["a", "b.py"]


@pytest.mark.slow  # bench runs are fresh Python processes (~10 s each here with torch's import)
def test_bench_runs_import_plugins_in_their_own_processes(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          isolated: pytest.MonkeyPatch) -> None:
    """One algorithm from an installed distribution (entry point), one from --import FILE: both run in the
    grid's run processes, which inherit the environment (sys.path via PYTHONPATH, $FEDLOOM_IMPORT)."""
    installed_plugin(tmp_path / "site", "fedloom_test_grid_ep", "grid-ep")
    isolated.syspath_prepend(str(tmp_path / "site"))
    isolated.setenv("PYTHONPATH", str(tmp_path / "site"))
    path = tmp_path / "fedloom_test_grid_plugin.py"
    path.write_text(PLUGIN.format(name="grid-avg"))
    grid = tmp_path / "g.toml"
    grid.write_text(textwrap.dedent(f"""
        [grid]
        workers = 2
        out = "{tmp_path / 'runs'}"
        [base]
        dataset = "digits"
        model = "mlp"
        clients = 3
        rounds = 1
        batch_size = 40
        device = "cpu"
        [axes]
        algorithm = ["grid-avg", "grid-ep"]
        """))
    assert main(["bench", str(grid), "--import", str(path)]) == 0, capsys.readouterr().err
    done = {json.loads(p.read_text())["algorithm"] for p in (tmp_path / "runs").glob("*/summary.json")}
    assert done == {"grid-avg", "grid-ep"}
    for module in ("fedloom_test_grid_plugin", "fedloom_test_grid_ep"):
        sys.modules.pop(module, None)
