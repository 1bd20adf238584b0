"""Communication topologies of serverless (gossip) rounds: a symmetric, doubly stochastic mixing matrix W per
topology, with Metropolis–Hastings weights W_ij = 1 / (1 + max(d_i, d_j)) on every edge and the rest of each
row on the diagonal (Xiao & Boyd, "Fast linear iterations for distributed averaging", 2004). Pure gossip
x ← Wx contracts the distance to consensus by |λ₂(W)| per step; ``spectral_gap`` = 1 − |λ₂|.

The decentralized issue adds exponential graphs, random regular and Erdős–Rényi graphs, time-varying matchings
and a bandwidth model on this module.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from fedloom.errors import ConfigError
from fedloom.registry import Registry

TOPOLOGIES: Registry[Callable[[int], list[set[int]]]] = Registry("topology")


@TOPOLOGIES.register("ring")
def ring(n: int) -> list[set[int]]:
    """Each node talks to its two neighbours on a cycle."""
    return [{(i - 1) % n, (i + 1) % n} - {i} for i in range(n)]


@TOPOLOGIES.register("torus")
def torus(n: int) -> list[set[int]]:
    """A 2-D torus of r × c nodes (r the largest divisor of n not above √n): four neighbours each."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    cols = n // rows
    if rows < 2:
        raise ConfigError(f"--topology torus needs a node count with a factor pair r x c, r >= 2 (got {n} clients)")
    grid = [[r * cols + c for c in range(cols)] for r in range(rows)]
    return [{grid[(r - 1) % rows][c], grid[(r + 1) % rows][c], grid[r][(c - 1) % cols], grid[r][(c + 1) % cols]}
            - {grid[r][c]} for r in range(rows) for c in range(cols)]


@TOPOLOGIES.register("complete")
def complete(n: int) -> list[set[int]]:
    """Everyone talks to everyone (gossip then equals exact averaging)."""
    return [set(range(n)) - {i} for i in range(n)]


def metropolis_hastings(neighbours: list[set[int]]) -> torch.Tensor:
    n = len(neighbours)
    w = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in neighbours[i]:
            w[i, j] = 1.0 / (1 + max(len(neighbours[i]), len(neighbours[j])))
        w[i, i] = 1.0 - float(w[i].sum())
    return w


def mixing_matrix(name: str, n: int) -> torch.Tensor:
    """The validated mixing matrix of topology ``name`` over ``n`` nodes."""
    if n < 2:
        raise ConfigError(f"a gossip round needs at least 2 clients, got {n}")
    neighbours = TOPOLOGIES.get(name)(n)
    for i, js in enumerate(neighbours):
        if any(i not in neighbours[j] for j in js):
            raise ConfigError(f"topology {name}: the neighbour relation is not symmetric")
    w = metropolis_hastings(neighbours)
    check_doubly_stochastic(w)
    return w


def check_doubly_stochastic(w: torch.Tensor) -> None:
    ones = torch.ones(w.shape[0], dtype=w.dtype)
    if not (torch.allclose(w, w.T) and torch.allclose(w @ ones, ones) and bool((w >= 0).all())):
        raise ConfigError("a mixing matrix must be symmetric, non-negative and doubly stochastic")


def second_eigenvalue(w: torch.Tensor) -> float:
    """|λ₂|: the second largest eigenvalue modulus of a symmetric mixing matrix."""
    values = torch.linalg.eigvalsh(w).abs().sort(descending=True).values
    return float(values[1]) if values.numel() > 1 else 0.0


def spectral_gap(w: torch.Tensor) -> float:
    return 1.0 - second_eigenvalue(w)


def degrees(w: torch.Tensor) -> list[int]:
    """Neighbours each node sends its message to (off-diagonal non-zeros of its row)."""
    off = w.clone()
    off.fill_diagonal_(0)
    return [int(c) for c in (off > 0).sum(dim=1)]
