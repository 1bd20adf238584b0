"""Communication topologies of serverless (gossip) rounds, registered by name (``--topology``).

A topology answers each node's neighbour set for a round; ``mixing_matrix`` turns it into a symmetric, doubly
stochastic W with one of two weight rules (``--gossip.weights``):

* ``metropolis``: W_ij = 1 / (1 + max(d_i, d_j)) on every edge (Metropolis–Hastings);
* ``uniform``: W_ij = 1 / (1 + d_max) on every edge (the "maximum-degree" weights; on a d-regular graph every
  neighbour and the node itself get 1 / (d + 1));

the rest of each row goes on the diagonal (Xiao & Boyd, "Fast linear iterations for distributed averaging",
Systems & Control Letters 2004). Pure gossip x ← Wx contracts the distance to consensus by |λ₂(W)| per step;
``spectral_gap`` = 1 − |λ₂|. Static topologies must be connected (ConfigError otherwise). Time-varying ones
(``time_varying = True``: a random matching per iteration, GossipFL's bandwidth-aware matching in
``bandwidth.py``) draw their graph from the round's own seeded stream, so every engine and a resumed run see
the same graphs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import torch

from fedloom.errors import ConfigError
from fedloom.registry import Registry
from fedloom.seeding import numpy_generator

Neighbours = list[set[int]]


@dataclass(frozen=True)
class GraphSpec:
    """What a topology may read: the random-graph parameters, the run seed and the communication model."""

    degree: int = 4  # random-regular
    edge_prob: float = 0.3  # erdos-renyi
    seed: int = 0
    bandwidth: Optional[np.ndarray] = None  # bandwidth-aware matchings (bandwidth.py)
    bandwidth_threshold: float = 3.0
    window: int = 3


class Topology:
    """A (possibly time-varying) graph over ``n`` nodes. Subclasses implement ``graph(round_)``; static ones
    draw once (their randomness from the round −1 stream) and are checked for connectivity."""

    time_varying: ClassVar[bool] = False

    def __init__(self, n: int, spec: GraphSpec) -> None:
        self.n, self.spec = n, spec

    def graph(self, round_: int) -> Neighbours:
        raise NotImplementedError


class StaticTopology(Topology):
    def __init__(self, n: int, spec: GraphSpec) -> None:
        super().__init__(n, spec)
        self._graph = self.build(n, spec, numpy_generator(spec.seed, -1, -1, "topology"))
        name = getattr(type(self), "registry_name", type(self).__name__)
        check_symmetric(self._graph, name)
        if not is_connected(self._graph):
            raise ConfigError(f"topology {name} over {n} nodes is not connected: gossip could never reach "
                              f"consensus{self.connect_hint()}")

    def build(self, n: int, spec: GraphSpec, rng: np.random.Generator) -> Neighbours:
        raise NotImplementedError

    def connect_hint(self) -> str:
        return ""

    def graph(self, round_: int) -> Neighbours:
        return self._graph


TOPOLOGIES: Registry[type] = Registry("topology")


@TOPOLOGIES.register("ring")
class Ring(StaticTopology):
    """Each node talks to its two neighbours on a cycle."""

    def build(self, n: int, spec: GraphSpec, rng: np.random.Generator) -> Neighbours:
        return [{(i - 1) % n, (i + 1) % n} - {i} for i in range(n)]


@TOPOLOGIES.register("torus")
class Torus(StaticTopology):
    """A 2-D torus of r × c nodes (r the largest divisor of n not above √n): four neighbours each."""

    def build(self, n: int, spec: GraphSpec, rng: np.random.Generator) -> Neighbours:
        rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
        cols = n // rows
        if rows < 2:
            raise ConfigError(f"--topology torus needs a node count with a factor pair r x c, r >= 2 "
                              f"(got {n} clients)")
        grid = [[r * cols + c for c in range(cols)] for r in range(rows)]
        return [{grid[(r - 1) % rows][c], grid[(r + 1) % rows][c], grid[r][(c - 1) % cols],
                 grid[r][(c + 1) % cols]} - {grid[r][c]} for r in range(rows) for c in range(cols)]


@TOPOLOGIES.register("complete")
class Complete(StaticTopology):
    """Everyone talks to everyone (gossip then equals exact averaging)."""

    def build(self, n: int, spec: GraphSpec, rng: np.random.Generator) -> Neighbours:
        return [set(range(n)) - {i} for i in range(n)]


@TOPOLOGIES.register("star")
class Star(StaticTopology):
    """Node 0 is the hub, every other node talks to it only."""

    def build(self, n: int, spec: GraphSpec, rng: np.random.Generator) -> Neighbours:
        return [set(range(1, n))] + [{0} for _ in range(1, n)]


@TOPOLOGIES.register("exponential")
class Exponential(StaticTopology):
    """Node i talks to i ± 2^k (mod n) for every 2^k < n (the undirected exponential graph of Assran et al.,
    "Stochastic Gradient Push", ICML 2019; Ying et al., NeurIPS 2021): degree 2·log₂n − 1 when n is a power of
    two, spectral gap independent of n up to a log factor."""

    def build(self, n: int, spec: GraphSpec, rng: np.random.Generator) -> Neighbours:
        hops = [2 ** k for k in range(max(1, (n - 1).bit_length())) if 2 ** k < n]
        return [{(i + h) % n for h in hops} | {(i - h) % n for h in hops} - {i} for i in range(n)]


@TOPOLOGIES.register("random-regular")
class RandomRegular(StaticTopology):
    """A connected random d-regular graph (``--gossip.degree``), drawn from the seed by the pairing model with
    rejection of loops, double edges and disconnected draws."""

    attempts: ClassVar[int] = 2000

    def build(self, n: int, spec: GraphSpec, rng: np.random.Generator) -> Neighbours:
        d = spec.degree
        if not 1 <= d <= n - 1 or (n * d) % 2:
            raise ConfigError(f"--topology random-regular: no {d}-regular graph has {n} nodes (needs "
                              f"1 <= degree <= n-1 and n*degree even); change --gossip.degree")
        if d == 1 and n > 2:
            raise ConfigError(f"--topology random-regular: a 1-regular graph on {n} nodes is a set of disjoint "
                              f"pairs, never connected; use --gossip.degree >= 2")
        for _ in range(self.attempts):
            stubs = rng.permutation(np.repeat(np.arange(n), d)).reshape(-1, 2)
            if (stubs[:, 0] == stubs[:, 1]).any():
                continue
            edges = {tuple(sorted(map(int, pair))) for pair in stubs}
            if len(edges) < len(stubs):
                continue
            graph = edges_to_neighbours(n, edges)
            if is_connected(graph):
                return graph
        raise ConfigError(f"--topology random-regular: no connected simple {d}-regular graph on {n} nodes found "
                          f"in {self.attempts} draws; change --gossip.degree")


@TOPOLOGIES.register("erdos-renyi")
class ErdosRenyi(StaticTopology):
    """G(n, p): every pair is an edge with probability ``--gossip.edge-prob``, drawn once from the seed."""

    def build(self, n: int, spec: GraphSpec, rng: np.random.Generator) -> Neighbours:
        upper = np.triu(rng.random((n, n)) < spec.edge_prob, k=1)
        return edges_to_neighbours(n, {(int(i), int(j)) for i, j in zip(*np.nonzero(upper))})

    def connect_hint(self) -> str:
        return (f" (edge_prob {self.spec.edge_prob}; G(n, p) is connected with high probability once p exceeds "
                f"ln(n)/n = {math.log(self.n) / self.n:.3f}: raise --gossip.edge-prob or change --seed)")


@TOPOLOGIES.register("matching")
class RandomMatching(Topology):
    """A fresh uniformly random perfect matching every iteration (each node one peer, ½ self ½ peer; with an
    odd node count one node sits the iteration out). Connected only over time."""

    time_varying: ClassVar[bool] = True

    def graph(self, round_: int) -> Neighbours:
        order = numpy_generator(self.spec.seed, round_, -1, "topology-matching").permutation(self.n)
        return pairs_to_neighbours(self.n, [(int(a), int(b)) for a, b in zip(order[0::2], order[1::2])])


# ---------------------------------------------------------------------------------------------- graph helpers
def edges_to_neighbours(n: int, edges: set[tuple[int, int]]) -> Neighbours:
    neighbours: Neighbours = [set() for _ in range(n)]
    for i, j in edges:
        neighbours[i].add(j)
        neighbours[j].add(i)
    return neighbours


def pairs_to_neighbours(n: int, pairs: list[tuple[int, int]]) -> Neighbours:
    return edges_to_neighbours(n, {(min(a, b), max(a, b)) for a, b in pairs})


def is_connected(neighbours: Neighbours) -> bool:
    return len(component_of(neighbours, 0)) == len(neighbours)


def component_of(neighbours: Neighbours, start: int) -> set[int]:
    seen, frontier = {start}, [start]
    while frontier:
        node = frontier.pop()
        for other in neighbours[node] - seen:
            seen.add(other)
            frontier.append(other)
    return seen


def components(neighbours: Neighbours) -> list[set[int]]:
    left, parts = set(range(len(neighbours))), []
    while left:
        part = component_of(neighbours, min(left))
        parts.append(part)
        left -= part
    return parts


def check_symmetric(neighbours: Neighbours, name: str) -> None:
    for i, js in enumerate(neighbours):
        if any(i not in neighbours[j] or i == j for j in js):
            raise ConfigError(f"topology {name}: the neighbour relation is not symmetric (or has a self-loop)")


# ------------------------------------------------------------------------------------------- mixing matrices
def metropolis_hastings(neighbours: Neighbours) -> torch.Tensor:
    n = len(neighbours)
    w = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in neighbours[i]:
            w[i, j] = 1.0 / (1 + max(len(neighbours[i]), len(neighbours[j])))
        w[i, i] = 1.0 - float(w[i].sum())
    return w


def uniform_weights(neighbours: Neighbours) -> torch.Tensor:
    n, top = len(neighbours), max(len(js) for js in neighbours)
    w = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in neighbours[i]:
            w[i, j] = 1.0 / (1 + top)
        w[i, i] = 1.0 - float(w[i].sum())
    return w


WEIGHT_RULES = {"metropolis": metropolis_hastings, "uniform": uniform_weights}


def make_topology(name: str, n: int, spec: Optional[GraphSpec] = None) -> Topology:
    """The topology ``name`` over ``n`` nodes, validated (ConfigError before training)."""
    if n < 2:
        raise ConfigError(f"a gossip round needs at least 2 clients, got {n}")
    return TOPOLOGIES.get(name)(n, spec or GraphSpec())


def weights_of(neighbours: Neighbours, rule: str = "metropolis") -> torch.Tensor:
    w = WEIGHT_RULES[rule](neighbours)
    check_doubly_stochastic(w)
    return w


def mixing_matrix(name: str, n: int, spec: Optional[GraphSpec] = None, round_: int = 0,
                  rule: str = "metropolis") -> torch.Tensor:
    """The validated mixing matrix of topology ``name`` over ``n`` nodes at round ``round_``."""
    return weights_of(make_topology(name, n, spec).graph(round_), rule)


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

