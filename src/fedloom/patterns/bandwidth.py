"""The communication model of serverless rounds, and GossipFL's bandwidth-aware matching.

Bandwidth matrix B (``--gossip.bandwidth``; B[i, j] is the bandwidth of a transfer i → j, in MB/s):

* ``random``: symmetric, off-diagonal entries uniform in [0, ``bandwidth_max``) (GossipFL's random setting,
  [0, 5)), drawn from the run seed;
* ``measured``: the 14-node matrix GossipFL's experiments use (``data/gossipfl_14_nodes.csv``, its source stated
  in the file); a run with n ≤ 14 nodes uses the top-left n × n block;
* ``file``: a CSV (``#`` comments) or ``.npy`` n × n matrix (``--gossip.bandwidth-file``);
* ``none``: no bandwidth (simulated communication time 0).

Communication is synchronous: an iteration's simulated communication time is that of its slowest transfer,
max over (i → j) of bytes_ij / B_ij (every link is assumed to work in parallel).

``saps`` (the topology): GossipFL's bandwidth-aware gossip matching (Tang, Shi, Li, Chu, "GossipFL: A
Decentralized Federated Learning Framework With Sparsified and Adaptive Communication", IEEE TPDS 34(3), 2023;
called SAPS-PSGD in the official code). Every iteration t each node gets exactly one peer:

1. the recent-match graph holds the pairs matched within the last ``window`` − 1 iterations (R_ij > t − T);
2. if it is connected, the candidate pairs are those whose bandwidth exceeds ``bandwidth_threshold`` in both
   directions; if not, the candidates are the pairs that join two of its components (pairs not matched within
   the window, chosen so that the next window is connected again — the official code takes every overdue
   pair; this is the subset of them that reconnects);
3. the nodes are split into two random halves and a maximum bipartite matching over the candidate pairs is found
   with the pairs in a random order (the official code randomises edge weights and runs a max-flow);
4. nodes left unmatched are paired at random across the halves (any pair; the official code completes the
   matching from the remaining edges), so the matching is perfect (one node sits out when n is odd).

The matching depends on the previous ones (the stamps R). It draws from the round's seeded stream and replays
the past iterations after a resume, so the sequence is the same on every engine and after a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from fedloom.errors import ConfigError
from fedloom.patterns.topology import (TOPOLOGIES, GraphSpec, Neighbours, Topology, components, is_connected,
                                       pairs_to_neighbours)
from fedloom.seeding import numpy_generator

MEASURED_FILE = Path(__file__).parent / "data" / "gossipfl_14_nodes.csv"
MEGABYTE = 1e6


def bandwidth_matrix(kind: str, n: int, seed: int, path: str = "", high: float = 5.0) -> Optional[np.ndarray]:
    """The run's bandwidth matrix (None for ``none``); ConfigError for a file that does not fit ``n``."""
    if kind == "none":
        return None
    if kind == "random":
        upper = np.triu(numpy_generator(seed, -1, -1, "bandwidth").random((n, n)) * high, k=1)
        return upper + upper.T
    if kind == "measured":
        full = read_matrix(MEASURED_FILE)
        if n > full.shape[0]:
            raise ConfigError(f"--gossip.bandwidth measured holds GossipFL's {full.shape[0]}-node measurements; "
                              f"the run has {n} clients (use --gossip.bandwidth random or a file)")
        return full[:n, :n]
    if not path:
        raise ConfigError("--gossip.bandwidth file needs --gossip.bandwidth-file PATH (CSV or .npy, n x n)")
    return check_bandwidth(read_matrix(Path(path)), n, path)


def read_matrix(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ConfigError(f"bandwidth file {path} does not exist")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False).astype(np.float64)
        return np.loadtxt(path, delimiter=",", comments="#", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise ConfigError(f"bandwidth file {path} is not a numeric matrix: {exc}") from None


def check_bandwidth(b: np.ndarray, n: int, source: str) -> np.ndarray:
    if b.shape != (n, n):
        raise ConfigError(f"bandwidth file {source} has shape {tuple(b.shape)}, the run needs {n} x {n} "
                          f"(one row and column per client)")
    off = b[~np.eye(n, dtype=bool)]
    if not (np.isfinite(off).all() and (off > 0).all()):
        raise ConfigError(f"bandwidth file {source}: every off-diagonal entry must be a finite positive bandwidth")
    return b


def communication_time(transfers: list[tuple[int, int, int]], bandwidth: Optional[np.ndarray]) -> float:
    """Seconds of a synchronous iteration: its slowest transfer (sender, receiver, bytes)."""
    if bandwidth is None or not transfers:
        return 0.0
    return max(nbytes / (float(bandwidth[i, j]) * MEGABYTE) for i, j, nbytes in transfers)


def bottleneck(neighbours: Neighbours, bandwidth: Optional[np.ndarray]) -> float:
    """The smallest bandwidth among the iteration's links (GossipFL's "real bandwidth threshold")."""
    links = [float(bandwidth[i, j]) for i, js in enumerate(neighbours) for j in js] if bandwidth is not None else []
    return min(links) if links else float("nan")


@TOPOLOGIES.register("saps")
class SapsMatching(Topology):
    """GossipFL's bandwidth-aware matching with a connectivity window (one peer per node per iteration)."""

    time_varying: ClassVar[bool] = True

    def __init__(self, n: int, spec: GraphSpec) -> None:
        super().__init__(n, spec)
        if spec.bandwidth is None:
            raise ConfigError("--topology saps matches by bandwidth: set --gossip.bandwidth random|measured|file")
        self.bandwidth = spec.bandwidth
        self._reset()

    def _reset(self) -> None:
        self.stamps = np.full((self.n, self.n), -np.inf)  # R_ij: the last iteration i and j were matched
        self.last = 0
        self.graphs: dict[int, Neighbours] = {}

    def graph(self, round_: int) -> Neighbours:
        if round_ in self.graphs:
            return self.graphs[round_]
        if round_ < self.last:
            self._reset()
        for t in range(self.last + 1, round_ + 1):  # replays the iterations a resumed run skipped
            self.graphs = {t: self._match(t)}
            self.last = t
        return self.graphs[round_]

    def recent_graph(self, t: int) -> Neighbours:
        close = np.argwhere(self.stamps > t - self.spec.window)
        return pairs_to_neighbours(self.n, [(int(i), int(j)) for i, j in close if i < j])

    def _match(self, t: int) -> Neighbours:
        rng = numpy_generator(self.spec.seed, t, -1, "saps-matching")
        recent = self.recent_graph(t)
        if is_connected(recent):
            both = np.minimum(self.bandwidth, self.bandwidth.T)
            allowed = both > self.spec.bandwidth_threshold
        else:
            label = np.empty(self.n, dtype=int)
            for k, part in enumerate(components(recent)):
                label[list(part)] = k
            allowed = label[:, None] != label[None, :]
        pairs = random_matching(allowed, rng)
        for i, j in pairs:
            self.stamps[i, j] = self.stamps[j, i] = t
        return pairs_to_neighbours(self.n, pairs)


def random_matching(allowed: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]]:
    """A maximum matching over the allowed pairs between two random halves of the nodes (augmenting paths,
    pairs tried in a random order), completed at random across the halves."""
    n = allowed.shape[0]
    order = rng.permutation(n)
    left, right = [int(v) for v in order[: n // 2]], [int(v) for v in order[n // 2:]]
    options = {u: [int(v) for v in rng.permutation(right) if allowed[u, v]] for u in left}
    partner: dict[int, int] = {}  # right node -> left node

    def augment(u: int, seen: set[int]) -> bool:
        for v in options[u]:
            if v not in seen:
                seen.add(v)
                if v not in partner or augment(partner[v], seen):
                    partner[v] = u
                    return True
        return False

    for u in left:
        augment(u, set())
    pairs = [(u, v) for v, u in partner.items()]
    free_left = [u for u in left if u not in partner.values()]
    free_right = [v for v in rng.permutation(right).tolist() if v not in partner]
    pairs += list(zip(free_left, free_right))
    return pairs
