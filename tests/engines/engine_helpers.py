"""Run the same small experiment on different engines and compare."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from fedloom.engines import ENGINES, EngineOptions
from fedloom.run import Experiment, initial_round, step_round

from helpers import make_experiment


def on_engine(engine: str, engine_options: EngineOptions = EngineOptions(), **overrides: Any) -> Experiment:
    exp = make_experiment(**overrides)
    return dataclasses.replace(exp, engine=ENGINES.get(engine)(exp.runtime, engine_options))


def run_records(exp: Experiment, rounds: int) -> tuple[list[dict], dict]:
    server, record, _ = initial_round(exp)
    records, totals = [record], {}
    for r in range(1, rounds + 1):
        out = step_round(exp, server, r, totals)
        server = out.server
        records.append(out.record)
    exp.engine.close()
    return records, server.state.params


def max_param_diff(a: dict, b: dict) -> float:
    return max((float((a[k] - b[k]).abs().max()) for k in a), default=0.0)


def assert_records_close(a: list[dict], b: list[dict], tol: float) -> None:
    for ra, rb in zip(a, b, strict=True):
        assert ra["round"] == rb["round"]
        for key in ("accuracy", "loss", "bytes_up", "bytes_down"):
            if key in ra:
                assert abs(ra[key] - rb[key]) <= tol * max(1.0, abs(ra[key])), (key, ra[key], rb[key])


def params_equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)
