"""The cyclic pattern: clients of a round train one after another, the server stepping after each."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from fedloom.cli import main
from fedloom.patterns import PATTERNS
from fedloom.rounds import initial_round

from helpers import make_experiment


def cyclic_round(exp):
    server, _, _ = initial_round(exp)
    return server, PATTERNS.get("cyclic")().step(exp, server, 1, {})


def test_each_client_starts_from_its_predecessors_result() -> None:
    """FedAvg, one cyclic round of 3 clients: the global model is client 2's training from client 1's from
    client 0's, computed by hand from the clients' contexts."""
    exp = make_experiment(algorithm="fedavg", pattern="cyclic", clients=3, join_ratio=1.0)
    server, out = cyclic_round(exp)
    model = dict(server.state.params)
    for cid in range(3):
        model, _ = exp.runtime.client_context(cid, 1).local_sgd(model)
    assert all(torch.allclose(out.server.state.params[k], model[k], atol=1e-6) for k in model)
    star = PATTERNS.get("star")().step(exp, server, 1, {})  # the same round in parallel: another model
    assert not all(torch.allclose(star.server.state.params[k], model[k], atol=1e-4) for k in model)


def test_the_round_counter_counts_rounds_and_every_client_is_counted_once() -> None:
    exp = make_experiment(algorithm="fedavg", pattern="cyclic", clients=4, join_ratio=0.5)
    server, out = cyclic_round(exp)
    assert out.server.state.round == server.state.round + 1
    assert out.record["clients_sampled"] == 2 and len(out.client_metrics) == 2
    assert out.record["bytes_up"] > 0 and out.record["bytes_down"] == 2 * server.broadcast.nbytes(0)


def run(tmp_path: Path, name: str, *extra: str) -> list[dict]:
    out = tmp_path / name
    code = main(["run", "--algorithm", "fedavg", "--pattern", "cyclic", "--dataset", "digits", "--model", "mlp",
                 "--clients", "4", "--rounds", "2", "--quiet", "--out", str(out), *extra])
    assert code == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


RAY = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")


@pytest.mark.parametrize("engine", [["--engine", "processes", "--workers", "2"], ["--engine", "vectorized"],
                                    pytest.param(["--engine", "ray", "--workers", "2"],
                                                 marks=[pytest.mark.slow, RAY])],
                         ids=["processes", "vectorized", "ray"])
def test_every_engine_matches_serial_in_the_cyclic_pattern(engine: list[str], tmp_path: Path) -> None:
    serial = run(tmp_path, "serial")
    other = run(tmp_path, "other", *engine)
    assert [r["accuracy"] for r in serial] == pytest.approx([r["accuracy"] for r in other], abs=1e-6)
    assert [r["loss"] for r in serial] == pytest.approx([r["loss"] for r in other], rel=1e-5)


@pytest.mark.parametrize("args, expected", [
    (["--aggregator", "median"], "--aggregator median compares the uploads of a round"),
    (["--attack", "alie", "--attack.fraction", "0.25"], "--attack alie crafts its upload from the round's benign"),
], ids=["robust-aggregator", "omniscient-attack"])
def test_rules_that_need_a_rounds_uploads_together_are_refused(args: list[str], expected: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    code = main(["run", "--algorithm", "fedavg", "--pattern", "cyclic", "--dataset", "digits", "--model", "mlp",
                 "--rounds", "1", "--quiet", *args, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "run").exists()
