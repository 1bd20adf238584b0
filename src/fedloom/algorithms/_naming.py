"""Packing extra per-client tensors next to the model's parameters for one local-SGD call.

Methods that train more than the model in the same steps (pFedMe's w, APFL's v and α, FedRoD's personal
head, APPLE's DR vector) put those tensors in the parameter dict under a ``<tag>/`` prefix; the hooks split
them back out. Model parameters keep their names, so ``ctx.apply`` sees exactly the model.
"""

from __future__ import annotations

import torch

from fedloom.algorithms.tree import Params


def tagged(tag: str, params: Params) -> Params:
    return {f"{tag}/{name}": value for name, value in params.items()}


def untagged(tag: str, params: Params) -> Params:
    prefix = f"{tag}/"
    return {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)}


def is_model_name(name: str) -> bool:
    return "/" not in name


def model_part(params: Params) -> Params:
    return {name: value for name, value in params.items() if is_model_name(name)}


def sq_dist(a: Params, b: Params) -> torch.Tensor:
    """Σ_name ‖a[name] − b[name]‖², matched by name (states and broadcasts may list names in other orders)."""
    return sum(((a[name] - b[name]) ** 2).sum() for name in a)
