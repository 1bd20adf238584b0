"""The sharded engine's per-round placement: clients without a state are balanced over the workers each round,
clients with one train where it lives, and a client's first state pins it to the worker that holds it."""

from __future__ import annotations

import dataclasses
from typing import Any

from fedloom.algorithms import ALGORITHMS
from fedloom.algorithms.base import Broadcast
from fedloom.algorithms.uploads import Uploads
from fedloom.engines import EngineOptions
from fedloom.engines.sharded import ShardedEngine, Transport
from fedloom.run import sample_cohort

from helpers import make_experiment


class Recording(Transport):
    """Records each round's shares; says that the clients in ``keeps`` now hold a state."""

    def __init__(self, keeps: set[int]) -> None:
        self.keeps, self.rounds = keeps, []

    def start(self, count: int) -> None:
        pass

    def scatter(self, command: str, shares: dict[int, Any]) -> dict[int, Any]:
        if command != "train":
            return {w: None for w in shares}
        self.rounds.append({w: list(share[2]) for w, share in shares.items()})
        return {w: {"uploads": Uploads(None, 0.0, 0, None), "metrics": {}, "bytes_up": 0,
                    "holding": [c for c in share[2] if c in self.keeps]} for w, share in shares.items()}

    def close(self) -> None:
        pass


def engine_for(exp, keeps: set[int] = frozenset()) -> ShardedEngine:
    transport = Recording(set(keeps))

    class Engine(ShardedEngine):
        def make_transport(self) -> Transport:
            return transport

    options = EngineOptions(workers=2, run_config=exp.config)
    return Engine(exp.runtime, options)


def loads(engine: ShardedEngine, shares: dict[int, list[int]]) -> list[float]:
    return [sum(engine.work[c] for c in clients) for clients in shares.values()]


def test_stateless_cohort_is_balanced_each_round_not_split_by_owner():
    exp = make_experiment(clients=20, join_ratio=0.5)
    engine = engine_for(exp)
    heaviest = max(engine.work)
    sticky_gaps, gaps = [], []
    for r in range(1, 6):
        cohort = sample_cohort(20, 0.5, exp.config.seed, r)
        engine.train_cohort(exp.algorithm, Broadcast(params=exp.runtime.init_params), cohort, r)
        placed = engine.transport.rounds[-1]
        assert sorted(c for cs in placed.values() for c in cs) == sorted(cohort)
        a, b = loads(engine, placed)
        gaps.append(abs(a - b))
        sticky = engine._shares(cohort)
        sa, sb = (loads(engine, sticky) + [0.0])[:2]
        sticky_gaps.append(abs(sa - sb))
        assert abs(a - b) <= heaviest  # longest-first greedy: within one client of even
    assert sum(gaps) < sum(sticky_gaps)  # the mechanism: without it the split is the owners'


def test_stateful_algorithms_stay_with_their_owners():
    exp = make_experiment(clients=20, join_ratio=0.5)
    exp = dataclasses.replace(exp, algorithm=ALGORITHMS.get("ditto")())
    engine = engine_for(exp)
    cohort = sample_cohort(20, 0.5, exp.config.seed, 1)
    engine.train_cohort(exp.algorithm, Broadcast(params=exp.runtime.init_params), cohort, 1)
    assert engine.transport.rounds[-1] == engine._shares(cohort)


def test_a_clients_first_state_pins_it_to_the_worker_that_holds_it():
    exp = make_experiment(clients=20, join_ratio=1.0)
    engine = engine_for(exp, keeps={3})
    broadcast = Broadcast(params=exp.runtime.init_params)
    engine.train_cohort(exp.algorithm, broadcast, list(range(20)), 1)
    where = next(w for w, clients in engine.transport.rounds[-1].items() if 3 in clients)
    assert 3 in engine.holding and engine.owner[3] == where
    for r in range(2, 6):
        engine.train_cohort(exp.algorithm, broadcast, list(range(20)), r)
        assert 3 in engine.transport.rounds[-1][where]
    engine.restore_client_states([(3, None)])  # a restore without its state frees it again
    assert 3 not in engine.holding
