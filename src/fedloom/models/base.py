"""Model registry and the body/head split shared by every model."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from fedloom.registry import Registry
from fedloom.seeding import derive_seed

MODELS: Registry[type] = Registry("model")

HEAD_PREFIX = "head."
BODY_PREFIX = "body."


class SplitModel(nn.Module):
    """``head(body(x))``. ``feature_dim`` is the width of the representation the head sees."""

    def __init__(self, body: nn.Module, head: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor, part: str = "all") -> torch.Tensor:
        """part='all': logits; 'body': features of x; 'head': logits from features x.

        One forward with a selector (rather than extra methods) so that torch.func.functional_call, which
        only calls forward, can run each half with an explicit parameter dict.
        """
        if part == "all":
            return self.head(self.body(x))
        if part == "body":
            return self.body(x)
        if part == "head":
            return self.head(x)
        raise ValueError(f"unknown model part {part!r}")


def is_head(name: str) -> bool:
    return name.startswith(HEAD_PREFIX)


def is_body(name: str) -> bool:
    return name.startswith(BODY_PREFIX)


def flat_size(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def build_model(name: str, options: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
                seed: int) -> SplitModel:
    """Build a registered model with parameters drawn from the (seed, 'model-init') stream.

    The global torch RNG is forked so that building a model never disturbs other random state.
    """
    from fedloom.config import make_component

    spec = make_component(MODELS, name, options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, -1, -1, "model-init"))
        return spec.build(tuple(input_shape), int(num_classes))


def default_model_for(input_shape: tuple[int, ...]) -> str:
    """cnn for images at least 28x28, mlp for small images, logreg for flat feature vectors."""
    if len(input_shape) == 3 and min(input_shape[1:]) >= 28:
        return "cnn"
    if len(input_shape) == 3:
        return "mlp"
    return "logreg"
