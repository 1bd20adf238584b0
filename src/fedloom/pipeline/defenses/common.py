"""Shared pieces of the defenses: uploads as one flat vector each, weighted combinations back into trees, and
the admitted-client rates a selecting defense reports.

Uploads are taken to be updates Δ relative to ``ctx.global_params`` (what FedAvg and most averaging algorithms
send); a defense never needs the global model except FLTrust (to train its own update) and none edits it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from fedloom.algorithms.tree import Tree, tree_map
from fedloom.pipeline.context import AggregationContext

#: (client id, upload, weight), sorted by client id (the aggregator seam's items).
Items = list[tuple[int, Tree, float]]


def leaves(tree: Tree) -> list[torch.Tensor]:
    """The tensors of a tree in sorted-key order (the same order for every upload of a round)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    return [leaf for key in sorted(tree) for leaf in leaves(tree[key])]


def named_leaves(tree: Tree, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """(dotted path, tensor) pairs in the order of :func:`leaves` (Snowball selects layers by name)."""
    if isinstance(tree, torch.Tensor):
        return [(prefix, tree)]
    return [pair for key in sorted(tree)
            for pair in named_leaves(tree[key], f"{prefix}.{key}" if prefix else str(key))]


def flat(tree: Tree) -> torch.Tensor:
    """One float32 CPU vector of every coordinate of ``tree``."""
    return torch.cat([leaf.reshape(-1).float().cpu() for leaf in leaves(tree)])  # selection maths on CPU


def flat_matrix(items: Items) -> torch.Tensor:
    """[n, d]: row i is upload i flattened."""
    return torch.stack([flat(tree) for _, tree, _ in items])


def combine(items: Items, coefficients: Sequence[float] | torch.Tensor) -> Tree:
    """Σ_i c_i · u_i as a tree (float64 sums, float32 result, like the plain mean)."""
    coeffs = torch.as_tensor(coefficients, dtype=torch.float64)
    trees = [tree for _, tree, _ in items]

    def mix(*parts: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(parts[0].shape, dtype=torch.float64, device=parts[0].device)
        for c, part in zip(coeffs.tolist(), parts):
            if c != 0.0:
                total += c * part.double()
        return total.float()

    return tree_map(mix, *trees)


def weighted_mean(items: Items, chosen: Sequence[int], use_weights: bool = True) -> Tree:
    """The (sample-weighted, or plain) mean of the uploads at positions ``chosen``."""
    weights = torch.zeros(len(items), dtype=torch.float64)
    for position in chosen:
        weights[position] = items[position][2] if use_weights else 1.0
    return combine(items, weights / weights.sum())


def clip_factors(norms: torch.Tensor, bound: float) -> torch.Tensor:
    """min(1, bound/‖u‖) per upload (an upload of norm 0 is left as it is)."""
    return torch.clamp(bound / norms.clamp_min(1e-30), max=1.0)


def add_noise(tree: Tree, std: float, generator: torch.Generator) -> Tree:
    """tree + N(0, std²) on every coordinate, drawn from ``generator`` (leaves in sorted-key order)."""
    if std <= 0:
        return tree
    noise = {id(leaf): torch.randn(leaf.shape, generator=generator, dtype=torch.float32) * std
             for leaf in leaves(tree)}
    return tree_map(lambda leaf: leaf + noise[id(leaf)].to(leaf.device), tree)


def report_admitted(ctx: Optional[AggregationContext], items: Items, admitted: Sequence[int]) -> None:
    """Record which uploads a selecting defense kept, as rates over the round's cohort (ground truth from
    ``ctx.malicious``, which only metrics read):

    * ``admitted_tpr`` = admitted benign / benign in the cohort (1.0: no benign client was wrongly rejected);
    * ``admitted_fpr`` = admitted malicious / malicious in the cohort (0.0: every attacker was rejected);
    * ``admitted`` = how many uploads were kept.

    A rate whose denominator is 0 (no attacker sampled this round) is NaN."""
    if ctx is None:
        return
    kept = {items[p][0] for p in admitted}
    ids = [client for client, _, _ in items]
    bad = [c for c in ids if c in ctx.malicious]
    good = [c for c in ids if c not in ctx.malicious]
    ctx.metrics["admitted"] = float(len(kept))
    ctx.metrics["admitted_tpr"] = _rate(sum(c in kept for c in good), len(good))
    ctx.metrics["admitted_fpr"] = _rate(sum(c in kept for c in bad), len(bad))


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def generator_or_default(ctx: Optional[AggregationContext], purpose: str) -> torch.Generator:
    """The round's aggregation stream for ``purpose``; a fixed stream when a unit test passes no context."""
    if ctx is not None:
        return ctx.generator(purpose)
    gen = torch.Generator()
    gen.manual_seed(0)
    return gen
