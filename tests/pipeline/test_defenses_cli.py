"""Defenses end to end: fedloom run with --aggregator NAME on digits, admitted rates in metrics.jsonl, and the
cohort-size errors as one line before training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedloom.cli import main

BASE = ["run", "--quiet", "--dataset", "digits", "--model", "mlp", "--device", "cpu", "--batch-size", "32",
        "--lr", "0.05", "--seed", "2", "--partition", "iid", "--attack", "signflip", "--attack.fraction", "0.2"]


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def admitted_rates(folder: Path) -> list[tuple[float, float]]:
    return [(r["server_admitted_tpr"], r["server_admitted_fpr"]) for r in records(folder) if r["round"] > 0]


def test_flame_end_to_end_rejects_sign_flipped_uploads(tmp_path: Path) -> None:
    # IID clients: benign updates agree in direction, so the flipped ones sit apart (on a Dirichlet split the
    # first rounds' updates are near-orthogonal and nothing can tell a flipped one from a benign one)
    out = tmp_path / "flame"
    assert main([*BASE, "--clients", "10", "--rounds", "2", "--aggregator", "flame", "--out", str(out)]) == 0
    rates = admitted_rates(out)
    assert len(rates) == 2 and all(fpr == 0.0 and tpr > 0.5 for tpr, fpr in rates)
    assert all(r["server_flame_clip_bound"] > 0 for r in records(out) if r["round"] > 0)


def test_snowball_end_to_end_runs_both_elections(tmp_path: Path) -> None:
    out = tmp_path / "snowball"
    args = ["--clients", "10", "--rounds", "2", "--aggregator", "snowball", "--snowball.ct", "3",
            "--snowball.share", "0.2",
            "--snowball.warmup", "2", "--snowball.vae-hidden", "16", "--snowball.vae-latent", "4",
            "--snowball.vae-initial-epochs", "3", "--snowball.vae-tuning-epochs", "1"]
    assert main([*BASE, *args, "--out", str(out)]) == 0
    rows = [r for r in records(out) if r["round"] > 0]
    assert [r["server_snowball_topdown"] for r in rows] == [0.0, 1.0]  # warm-up is rounds < 2
    assert [r["server_admitted"] for r in rows] == [2.0, 5.0]  # ceil(0.2·10), then floor(0.5·10)
    assert all(not math.isnan(r["server_admitted_tpr"]) for r in rows)


def test_fltrust_end_to_end_trains_a_root_set(tmp_path: Path) -> None:
    out = tmp_path / "fltrust"
    assert main([*BASE, "--clients", "5", "--rounds", "1", "--aggregator", "fltrust", "--fltrust.root-size", "50",
                 "--out", str(out)]) == 0
    tpr, fpr = admitted_rates(out)[0]
    assert fpr == 0.0 and tpr > 0  # a flipped update points away from the server's own


def test_ideal_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "ideal"
    assert main([*BASE, "--clients", "5", "--rounds", "1", "--aggregator", "ideal", "--out", str(out)]) == 0
    assert admitted_rates(out) == [(1.0, 0.0)]


@pytest.mark.parametrize("args, expected", [
    (["--aggregator", "bulyan", "--bulyan.f", "1"], "needs at least 4f+3 = 7"),
    (["--aggregator", "multi-krum", "--multi-krum.f", "2"], "needs more than 2f+2 = 6"),
    (["--aggregator", "multi-krum", "--multi-krum.m", "9"], "exceeds"),
    (["--aggregator", "snowball"], "ct+2 = 12"),
    (["--aggregator", "snowball", "--snowball.ct", "3"], "raise snowball.share"),
    (["--aggregator", "snowball-minus", "--snowball-minus.share", "0"], "snowball-minus.share"),
    (["--aggregator", "flame", "--flame.variant", "repo"], "flame.variant must be one of"),
    (["--aggregator", "rlr"], "rlr.threshold = 10 exceeds"),
    (["--aggregator", "fltrust", "--fltrust.root-size", "0"], "fltrust.root_size"),
    (["--aggregator", "norm-clip", "--norm-clip.norm", "0"], "norm-clip.norm"),
])
def test_bad_defense_options_end_in_one_line(args: list[str], expected: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bad"
    assert main([*BASE, "--clients", "6", "--rounds", "1", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedloom: error:") and expected in err[0], err
    assert not (out / "summary.json").exists()


def test_foolsgold_memory_survives_a_resume_exactly(tmp_path: Path) -> None:
    from fedloom.cli import build_config, make_parser, raw_from_args
    from fedloom.run import run_experiment

    # without an attack (an attacked run's resume is tests/pipeline/test_config_tables.py's)
    run = [*BASE[:BASE.index("--attack")], "--clients", "6", "--join-ratio", "0.5", "--rounds", "3",
           "--aggregator", "foolsgold"]
    assert main([*run, "--out", str(tmp_path / "full")]) == 0
    args = make_parser().parse_args([*run, "--checkpoint-every", "1", "--out", str(tmp_path / "cut")])

    def stop(round_: int, record: dict) -> None:
        if round_ == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(build_config(raw_from_args(args)), progress=stop)
    assert main(["run", "--resume", str(tmp_path / "cut"), "--quiet"]) == 0
    assert (tmp_path / "cut" / "metrics.jsonl").read_bytes() == (tmp_path / "full" / "metrics.jsonl").read_bytes()
