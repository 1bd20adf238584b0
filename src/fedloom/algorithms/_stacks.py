"""Server-side per-client memory as stacked trees: one tensor per parameter with a leading client axis."""

from __future__ import annotations

import torch

from fedloom.algorithms.tree import Params


def repeated(params: Params, count: int) -> Params:
    """``count`` copies of ``params`` stacked along a new leading axis."""
    return {name: value.detach().unsqueeze(0).repeat(count, *([1] * value.dim())) for name, value in params.items()}


def row(stack: Params, index: int) -> Params:
    return {name: value[index] for name, value in stack.items()}


def with_rows(stack: Params, rows: dict[int, Params]) -> Params:
    """A copy of ``stack`` whose rows ``rows`` (client id -> params) are replaced."""
    out = {name: value.clone() for name, value in stack.items()}
    for index, params in rows.items():
        for name, value in params.items():
            out[name][index] = value.detach()
    return out


def flattened(stack: Params) -> torch.Tensor:
    """[clients, total parameter count]: each client's parameters as one vector."""
    return torch.cat([value.flatten(1) for value in stack.values()], dim=1)


def weighted_rows(weights: torch.Tensor, stack: Params) -> Params:
    """Σ_k weights[k] · stack[k], per parameter."""
    return {name: torch.tensordot(weights.to(value.dtype), value, dims=1) for name, value in stack.items()}
