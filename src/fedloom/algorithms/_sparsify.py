"""Compressed gossip messages: top-k / random-k sparsification of a parameter tree, sent as a ``Compact`` wire
form (k float32 values and, unless the receiver can rebuild them from a shared seed, k int32 indices per tensor)
that decodes to the dense tree with zeros off the selected coordinates. ``ratio`` is the fraction kept, ρ = k/d
per tensor, k = max(1, ⌊ρ·d⌋) (GossipFL's compression/compression.py convention)."""

from __future__ import annotations

from functools import partial
from typing import Optional

import torch

from fedloom.algorithms.tree import Params
from fedloom.pipeline.wire import Compact, Payload

Indices = dict[str, torch.Tensor]


def kept(numel: int, ratio: float) -> int:
    return max(1, min(numel, int(numel * ratio)))


def top_k(params: Params, ratio: float) -> Indices:
    """Per tensor, the coordinates of the k largest magnitudes (ties to the lower index)."""
    return {name: torch.topk(t.reshape(-1).abs(), kept(t.numel(), ratio), sorted=False).indices.sort().values
            for name, t in params.items()}


def random_k(params: Params, ratio: float, generator: torch.Generator) -> Indices:
    """Per tensor, k coordinates drawn uniformly without replacement (names in sorted order, so the draw does
    not depend on dict order)."""
    return {name: torch.randperm(params[name].numel(), generator=generator)[:kept(params[name].numel(), ratio)]
            .sort().values for name in sorted(params)}


def gather(params: Params, indices: Indices) -> Params:
    return {name: params[name].reshape(-1)[indices[name]] for name in params}


def scatter(dense: Params, indices: Indices, values: Params) -> Params:
    """``dense`` with ``values`` written at ``indices`` (a copy)."""
    out = {}
    for name, t in dense.items():
        flat = t.reshape(-1).clone()
        flat[indices[name]] = values[name]
        out[name] = flat.reshape(t.shape)
    return out


def sparse_message(params: Params, indices: Indices, send_indices: bool = True) -> Compact:
    """The selected coordinates of ``params`` as a Compact message; its bytes are exactly the arrays sent."""
    arrays: Payload = {}
    for name in params:
        arrays[f"{name}/values"] = params[name].reshape(-1)[indices[name]].float()
        if send_indices:
            arrays[f"{name}/indices"] = indices[name].to(torch.int32)
    shapes = {name: tuple(t.shape) for name, t in params.items()}
    kept_at = None if send_indices else {name: idx.clone() for name, idx in indices.items()}
    return Compact(arrays, partial(_decode, shapes, kept_at))


def _decode(shapes: dict[str, tuple[int, ...]], indices: Optional[Indices], arrays: Payload) -> Params:
    """The dense tree (zeros off the sent coordinates). Without sent indices the receiver knows them from the
    shared seed; the simulation keeps them beside the decoder."""
    out = {}
    for name, shape in shapes.items():
        idx = arrays[f"{name}/indices"].long() if indices is None else indices[name]
        flat = torch.zeros(int(torch.tensor(shape).prod()) if shape else 1)
        flat[idx] = arrays[f"{name}/values"]
        out[name] = flat.reshape(shape)
    return out
