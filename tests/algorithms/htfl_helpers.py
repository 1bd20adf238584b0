"""Small mixed-architecture federations for the HtFL method tests: digits (8×8, 64 features), clients
alternating an MLP with 64 hidden units and a logistic regression, whose bodies both output D = 64."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from fedloom.algorithms.base import ServerResult
from fedloom.cli import main
from fedloom.engines.base import CohortResult
from fedloom.run import Experiment, federation_of

from helpers import make_experiment

MIXED_MODELS = {"mlp": {"hidden": 64, "layers": 1}}
D = 64  # the common feature width (the MLP's hidden layer, the logistic regression's flattened input)
C = 10


def mixed(name: str, rounds: int = 2, clients: int = 4, model: str = "mlp,logreg", **hyper: Any) -> Experiment:
    return make_experiment(algorithm=name, rounds=rounds, clients=clients, model=model,
                           options={name: hyper, **MIXED_MODELS})


def start(exp: Experiment) -> ServerResult:
    return exp.algorithm.init_server(exp.runtime.init_params, federation_of(exp.data))


def train_round(exp: Experiment, server: ServerResult, round_: int,
                cohort: Optional[list[int]] = None) -> tuple[CohortResult, ServerResult]:
    cohort = list(range(exp.data.num_clients)) if cohort is None else cohort
    result = exp.engine.train_cohort(exp.algorithm, server.broadcast, cohort, round_)
    return result, exp.algorithm.server_update(server.state, result.uploads)


def held_classes(exp: Experiment, client: int) -> int:
    return int((exp.runtime.client_context(client, 1).train_label_counts() > 0).sum())


def table_bytes(exp: Experiment, width: int) -> int:
    """Σ over clients of k_i rows of ``width`` float32 plus k_i one-byte class ids."""
    return sum(held_classes(exp, c) * (4 * width + 1) for c in range(exp.data.num_clients))


def cli_metrics(tmp: Path, name: str, *extra: str, engine: str = "serial") -> list[dict]:
    out = tmp / f"{name}-{engine}-{len(list(tmp.iterdir())) if tmp.exists() else 0}"
    args = ["run", "--algorithm", name, "--dataset", "digits", "--model", "mlp,logreg", "--mlp.hidden", "64",
            "--mlp.layers", "1", "--clients", "4", "--rounds", "2", "--lr", "0.05", "--batch-size", "16",
            "--device", "cpu", "--threads", "1", "--quiet", "--seed", "5", "--out", str(out), *extra]
    if engine == "processes":
        args += ["--engine", "processes", "--workers", "2", "--worker-timeout", "600"]  # a shared, loaded machine
    assert main(args) == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def predictions(exp: Experiment, params: Any, client: int) -> torch.Tensor:
    ctx = exp.runtime.client_context(client, 1)
    x, _ = ctx.data(ctx.test_indices)
    with torch.no_grad():
        return exp.runtime.for_client(client).apply(params, x).argmax(1)
