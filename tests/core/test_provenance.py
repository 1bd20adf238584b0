"""Provenance in summary.json, run-folder files readable by colleagues (umask, not mkstemp's 0600), and a
config.toml that lists only the options the run uses, with unchanged identity hashes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

import fedloom
from fedloom.checkpoint import config_hash
from fedloom.config import build_config, load_toml
from fedloom.config_checks import to_toml
from fedloom.provenance import git_commit, source_root
from fedloom.run import resolve_config
from fedloom.tracking import atomic_write_text, file_mode

SMALL = dict(dataset="digits", model="mlp", clients=4, rounds=1, lr=0.05, batch_size=20, device="cpu")


def test_summary_records_code_libraries_and_machine(tmp_path: Path) -> None:
    result = fedloom.run(**SMALL, out=tmp_path / "r")
    prov = json.loads((tmp_path / "r" / "summary.json").read_text())["provenance"]
    import numpy
    import torch

    assert prov["fedloom_version"] == fedloom.__version__
    assert (prov["torch"], prov["numpy"]) == (torch.__version__, numpy.__version__)
    assert prov["device"] == "cpu" and prov["threads"] == 1 and prov["python"].count(".") == 2
    assert prov["cpu"] and prov["cpu_count"] >= 1
    root = source_root()
    if root is not None:  # run from a checkout: HEAD's commit
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert prov["git_commit"] == head.stdout.strip()
    assert result.summary["provenance"] == prov


def test_no_checkout_or_no_git_is_not_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert git_commit(None) == (None, None)
    assert git_commit(tmp_path) == (None, None)  # not a repository
    monkeypatch.setenv("PATH", str(tmp_path))  # no git binary at all
    assert git_commit(Path(".")) == (None, None)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_run_files_follow_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    old = os.umask(mask)
    try:
        assert file_mode() == mode
        atomic_write_text(tmp_path / "x.txt", "x")  # the atomic writer behind config.toml and summary.json
        fedloom.run(**{**SMALL, "rounds": 2}, out=tmp_path / "r", checkpoint_every=1)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == mode
    for name in ("config.toml", "summary.json", "metrics.jsonl", "clients.csv", "partition.json"):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == mode, name


def _resolved(**kw: object):
    return resolve_config(build_config({**SMALL, "out": "-", **kw}))


def test_config_toml_omits_what_the_partitioner_does_not_use(tmp_path: Path) -> None:
    dirichlet = to_toml(_resolved(partition="dirichlet"))
    for name in ("feature_shift", "classes_per_client", "shards_per_client", "domains", "pack_size", "topology"):
        assert f"\n{name} =" not in dirichlet, name
    assert "\nalpha = 0.1\n" in dirichlet
    pathological = to_toml(_resolved(partition="pathological"))
    assert "\nclasses_per_client = 2\n" in pathological and "\nalpha =" not in pathological
    shifted = to_toml(_resolved(partition="feature-shift", base_partition="dirichlet"))
    assert "\nfeature_shift = " in shifted and "\nalpha = " in shifted  # the base partitioner's option too


@pytest.mark.parametrize("extra", [{}, {"classes_per_client": 5}, {"partition": "pathological"},
                                   {"engine": "vectorized", "pack_size": 3}])
def test_reading_config_toml_back_gives_the_same_identity(tmp_path: Path, extra: dict) -> None:
    cfg = _resolved(**{"partition": "dirichlet", **extra})
    (tmp_path / "config.toml").write_text(to_toml(cfg))
    again = resolve_config(build_config(load_toml(tmp_path / "config.toml")))
    assert config_hash(again) == config_hash(cfg)  # resume and grid folders keep their hashes
    if "classes_per_client" in extra:  # set but unused: kept (it is part of the identity), and said so
        assert "classes_per_client = 5  # not used: partition 'dirichlet'" in to_toml(cfg)


def test_the_commit_is_the_code_the_run_started_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit made while a run trains does not become its recorded commit; a resumed run lists the code of
    every process that trained it, from the round each began."""
    import dataclasses

    from fedloom import provenance as prov_module
    from fedloom.run import run_experiment

    head = {"commit": ("aaa", False)}  # what `git rev-parse HEAD` would answer now
    monkeypatch.setattr(prov_module, "git_commit", lambda root: head["commit"])

    def commit_midway(round_: int, record: dict) -> None:  # a commit while the run trains
        if round_ == 1:
            head["commit"] = ("bbb", True)

    prov_module.static_provenance.cache_clear()  # a fresh process
    try:
        first = fedloom.run(**{**SMALL, "rounds": 2}, out=tmp_path / "a", callbacks=[commit_midway])
        assert first.summary["provenance"]["git_commit"] == "aaa"
        assert "code_segments" not in first.summary["provenance"]
        cfg = dataclasses.replace(resolve_config(build_config({**SMALL, "rounds": 4, "checkpoint_every": 1})),
                                  out=str(tmp_path / "b"), quiet=True)
        prov_module.static_provenance.cache_clear()  # another process, at HEAD bbb
        with pytest.raises(_Interrupted):  # killed in round 2 (its checkpoint: round 1)
            run_experiment(cfg, progress=_interrupt_at_round_2)
        head["commit"] = ("ccc", False)
        prov_module.static_provenance.cache_clear()  # the resuming process, after another commit
        resumed = run_experiment(cfg, resume=True)
    finally:
        prov_module.static_provenance.cache_clear()
    assert resumed.summary["provenance"]["git_commit"] == "ccc"
    assert resumed.summary["provenance"]["code_segments"] == [
        {"from_round": 1, "git_commit": "bbb", "git_dirty": True},
        {"from_round": 2, "git_commit": "ccc", "git_dirty": False}]


class _Interrupted(Exception):
    pass


def _interrupt_at_round_2(round_: int, record: dict) -> None:
    if round_ == 2:
        raise _Interrupted
