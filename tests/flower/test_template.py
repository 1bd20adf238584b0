"""``fedloom flower new DIR``: the app folder Flower runs (pyproject components and config, the fedloom config),
and one clear error for a folder in use; importing the CLI never imports flwr."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedloom.cli import main


def test_flower_new_writes_a_flower_app(tmp_path: Path) -> None:
    config = tmp_path / "cfg.toml"
    config.write_text('algorithm = "ditto"\ndataset = "digits"\nclients = 4\n')
    assert main(["flower", "new", str(tmp_path / "My App"), "--config", str(config)]) == 0
    app = tmp_path / "My App"
    project = tomllib.loads((app / "pyproject.toml").read_text())
    flwr = project["tool"]["flwr"]["app"]
    assert project["project"]["name"] == "my-app"
    assert flwr["components"] == {"serverapp": "fedloom_app.server_app:app",
                                  "clientapp": "fedloom_app.client_app:app"}
    assert flwr["config"]["fedloom-config"] == "fedloom.toml" and flwr["config"]["on-lost"] == "drop"
    assert (app / "fedloom.toml").read_text() == config.read_text()
    assert "server_app(" in (app / "fedloom_app" / "server_app.py").read_text()
    assert "client_app(" in (app / "fedloom_app" / "client_app.py").read_text()


def test_flower_new_refuses_a_folder_in_use(tmp_path: Path, capsys) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "x").write_text("mine")
    assert main(["flower", "new", str(tmp_path / "app")]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert main(["flower", "new", str(tmp_path / "b"), "--config", str(tmp_path / "none.toml")]) == 2
    assert "config file" in capsys.readouterr().err and not (tmp_path / "b").exists()


@pytest.mark.slow  # a fresh interpreter importing fedloom
def test_cli_does_not_import_flwr() -> None:
    code = "import sys, fedloom.cli; fedloom.cli.make_parser(); print('flwr' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
