"""Topologies by name: every mixing matrix symmetric, doubly stochastic, of the stated degree; weight rules by
hand; connectivity and impossible degrees refused before training."""

from __future__ import annotations

import pytest
import torch

from fedloom.errors import ConfigError
from fedloom.patterns.topology import GraphSpec, degrees, is_connected, make_topology, mixing_matrix, spectral_gap, weights_of


def _check(w: torch.Tensor) -> None:
    n = w.shape[0]
    ones = torch.ones(n, dtype=w.dtype)
    assert torch.allclose(w, w.T) and torch.allclose(w @ ones, ones) and bool((w >= 0).all())


@pytest.mark.parametrize("name, n, spec, stated", [
    ("ring", 8, GraphSpec(), [2] * 8),
    ("torus", 12, GraphSpec(), [4] * 12),
    ("complete", 5, GraphSpec(), [4] * 5),
    ("star", 6, GraphSpec(), [5] + [1] * 5),
    ("exponential", 8, GraphSpec(), [5] * 8),  # ±1, ±2, 4: 2·log₂8 − 1
    ("random-regular", 10, GraphSpec(degree=3, seed=4), [3] * 10),
    ("matching", 8, GraphSpec(seed=1), [1] * 8),
])
@pytest.mark.parametrize("rule", ["metropolis", "uniform"])
def test_every_topology_is_symmetric_doubly_stochastic_with_its_degree(name, n, spec, stated, rule) -> None:
    w = mixing_matrix(name, n, spec, round_=3, rule=rule)
    _check(w)
    assert degrees(w) == stated


def test_erdos_renyi_is_connected_and_drawn_from_the_seed() -> None:
    a = make_topology("erdos-renyi", 12, GraphSpec(edge_prob=0.4, seed=2)).graph(1)
    b = make_topology("erdos-renyi", 12, GraphSpec(edge_prob=0.4, seed=2)).graph(9)
    c = make_topology("erdos-renyi", 12, GraphSpec(edge_prob=0.4, seed=3)).graph(1)
    assert a == b and a != c and is_connected(a)
    _check(weights_of(a))


def test_matching_changes_every_iteration_but_not_between_calls() -> None:
    topo = make_topology("matching", 10, GraphSpec(seed=5))
    assert topo.graph(1) == topo.graph(1) and topo.graph(1) != topo.graph(2)
    assert spectral_gap(weights_of(topo.graph(1))) == pytest.approx(0.0)  # one matching is not connected


def test_weight_rules_by_hand() -> None:
    # 0 is joined to 1, 2, 3; 2 and 3 are joined: degrees 3, 1, 2, 2
    graph = [{1, 2, 3}, {0}, {0, 3}, {0, 2}]
    mh, uniform = weights_of(graph, "metropolis"), weights_of(graph, "uniform")
    assert mh[2, 3] == pytest.approx(1 / 3) and mh[0, 1] == pytest.approx(1 / 4)
    assert mh[2, 2] == pytest.approx(1 - 1 / 4 - 1 / 3)
    assert uniform[2, 3] == pytest.approx(1 / 4) and uniform[2, 2] == pytest.approx(1 / 2)
    assert mixing_matrix("star", 4, rule="uniform")[1, 1] == pytest.approx(3 / 4)


@pytest.mark.parametrize("name, n, spec, words", [
    ("random-regular", 7, GraphSpec(degree=3), "no 3-regular graph has 7 nodes"),
    ("random-regular", 6, GraphSpec(degree=6), "no 6-regular graph has 6 nodes"),
    ("random-regular", 6, GraphSpec(degree=1), "never connected"),
    ("erdos-renyi", 30, GraphSpec(edge_prob=0.01), "not connected"),
    ("torus", 7, GraphSpec(), "factor pair"),
    ("ring", 1, GraphSpec(), "at least 2 clients"),
])
def test_bad_graphs_are_one_clear_error(name, n, spec, words) -> None:
    with pytest.raises(ConfigError, match=words):
        make_topology(name, n, spec)
