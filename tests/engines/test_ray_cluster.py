"""The Ray engine on a multi-node cluster on this machine (ray.cluster_utils.Cluster: a head without CPUs and
two worker nodes): the workers, the client states they hold and the partial sums they compute really live on
different nodes, a node with two workers merges their sums on the node (--ray.reduce tree), and the metrics of
the default ordered reduction are the serial engine's, byte for byte. Skipped when Ray is not installed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from fedloom.api import run  # noqa: E402
from fedloom.run import initial_round, step_round  # noqa: E402

from helpers import make_experiment  # noqa: E402
from fedloom.engines import ENGINES, EngineOptions  # noqa: E402

SMALL = dict(dataset="digits", model="mlp", clients=8, join_ratio=0.75, rounds=2, partition="dirichlet", alpha=0.5,
             batch_size=16, lr=0.05, seed=3, device="cpu", threads=1, algorithm="ditto")


@pytest.fixture(scope="module")
def two_nodes() -> Any:
    cluster = cluster_utils.Cluster(initialize_head=True, connect=False,
                                    head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=2), cluster.add_node(num_cpus=1)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="warning", configure_logging=False)
    yield [node.node_id for node in nodes]
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow
def test_shards_states_and_partial_sums_live_on_different_nodes(two_nodes: list[str], tmp_path: Path) -> None:
    base = make_experiment(**SMALL)
    # the tree reduction: partial sums merged on each node, then at the driver
    options = EngineOptions(workers=3, run_config=dataclasses.replace(base.config, workers=3, ray_reduce="tree"))
    exp = dataclasses.replace(base, engine=ENGINES.get("ray")(base.runtime, options))
    engine = exp.engine
    try:
        assert sorted(set(engine.node_of.values())) == sorted(two_nodes)  # workers on both nodes
        server, _, _ = initial_round(exp)
        totals: dict = {}
        records = []
        for round_ in (1, 2):
            out = step_round(exp, server, round_, totals)
            server = out.server
            records.append(out.record)
        # who trained which client where, in the last round: both nodes computed partial sums
        trained_on = {engine.node_of[w] for w, info in engine.last_workers.items() if info["clients"]}
        assert trained_on == set(two_nodes)
        # the node with two workers merged their sums on that node, by one of its own workers
        two = [n for n in two_nodes if list(engine.node_of.values()).count(n) == 2][0]
        merges = [m for m in engine.last_merges if m["node"] == two]
        assert merges and engine.node_of[merges[0]["by"]] == two and len(merges[0]["workers"]) == 2
        # client states are held by the workers that trained them, on their nodes, and nowhere else
        held = engine.transport.scatter("states", {w: None for w in engine.alive})
        owners = {c: w for w, states in held.items() for c, _ in states}
        assert len(owners) == sum(len(states) for states in held.values())  # each state in one worker only
        assert owners == {c: w for c, w in engine.pinned.items()}
        assert {engine.node_of[w] for w in owners.values()} == set(two_nodes)
    finally:
        engine.close()
    reference = run(**{**SMALL, "rounds": 2}, out=tmp_path / "serial", quiet=True)
    on_ray = run(**{**SMALL, "rounds": 2, "engine": "ray", "workers": 3}, out=tmp_path / "ray", quiet=True)
    assert (tmp_path / "ray" / "metrics.jsonl").read_bytes() == (tmp_path / "serial" / "metrics.jsonl").read_bytes()
    assert reference.records[-1]["accuracy"] == pytest.approx(records[-1]["accuracy"], abs=1e-6)
