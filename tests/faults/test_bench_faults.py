"""``fedloom bench`` killed (SIGKILL, SIGTERM) and rerun at once: no run is ever written by two processes, every
run ends with exactly one row per round, no process outlives its bench, and the rerun completes the grid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faulthelpers import ENV, alive, children_of, fedloom, rows, wait_gone
from fedloom.locking import RunLock

ROUNDS = 16
GRID = f"""
[grid]
name = "faults"
seeds = [1, 2]
workers = 2
threads = 1

[base]
dataset = "digits"
model = "mlp"
clients = 6
rounds = {ROUNDS}
lr = 0.02
batch_size = 4
device = "cpu"
checkpoint_every = 4

[axes]
algorithm = ["fedavg", "ditto"]
"""


def _bench(grid: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fedloom.cli", "bench", str(grid), "--out", str(out)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _run_folders(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and (p / "config.toml").is_file())


def _wait_started(out: Path, bench: subprocess.Popen, timeout: float = 90) -> list[int]:
    """Until both runs of the first wave are past round 3; their pids."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and bench.poll() is None:
        busy = [f for f in _run_folders(out) if rows(f / "metrics.jsonl") >= 4] if out.is_dir() else []
        if len(busy) >= 2:
            return children_of(bench.pid)
        time.sleep(0.05)
    raise AssertionError(f"the grid did not start: {bench.stderr.read() if bench.poll() is not None else ''}")


def _check_complete(out: Path) -> None:
    folders = _run_folders(out)
    assert len(folders) == 4
    for folder in folders:
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["round"] for r in records] == list(range(ROUNDS + 1)), folder
        assert (folder / "summary.json").is_file() and not (folder / "FAILED").exists()


@pytest.mark.parametrize("signum", [pytest.param(signal.SIGKILL, id="kill-9"),
                                    pytest.param(signal.SIGTERM, id="sigterm", marks=pytest.mark.slow)])
def test_killed_bench_then_immediate_rerun_never_has_two_writers(signum: int, tmp_path: Path) -> None:
    grid, out = tmp_path / "grid.toml", tmp_path / "out"
    grid.write_text(GRID)
    bench = _bench(grid, out)
    runs = _wait_started(out, bench)
    assert runs, "the bench launched no run"
    bench.send_signal(signum)
    bench.wait()
    rerun = fedloom(["bench", str(grid), "--out", str(out)])  # at once: the killed bench's runs may be alive
    assert rerun.returncode == 0, rerun.stderr
    assert wait_gone(runs, timeout=5) == [], "a run outlived its bench"
    _check_complete(out)


def test_sigterm_stops_the_bench_and_its_runs_within_seconds(tmp_path: Path) -> None:
    grid, out = tmp_path / "grid.toml", tmp_path / "out"
    grid.write_text(GRID)
    bench = _bench(grid, out)
    runs = _wait_started(out, bench)
    bench.send_signal(signal.SIGTERM)
    bench.wait(timeout=30)
    assert bench.returncode != 0
    assert wait_gone(runs, timeout=5) == []
    for folder in _run_folders(out):
        assert not (folder / "summary.json").exists() or rows(folder / "metrics.jsonl") == ROUNDS + 1


def test_a_run_held_by_a_live_process_is_left_alone_and_reported(tmp_path: Path) -> None:
    grid, out = tmp_path / "grid.toml", tmp_path / "out"
    grid.write_text(GRID.replace("seeds = [1, 2]", "seeds = [1]").replace('["fedavg", "ditto"]', '["fedavg"]')
                    .replace(f"rounds = {ROUNDS}", "rounds = 2"))
    planned = fedloom(["bench", str(grid), "--out", str(out), "--dry-run"])
    assert planned.returncode == 0, planned.stderr
    folder = out / planned.stdout.split()[1].split("/")[-1]
    folder.mkdir(parents=True)
    lock = RunLock(folder).acquire()  # this test process plays a `fedloom run` started by hand
    try:
        done = fedloom(["bench", str(grid), "--out", str(out)])
    finally:
        lock.release()
    assert done.returncode == 1 and "running elsewhere" in done.stderr
    assert f"pid {os.getpid()}" in done.stderr and not (folder / "metrics.jsonl").exists()
    assert alive(os.getpid())
