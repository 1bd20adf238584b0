"""Cost estimates for ``fedloom bench --dry-run``: how long each pending run will take, before running it.

Runs that share a *setting* (their config minus the seed and the number of rounds) cost the same per round.
For each setting the per-round time comes from, in order:

1. completed runs of that setting in the grid's folder: their summary.json ``wall_seconds / rounds``, and as
   start-up the time from the folder's run marker (written by the bench at launch) to its summary.json beyond
   ``wall_seconds`` (the smallest over the runs: a run resumed after a stop took longer) (source "timed");
2. otherwise a calibration: the first pending run of the setting run for one round, exactly as the bench would
   run it (``fedloom run --resume`` in a subprocess with the grid's threads) in a temporary folder; the
   subprocess's elapsed time minus its training time is the fixed start-up (source "calibrated").

A run's estimate is ``start-up + rounds × per-round``; the grid's is a greedy schedule of the pending runs on
``workers`` slots (longest first). Estimates assume the machine is as loaded as during the calibration.
"""

from __future__ import annotations

import heapq
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from fedloom.bench.grid import GridSpec, PlannedRun
from fedloom.checkpoint import config_identity
from fedloom.folder_safety import RUN_MARKER
from fedloom.tracking import COMPLETE_MARKER

#: start-up assumed for a run when no calibration measured it (digits, 1 thread, idle 2-core machine)
DEFAULT_STARTUP = 3.0
CALIBRATION_TIMEOUT = 600.0


@dataclass
class Cost:
    """Seconds per round and fixed start-up of one setting, and where they come from."""

    per_round: float
    startup: float
    source: str  # "timed" | "calibrated" | "failed: <reason>"

    def run_seconds(self, rounds: int) -> float:
        return self.startup + rounds * self.per_round


def setting_key(run: PlannedRun) -> str:
    """The run's identity without the seed and the budget: runs with equal keys cost the same per round."""
    identity = config_identity(run.config)
    for key in ("seed", "rounds"):
        identity.pop(key, None)
    return json.dumps(identity, sort_keys=True, default=str)


def timed_cost(runs: list[PlannedRun]) -> Optional[Cost]:
    """Mean seconds per round and the smallest start-up of the completed runs among ``runs`` (None if none
    completed)."""
    rates, startups = [], []
    for run in runs:
        path = run.folder / COMPLETE_MARKER
        if path.is_file():
            summary = json.loads(path.read_text())
            if summary.get("rounds"):
                wall = float(summary.get("wall_seconds", 0.0))
                rates.append(wall / int(summary["rounds"]))
                marker = run.folder / RUN_MARKER
                if marker.is_file():
                    startups.append(max(path.stat().st_mtime - marker.stat().st_mtime - wall, 0.0))
    if not rates:
        return None
    return Cost(sum(rates) / len(rates), min(startups) if startups else DEFAULT_STARTUP, "timed")


def calibrate(run: PlannedRun, threads: int) -> Cost:
    """Run ``run`` for one round in a temporary folder, as the bench runs it, and time it."""
    from fedloom.bench.runner import prepare

    with tempfile.TemporaryDirectory(prefix="fedloom-calibrate-") as tmp:
        folder = Path(tmp) / "run"
        probe = replace(run, config=replace(run.config, rounds=1, checkpoint_every=0, trackers=None,
                                            out=str(folder)), folder=folder)
        prepare(probe)
        cmd = [sys.executable, "-m", "fedloom.cli", "run", "--resume", str(folder), "--quiet", "--threads",
               str(threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        start = time.monotonic()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=CALIBRATION_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Cost(0.0, 0.0, f"failed: one round took over {CALIBRATION_TIMEOUT:.0f}s")
        elapsed = time.monotonic() - start
        summary = folder / COMPLETE_MARKER
        if done.returncode != 0 or not summary.is_file():
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            return Cost(0.0, 0.0, "failed: " + (lines[-1] if lines else f"exit status {done.returncode}"))
        wall = float(json.loads(summary.read_text()).get("wall_seconds", 0.0))
    return Cost(per_round=wall, startup=max(elapsed - wall, 0.0), source="calibrated")


def estimate_costs(spec: GridSpec, runs: list[PlannedRun], calibrate_missing: bool = True,
                   calibrator=calibrate) -> dict[str, Cost]:  # type: ignore[no-untyped-def]
    """Cost per setting key of every setting with a pending run (timed, calibrated, or absent)."""
    by_setting: dict[str, list[PlannedRun]] = {}
    for run in runs:
        by_setting.setdefault(setting_key(run), []).append(run)
    costs: dict[str, Cost] = {}
    for key, members in by_setting.items():
        pending = [r for r in members if not (r.folder / COMPLETE_MARKER).is_file()]
        if not pending:
            continue
        cost = timed_cost(members)
        if cost is None and calibrate_missing:
            cost = calibrator(pending[0], spec.threads)
        if cost is not None:
            costs[key] = cost
    return costs


def makespan(seconds: list[float], workers: int) -> float:
    """Finish time of the runs scheduled longest first, each on the slot that frees up first."""
    slots = [0.0] * max(1, workers)
    for duration in sorted(seconds, reverse=True):
        heapq.heapreplace(slots, slots[0] + duration)
    return max(slots)
