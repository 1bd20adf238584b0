"""The communication model (bandwidth matrices, synchronous time, faults) and GossipFL's bandwidth-aware
matching: one peer per node, the recent-match graph connected within the window, replayable after a resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedloom.errors import ConfigError
from fedloom.patterns.bandwidth import (MEASURED_FILE, SapsMatching, bandwidth_matrix, bottleneck,
                                        communication_time)
from fedloom.patterns.gossip import with_faults
from fedloom.patterns.topology import GraphSpec, components, is_connected, mixing_matrix


def test_measured_matrix_is_gossipfls_14_nodes() -> None:
    b = bandwidth_matrix("measured", 14, seed=0)
    assert b.shape == (14, 14) and b[4, 8] == 132.5 and b[13, 0] == 0.1 and (np.diag(b) == 0).all()
    assert "wizard1203/GossipFL" in MEASURED_FILE.read_text()  # the source is stated beside the values


def test_random_bandwidth_is_symmetric_uniform_and_seeded() -> None:
    b = bandwidth_matrix("random", 20, seed=3, high=5.0)
    assert np.allclose(b, b.T) and (np.diag(b) == 0).all() and 0 <= b.min() and b.max() < 5.0
    assert np.array_equal(b, bandwidth_matrix("random", 20, seed=3)) and not np.array_equal(
        b, bandwidth_matrix("random", 20, seed=4))


def test_bandwidth_files_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "b.csv"
    np.savetxt(good, np.full((4, 4), 2.0) - 2 * np.eye(4), delimiter=",")
    assert bandwidth_matrix("file", 4, 0, str(good))[0, 1] == 2.0
    np.save(tmp_path / "b.npy", np.ones((4, 4)))
    assert bandwidth_matrix("file", 4, 0, str(tmp_path / "b.npy")).shape == (4, 4)
    with pytest.raises(ConfigError, match=r"shape \(4, 4\), the run needs 5 x 5"):
        bandwidth_matrix("file", 5, 0, str(good))
    with pytest.raises(ConfigError, match="does not exist"):
        bandwidth_matrix("file", 4, 0, str(tmp_path / "nope.csv"))
    with pytest.raises(ConfigError, match="14-node"):
        bandwidth_matrix("measured", 20, 0)


def test_communication_time_is_the_slowest_transfer() -> None:
    b = np.array([[0, 2.0, 8.0], [4.0, 0, 1.0], [8.0, 1.0, 0]])
    # 2 MB over 2 MB/s (0 -> 1) = 1 s, 2 MB over 4 MB/s (1 -> 0) = 0.5 s, 1 MB over 8 MB/s = 0.125 s
    assert communication_time([(0, 1, 2_000_000), (1, 0, 2_000_000), (0, 2, 1_000_000)], b) == pytest.approx(1.0)
    assert communication_time([(0, 1, 10)], None) == 0.0
    assert bottleneck([{1}, {0}, set()], b) == 2.0


def test_faults_move_lost_weight_to_the_receiver() -> None:
    w = mixing_matrix("ring", 4)  # 1/3 everywhere on the ring
    faulty = with_faults(w, failed=[0], dropped=[(1, 2)])
    assert torch.allclose(faulty.sum(dim=1), torch.ones(4, dtype=w.dtype)) and torch.allclose(faulty, faulty.T)
    # node 1 lost both messages (its neighbour 0 is down, its link to 2 dropped); node 2 lost one
    assert faulty[0, 0] == 1.0 and faulty[1, 2] == 0 and faulty[1, 1] == pytest.approx(1.0)
    assert faulty[2, 2] == pytest.approx(2 / 3) and faulty[2, 3] == pytest.approx(1 / 3)


def _two_islands(n: int = 8) -> np.ndarray:
    """High bandwidth inside {0..n/2-1} and inside the rest, low across: threshold matching alone never
    crosses."""
    b = np.full((n, n), 1.0)
    half = n // 2
    b[:half, :half] = b[half:, half:] = 10.0
    np.fill_diagonal(b, 0)
    return b


@pytest.mark.parametrize("n, bandwidth, window", [(14, "measured", 3), (16, "random", 3), (8, "islands", 3),
                                                  (8, "islands", 4)])
def test_saps_matching_one_peer_each_and_connected_within_the_window(n, bandwidth, window) -> None:
    b = _two_islands(n) if bandwidth == "islands" else bandwidth_matrix(bandwidth, n, seed=1)
    matcher = SapsMatching(n, GraphSpec(seed=1, bandwidth=b, window=window))
    history = []
    for t in range(1, 121):
        recent = matcher.recent_graph(t)
        graph = matcher.graph(t)
        assert all(len(peers) == 1 for peers in graph)  # every node exactly one peer
        assert all(i in graph[next(iter(peers))] for i, peers in enumerate(graph))
        if not is_connected(recent):  # the window is broken: the matching is built to join its components
            label = {v: k for k, part in enumerate(components(recent)) for v in part}
            assert any(label[i] != label[next(iter(peers))] for i, peers in enumerate(graph))
        history.append(graph)
        if t >= window:
            union = [set().union(*(g[i] for g in history[-window:])) for i in range(n)]
            assert is_connected(union), f"matches of iterations {t - window + 1}..{t} leave the graph split"


def test_saps_matching_prefers_high_bandwidth_pairs() -> None:
    b = bandwidth_matrix("random", 16, seed=2)
    matcher = SapsMatching(16, GraphSpec(seed=2, bandwidth=b, window=3))
    saps = np.mean([min(b[i, j] for i, js in enumerate(matcher.graph(t)) for j in js) for t in range(1, 101)])
    rand = np.mean([_random_bottleneck(b, t) for t in range(1, 101)])
    assert saps > rand


def _random_bottleneck(b: np.ndarray, t: int) -> float:
    from fedloom.patterns.topology import make_topology
    graph = make_topology("matching", b.shape[0], GraphSpec(seed=2)).graph(t)
    return bottleneck(graph, b)


def test_saps_matching_replays_after_a_resume() -> None:
    b = bandwidth_matrix("random", 10, seed=0)
    straight = SapsMatching(10, GraphSpec(seed=0, bandwidth=b))
    sequence = [straight.graph(t) for t in range(1, 31)]
    resumed = SapsMatching(10, GraphSpec(seed=0, bandwidth=b))
    assert resumed.graph(30) == sequence[-1] and resumed.graph(17) == sequence[16]


def test_saps_needs_a_bandwidth_matrix() -> None:
    with pytest.raises(ConfigError, match="--gossip.bandwidth"):
        SapsMatching(6, GraphSpec(bandwidth=None))
