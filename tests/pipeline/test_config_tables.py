"""Run folders of runs with seams and their option tables read back: config.toml of a run with --attack holds the
threat model's ``[attack]`` table and the attack's name as ``name`` inside it (TOML cannot hold a top-level
``attack = ...`` key beside an ``[attack]`` table), and a resumed attacked run is byte-identical to a straight
one (issue 19's resume bug)."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from fedloom.cli import build_config, main, make_parser, raw_from_args
from fedloom.config import FIELD_KEY, RUN_FIELDS, load_toml, raw_from_table
from fedloom.config_checks import to_toml
from fedloom.run import resolve_config
from fedloom.seams import SEAM_REGISTRIES

BASE = ["run", "--quiet", "--dataset", "digits", "--model", "mlp", "--device", "cpu", "--batch-size", "32",
        "--lr", "0.05", "--seed", "3", "--clients", "6", "--partition", "iid"]

SEAMS = {
    "attack": ["--attack", "badnets", "--attack.fraction", "0.34", "--attack.sampling", "exact",
               "--badnets.pdr", "0.5"],
    "aggregator": ["--aggregator", "multi-krum", "--multi-krum.f", "1"],
    "transform": ["--transform", "clip", "--clip.norm", "0.5"],
    "pattern": ["--algorithm", "dpsgd", "--pattern", "gossip", "--gossip.weights", "uniform", "--gossip.drop", "0.1", "--topology", "ring"],
}


def resolved(args: list[str]):
    return resolve_config(build_config(raw_from_args(make_parser().parse_args(args))))


@pytest.mark.parametrize("seam", sorted(SEAMS))
def test_every_seam_table_round_trips_through_config_toml(seam: str, tmp_path: Path) -> None:
    cfg = resolved([*BASE, *SEAMS[seam], "--rounds", "1", "--out", str(tmp_path / "run")])
    text = to_toml(cfg)
    tomllib.loads(text)  # valid TOML (the bug: `attack = "badnets"` beside `[attack]`)
    path = tmp_path / "config.toml"
    path.write_text(text)
    back = resolve_config(build_config(load_toml(path)))
    assert back == cfg
    assert to_toml(back) == text


def test_attack_name_sits_in_the_threat_table() -> None:
    cfg = resolved([*BASE, *SEAMS["attack"], "--rounds", "1"])
    table = tomllib.loads(to_toml(cfg))
    assert table["attack"] == {FIELD_KEY: "badnets", "fraction": 0.34, "sampling": "exact"}
    assert table["badnets"]["pdr"] == 0.5
    # and a hand-written table in that form selects the attack, as the flag does
    raw = raw_from_table({"attack": {"name": "dba", "fraction": 0.2}})
    assert raw["attack"] == "dba" and raw["options"] == {"attack": {"fraction": 0.2}}


def test_no_table_named_after_a_run_field_declares_the_field_key() -> None:
    # the reader maps <field>.name to the field: an option called `name` in such a table would be unreachable
    for registry in SEAM_REGISTRIES:
        for name in registry.names():
            cls = registry.get(name)
            if name in RUN_FIELDS and dataclasses.is_dataclass(cls):
                assert FIELD_KEY not in {f.name for f in dataclasses.fields(cls)}, (registry.kind, name)


def test_an_attacked_run_resumes_byte_identical(tmp_path: Path) -> None:
    from fedloom.run import run_experiment

    run = [*BASE, *SEAMS["attack"], "--rounds", "3"]
    assert main([*run, "--out", str(tmp_path / "full")]) == 0
    args = make_parser().parse_args([*run, "--checkpoint-every", "1", "--out", str(tmp_path / "cut")])

    def stop(round_: int, record: dict) -> None:
        if round_ == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(build_config(raw_from_args(args)), progress=stop)
    assert main(["run", "--resume", str(tmp_path / "cut"), "--quiet"]) == 0
    full = (tmp_path / "full" / "metrics.jsonl").read_bytes()
    assert (tmp_path / "cut" / "metrics.jsonl").read_bytes() == full
    assert b'"asr"' in full and full.count(b"\n") == 4  # rounds 0..3, with the attack's metric
