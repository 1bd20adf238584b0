"""``fedloom flower new DIR``: a Flower app folder (pyproject.toml, the app modules, fedloom.toml) that ``flwr run
DIR`` runs in Flower's simulation runtime and, unchanged, on a SuperLink with SuperNodes (docs/deploy.md).

The app is two lines per side: ``server_app(config)`` and ``client_app(config)`` from fedloom.flower; the fedloom
config travels inside the app (Flower ships the folder to the SuperLink and the nodes as a FAB), so the server
and every node run the same config (their fingerprints are compared before the first round).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Optional

from fedloom.errors import ConfigError

PYPROJECT = '''[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "1.0.0"
description = "fedloom {algorithm} on {dataset} as a Flower app (made by fedloom flower new)"
dependencies = ["flwr==1.42.*", "fedloom[flower]"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedloom"

[tool.flwr.app.components]
serverapp = "{package}.server_app:app"
clientapp = "{package}.client_app:app"

# Flower run config: read by the server and every node alike. fedloom-config is the fedloom config file inside
# this folder; any other fedloom key here (or in flwr run --run-config "rounds=5") overrides the file's.
# round-timeout / connect-timeout (seconds) and on-lost ("drop" or "fail") steer how the server waits for nodes.
[tool.flwr.app.config]
fedloom-config = "fedloom.toml"
round-timeout = 600
connect-timeout = 120
on-lost = "drop"
out = ""  # the server's run folder ("": in memory); e.g. flwr run DIR --run-config 'out="runs/x"'
'''

SERVER = '''"""The ServerApp: fedloom's round loop with the clients on the Flower nodes."""

from pathlib import Path

from fedloom.flower import server_app

app = server_app(Path(__file__).parent.parent / "fedloom.toml", base=Path(__file__).parent.parent)
'''

CLIENT = '''"""The ClientApp: the clients of this node's partition (node config partition-id / num-partitions)."""

from pathlib import Path

from fedloom.flower import client_app

app = client_app(Path(__file__).parent.parent / "fedloom.toml", base=Path(__file__).parent.parent)
'''

DEFAULT_CONFIG = '''# the fedloom run (same keys as fedloom run's config files, docs/config.md)
algorithm = "fedavg"
dataset = "digits"
clients = 6
rounds = 3
local_epochs = 1
batch_size = 32
lr = 0.05
seed = 0
'''


def write_app(folder: Path, config: Optional[Path] = None) -> Path:
    """Write the app folder (which must not exist or be empty); returns it."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} exists and is not an empty folder; choose a new folder for the app")
    text = DEFAULT_CONFIG
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"config file {config} not found")
        text = config.read_text()
    from fedloom.api import make_config

    cfg = make_config(str(config) if config is not None else {"algorithm": "fedavg"})
    package = "fedloom_app"
    (folder / package).mkdir(parents=True)
    name = re.sub(r"[^a-z0-9]+", "-", folder.resolve().name.lower()).strip("-") or "fedloom-app"
    (folder / "pyproject.toml").write_text(PYPROJECT.format(name=name, package=package,
                                                            algorithm=cfg.algorithm, dataset=cfg.dataset))
    (folder / package / "__init__.py").write_text('"""A fedloom Flower app."""\n')
    (folder / package / "server_app.py").write_text(SERVER)
    (folder / package / "client_app.py").write_text(CLIENT)
    (folder / "fedloom.toml").write_text(text)
    return folder


def add_flower_parsers(sub: Any) -> None:
    """``fedloom flower new DIR [--config FILE]`` on the main parser's subcommands."""
    flower = sub.add_parser("flower", help="run fedloom algorithms as a Flower app (docs/deploy.md)",
                            allow_abbrev=False)
    actions = flower.add_subparsers(dest="flower_command", required=True)
    new = actions.add_parser("new", help="write a Flower app folder for flwr run", allow_abbrev=False)
    new.add_argument("folder", help="the app folder to create")
    new.add_argument("--config", default=None, help="the fedloom config file the app runs (default: FedAvg on digits)")


def cmd_flower(args: argparse.Namespace) -> int:
    folder = write_app(Path(args.folder), Path(args.config) if args.config else None)
    print(f"wrote the Flower app {folder}: flwr run {folder} (simulation), docs/deploy.md (SuperLink, SuperNodes)")
    return 0
