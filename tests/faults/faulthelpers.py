"""Shared bits of the fault-injection suite: subprocess runs of the real CLI, killed at chosen moments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from processhelpers import children_of

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Ditto keeps a personal model per client: with a partial cohort, states written after the last checkpoint
# are exactly what a wrong resume would let leak into the continued run.
STATEFUL_ARGS = ["--dataset", "digits", "--model", "mlp", "--algorithm", "ditto", "--clients", "8",
                 "--join-ratio", "0.5", "--rounds", "12", "--lr", "0.02", "--batch-size", "4", "--device", "cpu",
                 "--quiet", "--threads", "1"]


def fedloom(args: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedloom.cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=300, **kwargs)


def start(args: Sequence[str], **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fedloom.cli", *args], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def rows(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def wait_for_rows(path: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``path`` has ``count`` lines (rounds 0..count-1 written) or the process ends."""
    deadline = time.monotonic() + timeout
    while rows(path) < count and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: Sequence[int], timeout: float = 20) -> list[int]:
    """The pids still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if alive(p)]
