"""A run's config.toml, read back and resolved, has the identity hash its grid planned it under (the model's
default option table that building the models writes into config.toml changes nothing)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fedloom.bench.grid import load_grid, plan
from fedloom.checkpoint import config_hash
from fedloom.config import build_config, load_toml
from fedloom.run import resolve_config, run_experiment

BASE = """
[grid]
name = "roundtrip"
seeds = [1]
workers = 1

[base]
dataset = "digits"
clients = 4
rounds = 1
batch_size = 20
device = "cpu"
"""
CASES = {  # (keys of [base], its option tables)
    "default-model-options": ('algorithm = "fedavg"\nmodel = "mlp"\n', ""),
    "model-with-options": ('algorithm = "fedavg"\nmodel = "mlp"\n', "[base.mlp]\nhidden = 24\n"),
    "algorithm-with-options": ('algorithm = "fedprox"\nmodel = "mlp"\n', "[base.fedprox]\nmu = 0.3\n"),
}


@pytest.mark.parametrize("keys, tables", CASES.values(), ids=CASES.keys())
def test_planned_hash_equals_the_hash_of_the_runs_config_toml(keys: str, tables: str, tmp_path: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(f"{BASE}{keys}\n{tables}")
    (run,) = plan(load_grid(grid, out=str(tmp_path / "runs")))
    run_experiment(dataclasses.replace(run.config, out=str(run.folder)))
    written = load_toml(run.folder / "config.toml")
    assert set(written["options"]["mlp"]) > {"hidden"}  # the model's whole table: what made the hashes differ
    assert config_hash(resolve_config(build_config(written))) == run.hash


def test_a_checkpoint_hashed_with_the_models_default_table_still_resumes_and_a_changed_one_does_not(
        tmp_path: Path) -> None:
    from fedloom.checkpoint import CheckpointError, check_config, config_identity

    grid = tmp_path / "grid.toml"
    grid.write_text(f"{BASE}{CASES['default-model-options'][0]}")
    (run,) = plan(load_grid(grid, out=str(tmp_path / "runs")))
    run_experiment(dataclasses.replace(run.config, out=str(run.folder)))
    cfg = resolve_config(build_config(load_toml(run.folder / "config.toml")))
    old = config_identity(cfg)
    old["options"]["mlp"] = load_toml(run.folder / "config.toml")["options"]["mlp"]  # as headers held it before
    check_config(run.folder / "checkpoint.pt", {"config_hash": "written-before", "identity": old}, cfg)
    old["options"]["mlp"] = {**old["options"]["mlp"], "hidden": 7}
    with pytest.raises(CheckpointError, match=r"differs in: options\.mlp\)"):
        check_config(run.folder / "checkpoint.pt", {"config_hash": "written-before", "identity": old}, cfg)


def test_a_resumed_run_keeps_its_resolved_config_toml(tmp_path: Path) -> None:
    """The bench writes the planned config (only the options given) before every launch; a resumed run must
    put the resolved config back (the models' whole tables), as a fresh start does, under the same hash."""
    from fedloom.bench.runner import prepare

    grid = tmp_path / "grid.toml"
    grid.write_text(f"{BASE}{CASES['default-model-options'][0]}\ncheckpoint_every = 1\n".replace(
        "rounds = 1", "rounds = 3"))
    (run,) = plan(load_grid(grid, out=str(tmp_path / "runs")))
    config = dataclasses.replace(run.config, out=str(run.folder))

    def stop(round_: int, record: dict) -> None:
        if round_ == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, progress=stop)
    prepare(run)  # as a bench does before it launches the resume
    assert "mlp" not in load_toml(run.folder / "config.toml").get("options", {})
    run_experiment(config, resume=True)
    written = load_toml(run.folder / "config.toml")
    assert set(written["options"]["mlp"]) > {"hidden"}
    assert config_hash(resolve_config(build_config(written))) == run.hash
