"""The real deployment on one machine: a SuperLink and 3 SuperNodes as separate processes on loopback (insecure),
``flwr run`` of apps written by ``fedloom flower new``: 3 rounds of FedAvg and of Ditto on digits give the
metrics of ``fedloom run`` of the same config; a SuperNode killed mid-round leaves the round to the others and
the server's run complete; no Flower process outlives a test."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

import fedloom  # noqa: E402
from fedloom.flower.launch import LocalDeployment  # noqa: E402
from fedloom.flower.template import write_app  # noqa: E402

from tests.flower.helpers import DIGITS, assert_same_metrics, nodes  # noqa: E402

# every 3rd round evaluated: each message starts a ClientApp process (Flower's subprocess isolation)
CONFIG = {**DIGITS, "rounds": 3, "eval_every": 3}


def _app(tmp: Path, name: str, cfg: dict) -> Path:
    toml = tmp / f"{name}.toml"
    toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in cfg.items()))
    return write_app(tmp / f"app-{name}", toml)


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_superlink_and_supernodes_match_fedloom_run(tmp_path: Path) -> None:
    deployment = LocalDeployment(tmp_path / "flwr", nodes(3))
    with deployment:
        for algorithm in ("fedavg", "ditto"):
            cfg = {**CONFIG, "algorithm": algorithm}
            deployment.run(_app(tmp_path, algorithm, cfg), {"out": str(tmp_path / f"run-{algorithm}")})
            assert_same_metrics(_records(tmp_path / f"run-{algorithm}"), fedloom.run(cfg, out=None).records)
    assert deployment.leftovers() == []


@pytest.mark.slow
def test_supernode_killed_mid_round(tmp_path: Path) -> None:
    marker = tmp_path / "stalled"
    configs = nodes(3)
    configs[2] = {**configs[2], "test-stall-round": 2, "test-marker": str(marker), "test-stall-seconds": 600}
    deployment = LocalDeployment(tmp_path / "flwr", configs)
    output: dict[str, str] = {}
    with deployment:
        app = _app(tmp_path, "fedavg", CONFIG)
        run = threading.Thread(target=lambda: output.update(
            text=deployment.run(app, {"out": str(tmp_path / "run"), "round-timeout": 300})))
        run.start()
        deadline = time.monotonic() + 900
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(1)
        assert marker.exists(), "node 3 never reached round 2"
        deployment.kill_node(2)
        run.join(timeout=900)
        assert not run.is_alive()
    assert deployment.leftovers() == []
    records = _records(tmp_path / "run")
    assert [r["round"] for r in records] == [0, 3]  # every round finished, the server's run folder is whole
    assert (tmp_path / "run" / "summary.json").exists()
    assert "did not answer train.fedloom in round 2" in output["text"]


@pytest.mark.slow
def test_flower_simulation_runtime_matches_fedloom_run(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    cfg = {**CONFIG, "rounds": 2, "eval_every": 1}
    deployment = LocalDeployment(tmp_path / "flwr", [], simulation=3)
    with deployment:
        deployment.run(_app(tmp_path, "sim", cfg), {"out": str(tmp_path / "run")})
    assert deployment.leftovers() == []
    assert_same_metrics(_records(tmp_path / "run"), fedloom.run(cfg, out=None).records)
