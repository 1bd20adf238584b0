"""One-round drivers for the pFL baseline tests: a 4-client digits experiment with a small MLP."""

from __future__ import annotations

from typing import Any, Optional

import torch

from fedloom.algorithms.base import ServerResult
from fedloom.algorithms.tree import Params
from fedloom.engines.base import CohortResult
from fedloom.run import Experiment, federation_of

from helpers import make_experiment

SMALL_MLP = {"mlp": {"hidden": 32, "layers": 1}}


def experiment(name: str, rounds: int = 2, **hyper: Any) -> Experiment:
    return make_experiment(algorithm=name, rounds=rounds, options={name: hyper, **SMALL_MLP})


def start(exp: Experiment) -> ServerResult:
    return exp.algorithm.init_server(exp.runtime.init_params, federation_of(exp.data))


def train_round(exp: Experiment, server: ServerResult, round_: int,
                cohort: Optional[list[int]] = None) -> tuple[CohortResult, ServerResult]:
    cohort = list(range(exp.data.num_clients)) if cohort is None else cohort
    result = exp.engine.train_cohort(exp.algorithm, server.broadcast, cohort, round_)
    return result, exp.algorithm.server_update(server.state, result.uploads)


def eval_params(exp: Experiment, server: ServerResult, client: int, round_: int) -> Params:
    ctx = exp.runtime.client_context(client, round_)
    state = exp.runtime.store.load(client)
    if state is None:
        state = exp.algorithm.init_client_state(exp.runtime.init_params, 0)
    return exp.algorithm.eval_params(ctx, server.broadcast.for_client(client), state)


def same(a: Params, b: Params, **tolerance: Any) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], **tolerance) for k in a)


def distance(a: Params, b: Params) -> float:
    return float(sum((a[k] - b[k]).pow(2).sum() for k in a).sqrt())


def train_loss(exp: Experiment, client: int, params: Params) -> float:
    sums = exp.runtime.client_context(client, 1).evaluate(params, "train")
    return sums["loss_sum"] / sums["count"]
