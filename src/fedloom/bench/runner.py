"""Executing a planned grid: each run in its own ``fedloom run --resume RUN_DIR`` subprocess.

A subprocess per run (not a pool of long-lived workers) isolates crashes: a run that dies, even by a signal
or an out-of-memory kill, only fails itself. Run folders are prepared with their resolved config.toml before
launch, so the same command continues any run: from its checkpoint if it has one, else from round 0.
A folder with summary.json is complete and skipped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional, TextIO

from fedloom.bench.grid import GridSpec, PlannedRun
from fedloom.bench.processes import STOP_SECONDS, claim, die_with_parent, signal_group
from fedloom.bench.progress import GridProgress, format_seconds
from fedloom.folder_safety import RUN_MARKER
from fedloom.locking import OWNER_ENV
from fedloom.tracking import COMPLETE_MARKER, FAILED_MARKER, atomic_write_text

POLL_SECONDS = 0.2
LOG_NAME = "run.log"


@dataclass
class GridResult:
    done: list[PlannedRun] = field(default_factory=list)
    skipped: list[PlannedRun] = field(default_factory=list)
    failed: list[tuple[PlannedRun, str]] = field(default_factory=list)
    busy: list[tuple[PlannedRun, str]] = field(default_factory=list)  # being written by another process


@dataclass
class Active:
    run: PlannedRun
    proc: subprocess.Popen
    log: IO[str]
    started: float


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()


def prepare(run: PlannedRun) -> None:
    """Create the run folder with its resolved config. A previous attempt's config.toml has the same identity
    (the folder's name is its hash), so it can differ only in how the run executes (``on_divergence``,
    ``checkpoint_every``...): the grid as it stands now says that, so its config replaces the old one."""
    run.folder.mkdir(parents=True, exist_ok=True)
    path, text = run.folder / "config.toml", run.config_toml()
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    if not (run.folder / RUN_MARKER).is_file():
        atomic_write_text(run.folder / RUN_MARKER, "fedloom run folder\n")


def launch(run: PlannedRun, threads: int) -> Active:
    """Start ``fedloom run --resume`` for ``run`` in a process group of its own (so that stopping it also
    stops its engine's workers), marked as owned by this bench, and set to die with this bench."""
    prepare(run)
    cmd = [sys.executable, "-m", "fedloom.cli", "run", "--resume", str(run.folder), "--quiet",
           "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           OWNER_ENV: str(os.getpid())}
    log = open(run.folder / LOG_NAME, "a")
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True, preexec_fn=die_with_parent(os.getpid()))
    return Active(run, proc, log, time.monotonic())


def failure_message(folder: Path, returncode: int) -> str:
    """One line: the FAILED marker, else the CLI's error line in the log, else how the process ended."""
    marker = folder / FAILED_MARKER
    if marker.is_file() and marker.read_text().strip():
        return marker.read_text().strip().splitlines()[0]
    log = folder / LOG_NAME
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()] if log.is_file() else []
    errors = [line for line in lines if line.startswith("fedloom: error:")]
    if errors:
        return errors[-1]
    if returncode < 0:
        return f"killed by signal {-returncode}" + (" (out of memory?)" if returncode == -9 else "")
    tail = [line for line in lines if line and not line.startswith("$ ")]
    return tail[-1] if tail else f"exit status {returncode}"


def success_message(folder: Path) -> str:
    summary = json.loads((folder / COMPLETE_MARKER).read_text())
    diverged = f", diverged in round {summary['diverged']['round']}" if "diverged" in summary else ""
    return f"best {summary['best_accuracy']:.4f}, final {summary['final_accuracy']:.4f}{diverged}"


def _finish(active: Active, result: GridResult, progress: GridProgress) -> None:
    active.log.close()
    seconds = time.monotonic() - active.started
    progress.running -= 1
    progress.durations.append(seconds)
    rc = active.proc.returncode
    if rc == 0 and is_complete(active.run.folder):
        progress.done += 1
        result.done.append(active.run)
        progress.event(f"done   {active.run.label}: {success_message(active.run.folder)} "
                       f"({format_seconds(seconds)})")
    else:
        message = failure_message(active.run.folder, rc)
        progress.failed += 1
        result.failed.append((active.run, message))
        progress.event(f"FAILED {active.run.label}: {message}")


def _stop(active: list[Active]) -> None:
    """Ctrl-C, SIGTERM or SIGHUP: stop the runs started here, each with its whole process group (their
    checkpoints stay, so the next invocation resumes)."""
    for item in active:
        signal_group(item.proc.pid, signal.SIGTERM)
    for item in active:
        try:
            item.proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            signal_group(item.proc.pid, signal.SIGKILL)
            item.proc.wait()
        item.log.close()


def run_grid(spec: GridSpec, runs: list[PlannedRun], stream: Optional[TextIO] = None) -> GridResult:
    """Run every incomplete run with at most ``spec.workers`` at a time; failures are collected, not raised."""
    result = GridResult(skipped=[r for r in runs if is_complete(r.folder)])
    queue = deque(r for r in runs if not is_complete(r.folder))
    progress = GridProgress(total=len(runs), workers=spec.workers, skipped=len(result.skipped),
                            stream=stream or sys.stderr)
    progress.event(f"grid {spec.name}: {len(runs)} runs, {len(result.skipped)} already complete, "
                   f"{spec.workers} workers -> {spec.out}")
    active: list[Active] = []
    try:
        while queue or active:
            while queue and len(active) < spec.workers:
                run = queue.popleft()
                busy = claim(run.folder)
                if busy:
                    result.busy.append((run, busy))
                    progress.event(f"busy   {run.label}: {busy}; left to it")
                    continue
                active.append(launch(run, spec.threads))
                progress.running += 1
            time.sleep(POLL_SECONDS)
            for item in [a for a in active if a.proc.poll() is not None]:
                active.remove(item)
                _finish(item, result, progress)
            progress.redraw()
    except KeyboardInterrupt:
        _stop(active)
        raise
    progress.close()
    print_result(spec, result, stream or sys.stderr)
    return result


def print_result(spec: GridSpec, result: GridResult, stream: TextIO) -> None:
    busy = f", {len(result.busy)} running elsewhere" if result.busy else ""
    print(f"grid {spec.name}: {len(result.done)} ran, {len(result.skipped)} skipped (complete), "
          f"{len(result.failed)} failed{busy}", file=stream)
    for run, message in result.failed:
        print(f"  failed: {run.folder}: {message} (log: {run.folder / LOG_NAME})", file=stream)
    for run, message in result.busy:
        print(f"  not started: {run.folder}: {message}", file=stream)
    if result.failed:
        print("  re-run the same command to retry the failed runs (completed ones are skipped)", file=stream)
    print(f"report: fedloom report {spec.out} --out {spec.out / 'report'}", file=stream)


def print_plan(spec: GridSpec, runs: list[PlannedRun], calibrate: bool = True) -> None:
    """``--dry-run``: every run with its status and estimated time, then the grid's estimate; nothing of the
    grid is executed (a calibration runs one round of a setting in a temporary folder, see estimate.py)."""
    from fedloom.bench.estimate import estimate_costs, makespan, setting_key

    started = time.monotonic()
    costs = estimate_costs(spec, runs, calibrate_missing=calibrate)
    calibration = time.monotonic() - started
    pending: list[float] = []
    for run in runs:
        status = "complete" if is_complete(run.folder) else (
            "resumable" if (run.folder / "checkpoint.pt").is_file() else
            "failed" if (run.folder / FAILED_MARKER).is_file() else "pending")
        cost = costs.get(setting_key(run))
        note = ""
        if status != "complete":
            if cost is not None and not cost.source.startswith("failed"):
                seconds = cost.run_seconds(run.config.rounds)
                pending.append(seconds)
                note = f"  ~{format_seconds(seconds)} ({cost.source})"
            elif cost is not None:
                note = f"  (no estimate: calibration {cost.source})"
        print(f"{status:<10} {run.folder}{note}")
    print(f"grid {spec.name}: {len(runs)} runs valid, {spec.workers} workers, {spec.threads} thread(s) each")
    left = sum(1 for r in runs if not is_complete(r.folder))
    if pending:
        calibrated = sum(1 for c in costs.values() if c.source == "calibrated")
        print(f"estimate: {len(pending)} of {left} incomplete runs, {format_seconds(sum(pending))} of run time, "
              f"~{format_seconds(makespan(pending, spec.workers))} with {spec.workers} workers"
              + (f" (calibrated {calibrated} setting(s) with one round each in {format_seconds(calibration)})"
                 if calibrated else " (from the completed runs' timings)"))
    elif left and not calibrate:
        print(f"estimate: none for the {left} incomplete runs (no completed run of their settings; "
              "drop --no-calibrate to time one round of each)")
