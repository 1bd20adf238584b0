"""The fedloom Flower app in one process (LocalGrid: every message through Flower's protobuf form): the same
metrics as ``fedloom run``, a node lost mid-run, and the bad inputs each side must refuse with one error."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

import fedloom  # noqa: E402
from fedloom.errors import ConfigError, TrainingError  # noqa: E402
from fedloom.flower import client_app  # noqa: E402
from fedloom.flower.local import LocalGrid  # noqa: E402
from fedloom.flower.server import run_server  # noqa: E402

from tests.flower.helpers import DIGITS, assert_same_metrics, nodes  # noqa: E402


def test_fedavg_over_flower_equals_fedloom_run() -> None:
    cfg = {**DIGITS, "clients": 12}  # client ids 1 and 10, 11: one upload's name is a prefix of another's
    grid = LocalGrid(client_app(cfg), nodes(3))
    result = run_server(cfg, grid)
    assert_same_metrics(result.records, fedloom.run(cfg, out=None).records)
    stats = result.flower_stats
    assert [s["clients_trained"] for s in stats] == [12, 12]
    # the upload bytes counted from the arrived records are fedloom's own count of the wire form
    assert [s["bytes_up_wire"] for s in stats] == [r["bytes_up"] for r in result.records[1:]]


@pytest.mark.slow
def test_client_state_lives_on_its_node() -> None:
    cfg = {**DIGITS, "algorithm": "ditto", "rounds": 1}
    grid = LocalGrid(client_app(cfg), nodes(3))
    run_server(cfg, grid)
    held = {node: sorted(k for k in ctx.state.array_records if k.startswith("fedloom.state."))
            for node, ctx in grid.contexts.items()}
    assert held == {1: ["fedloom.state.0", "fedloom.state.3"], 2: ["fedloom.state.1", "fedloom.state.4"],
                    3: ["fedloom.state.2", "fedloom.state.5"]}


@pytest.mark.slow
def test_lost_node_round_finishes_with_the_others() -> None:
    cfg = {**DIGITS, "rounds": 3}
    grid = LocalGrid(client_app(cfg), nodes(3))
    original = grid.send_and_receive

    def drop_node_3_from_round_2(messages, *, timeout=None):
        messages = list(messages)
        if any(m.metadata.group_id == "2" for m in messages):
            grid.down.add(3)
        return original(messages, timeout=timeout)

    grid.send_and_receive = drop_node_3_from_round_2
    result = run_server({**cfg}, grid)
    stats = result.flower_stats
    assert [s["clients_trained"] for s in stats] == [6, 4, 4]
    assert stats[1]["lost_nodes"] == [3]
    assert len(result.records) == 4 and result.records[-1]["accuracy"] > 0.1  # the server state went on


def test_lost_node_fails_clearly_when_asked() -> None:
    grid = LocalGrid(client_app(DIGITS), nodes(3))
    original = grid.send_and_receive

    def lose(messages, *, timeout=None):
        messages = list(messages)
        if any(m.metadata.message_type.startswith("train") for m in messages):
            grid.down.add(2)
        return original(messages, timeout=timeout)

    grid.send_and_receive = lose
    with pytest.raises(TrainingError, match=r"node 2 \(clients \[1, 4\]\) did not answer"):
        run_server(DIGITS, grid, {"on-lost": "fail"})


@pytest.mark.parametrize("node_config, message", [
    ({}, "this node has no partition"),
    ({"partition-id": 4, "num-partitions": 3}, "partition-id=4 is not one of the 3 partitions"),
    ({"clients": "2,9"}, "names client 9, but the run has 6 clients"),
])
def test_bad_node_config_is_one_error_from_the_node(node_config: dict, message: str) -> None:
    grid = LocalGrid(client_app(DIGITS), [{"partition-id": 0, "num-partitions": 3}, node_config])
    with pytest.raises(ConfigError, match=f"node 2: .*{message}"):
        run_server(DIGITS, grid, {"connect-timeout": 2})


def test_uncovered_clients_are_one_error_on_the_server() -> None:
    grid = LocalGrid(client_app(DIGITS), nodes(3)[:2])
    with pytest.raises(ConfigError, match=r"no node holds clients \[2, 5\]"):
        run_server(DIGITS, grid, {"connect-timeout": 1})


def test_config_mismatch_is_one_error_from_the_node() -> None:
    grid = LocalGrid(client_app({**DIGITS, "lr": 0.1}), nodes(3))
    expected = r"config mismatch between the server .* this node has \['lr = 0\.1'\], the server has \['lr = 0\.05'\]"
    with pytest.raises(ConfigError, match=expected):
        run_server(DIGITS, grid)


def test_every_node_lost_is_one_error() -> None:
    grid = LocalGrid(client_app(DIGITS), nodes(2))
    original = grid.send_and_receive

    def lose_all(messages, *, timeout=None):
        messages = list(messages)
        if any(m.metadata.message_type.startswith("train") for m in messages):
            grid.down.update({1, 2})
        return original(messages, timeout=timeout)

    grid.send_and_receive = lose_all
    with pytest.raises(TrainingError, match="no node is left"):
        run_server(DIGITS, grid)
