"""Cost estimates of ``fedloom bench --dry-run``: timed from completed runs, else one calibration round."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchhelpers import cli
from fedloom.bench.estimate import Cost, estimate_costs, makespan, setting_key, timed_cost
from fedloom.bench.grid import load_grid, plan
from fedloom.bench.runner import prepare

GRID = """
[grid]
name = "est"
seeds = [1, 2]
workers = 2
[base]
dataset = "digits"
model = "logreg"
clients = 3
rounds = 4
device = "cpu"
[axes]
algorithm = ["fedavg", "local"]
"""


def grid(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    spec = load_grid(path, [], out=str(tmp_path / "out"), workers=None)
    return spec, plan(spec)


def complete(run, wall: float, startup: float) -> None:  # type: ignore[no-untyped-def]
    """A fake completed run folder: summary.json, with the run marker ``startup + wall`` seconds older."""
    prepare(run)
    summary = run.folder / "summary.json"
    summary.write_text(json.dumps({"rounds": run.config.rounds, "wall_seconds": wall}))
    now = summary.stat().st_mtime
    marker = run.folder / ".fedloom-run"
    os.utime(marker, (now - startup - wall, now - startup - wall))


def test_makespan_schedules_longest_first_on_the_freest_slot() -> None:
    # 2 slots: 5 | 4, then 3 joins the 4 (7), then 3 joins the 5 (8)
    assert makespan([3, 5, 3, 4], 2) == 8
    assert makespan([3, 5, 3, 4], 1) == 15 and makespan([], 4) == 0


def test_seeds_share_a_setting_and_timed_cost_reads_completed_runs(tmp_path: Path) -> None:
    _, runs = grid(tmp_path)
    keys = [setting_key(r) for r in runs]
    assert len(set(keys)) == 2  # fedavg and local; the seed does not change the cost
    fedavg = [r for r in runs if r.config.algorithm == "fedavg"]
    assert timed_cost(fedavg) is None
    complete(fedavg[0], wall=8.0, startup=3.0)
    cost = timed_cost(fedavg)
    assert cost is not None and cost.per_round == pytest.approx(2.0)  # 8 s over 4 rounds
    assert cost.startup == pytest.approx(3.0, abs=0.05) and cost.run_seconds(10) == pytest.approx(23.0, abs=0.05)


def test_one_calibration_per_setting_without_timings(tmp_path: Path) -> None:
    spec, runs = grid(tmp_path)
    calls: list[str] = []

    def fake(run, threads):  # type: ignore[no-untyped-def]
        calls.append(run.config.algorithm)
        return Cost(1.0, 2.0, "calibrated")

    costs = estimate_costs(spec, runs, calibrator=fake)
    assert sorted(calls) == ["fedavg", "local"] and len(costs) == 2
    complete(next(r for r in runs if r.config.algorithm == "fedavg"), wall=4.0, startup=1.0)
    calls.clear()
    costs = estimate_costs(spec, runs, calibrator=fake)
    assert calls == ["local"]  # fedavg is timed from its completed seed
    assert {c.source for c in costs.values()} == {"timed", "calibrated"}
    assert estimate_costs(spec, runs, calibrate_missing=False, calibrator=fake) and calls == ["local"]


def test_dry_run_prints_each_runs_estimate_from_a_real_calibration(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(GRID.replace('["fedavg", "local"]', '["fedavg"]'))
    code, out, _ = cli(["bench", str(path), "--out", str(tmp_path / "out"), "--dry-run"], capsys)
    lines = out.splitlines()
    assert code == 0 and sum("(calibrated)" in line and "~" in line for line in lines) == 2
    assert lines[-1].startswith("estimate: 2 of 2 incomplete runs") and "calibrated 1 setting(s)" in lines[-1]
    assert not any((tmp_path / "out").glob("*/summary.json"))  # nothing of the grid ran
    code, out, _ = cli(["bench", str(path), "--out", str(tmp_path / "out"), "--dry-run", "--no-calibrate"], capsys)
    assert code == 0 and "estimate: none for the 2 incomplete runs" in out
