"""Shared helpers for the tests of FedALA, FedCP, GPFL, FedDBE and FedAPEN: small digits experiments, one
round by hand, and an end-to-end CLI run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "core"))

from fedloom.algorithms.base import ServerResult  # noqa: E402
from fedloom.cli import main  # noqa: E402
from fedloom.rounds import federation_of  # noqa: E402
from fedloom.run import Experiment  # noqa: E402

from helpers import make_experiment  # noqa: E402

CLIENTS = [0, 1, 2, 3]


def experiment(algorithm: str, **overrides: Any) -> Experiment:
    """digits, mlp, 4 Dirichlet clients, batch 16, lr 0.05 (tests/core/helpers.small_config)."""
    return make_experiment(algorithm=algorithm, **overrides)


def start(exp: Experiment) -> ServerResult:
    return exp.algorithm.init_server(exp.runtime.init_params, federation_of(exp.data))


def play_round(exp: Experiment, server: ServerResult, round_: int) -> tuple[Any, ServerResult]:
    """Train every client on ``server``'s broadcast, then the server step: (cohort result, new server)."""
    result = exp.engine.train_cohort(exp.algorithm, server.broadcast, CLIENTS, round_)
    return result, exp.algorithm.server_update(server.state, result.uploads)


def cli_summary(tmp_path: Path, algorithm: str, *extra: str) -> dict[str, Any]:
    """A 3-round run on digits (mlp, 5 clients) through the CLI; its summary.json."""
    out = tmp_path / algorithm
    args = ["run", "--algorithm", algorithm, "--dataset", "digits", "--model", "mlp", "--clients", "5",
            "--rounds", "3", "--lr", "0.05", "--batch-size", "20", "--device", "cpu", "--quiet",
            "--out", str(out), *extra]
    assert main(args) == 0
    return json.loads((out / "summary.json").read_text())
