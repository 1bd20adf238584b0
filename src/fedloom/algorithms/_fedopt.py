"""Small helpers shared by the federated-optimization algorithms (SCAFFOLD, FedNova, FedDyn, the server
optimizers): per-client scaling that also works on a vectorized pack, and an inner product matched by name."""

from __future__ import annotations

from typing import Any

import torch

from fedloom.algorithms.tree import Tree, tree_map


def per_client_scale(ctx: Any, tree: Tree, factor: Any) -> Tree:
    """``tree * factor`` where ``factor`` is one number per client: a scalar on the serial engine, a [n] vector
    on a vectorized pack (``ctx.per_client`` maps the product over the client axis there)."""
    factor = torch.as_tensor(factor, dtype=torch.float32)
    return ctx.per_client(lambda t, f: tree_map(lambda leaf: leaf * f.to(leaf.dtype), t), tree, factor)


def tree_dot(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_name ⟨a[name], b[name]⟩ over the names of ``b`` (differentiable in both)."""
    return sum(((a[name] * b[name]).sum() for name in b), torch.zeros((), device=next(iter(b.values())).device))


def as_count(value: Any) -> torch.Tensor:
    """A local-SGD count metric (``steps``: a float, or a [n] tensor on a pack) as a float32 tensor."""
    return torch.as_tensor(value).to(torch.float32)
