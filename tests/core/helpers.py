"""Building small real experiments (scikit-learn digits) for algorithm and engine tests."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from fedloom.config import RunConfig
from fedloom.run import Experiment, build_experiment, load_data, resolve_config


def small_config(**overrides: Any) -> RunConfig:
    base = dict(dataset="digits", model="mlp", clients=4, rounds=2, partition="dirichlet", alpha=0.5,
                batch_size=16, lr=0.05, seed=3, device="cpu", threads=1)
    options = overrides.pop("options", {})
    cfg = RunConfig(**{**base, **overrides}, options=options)
    return resolve_config(cfg)


def make_experiment(**overrides: Any) -> Experiment:
    cfg = small_config(**overrides)
    data = load_data(cfg, torch.device("cpu"))
    return build_experiment(cfg, data, torch.device("cpu"))


def with_algorithm(exp: Experiment, algorithm: Any) -> Experiment:
    return dataclasses.replace(exp, algorithm=algorithm)
