"""A federation of mixed architectures (``--model mlp,logreg``): each client trains and is scored with its own
model, on every engine; algorithms that exchange parameters refuse such a federation before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedloom.cli import main
from fedloom.config import build_config
from fedloom.run import build_experiment, load_data, resolve_config

MIXED = ["run", "--algorithm", "local", "--model", "mlp,logreg", "--dataset", "digits", "--clients", "6",
         "--rounds", "2", "--quiet", "--device", "cpu"]


def test_each_client_gets_its_own_architecture() -> None:
    import torch

    cfg = resolve_config(build_config({"algorithm": "local", "model": "MLP, logreg", "clients": 5, "rounds": 1,
                                       "out": "-", "device": "cpu"}))
    exp = build_experiment(cfg, load_data(cfg, torch.device("cpu")), torch.device("cpu"))
    assert cfg.model == "mlp,logreg" and exp.runtime.architectures.arch_of == (0, 1, 0, 1, 0)
    shapes = {c: {k: tuple(v.shape) for k, v in exp.engine._load_state(exp.algorithm, c)["params"].items()}
              for c in (0, 1)}
    assert shapes[0] != shapes[1]  # an MLP's tensors and a logistic regression's
    ctx = exp.runtime.client_context(1, 1)
    assert ctx.runtime.model is exp.runtime.architectures.models[1]


@pytest.mark.parametrize("engine", ["vectorized", "processes"])
def test_local_on_two_architectures_matches_serial(engine: str, tmp_path: Path) -> None:
    import json

    assert main([*MIXED, "--out", str(tmp_path / "serial")]) == 0
    extra = ["--engine", engine] + (["--workers", "2"] if engine == "processes" else [])
    assert main([*MIXED, *extra, "--out", str(tmp_path / engine)]) == 0
    serial = (tmp_path / "serial" / "metrics.jsonl").read_text().splitlines()
    other = (tmp_path / engine / "metrics.jsonl").read_text().splitlines()
    if engine == "processes":
        assert serial == other
    for a, b in zip(serial, other):
        assert json.loads(a)["accuracy"] == json.loads(b)["accuracy"]


def test_a_mixed_federation_is_refused_by_parameter_averaging_algorithms(capsys: pytest.CaptureFixture,
                                                                        tmp_path: Path) -> None:
    code = main([*MIXED, "--algorithm", "fedavg", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs one architecture for every client" in err[0]
    assert not (tmp_path / "x").exists()
