"""Process hygiene of ``fedloom bench``: its runs die with it, and a run left behind is never joined by a
second writer.

Each run is launched as the leader of its own process group, so one signal reaches the run and its engine's
worker processes together. On Linux the run also asks the kernel for SIGTERM when the bench that launched it
dies (``PR_SET_PDEATHSIG``), which covers ``kill -9`` of the bench, the one exit no handler sees. As a second
line of defence, the next bench reads each run folder's lock (fedloom.locking): a run still held by a process
whose owning bench is gone is an orphan and is stopped before the run is resumed; a run held by a live owner
(another bench, or a ``fedloom run`` by hand) is left alone and reported.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from fedloom.locking import pid_alive, read_holder

#: Seconds a run gets to stop cleanly (FAILED marker, workers stopped) before SIGKILL.
STOP_SECONDS = 15.0
_PR_SET_PDEATHSIG = 1


def signal_group(pid: int, signum: int) -> None:
    """Signal the process group led by ``pid`` (a run and its workers); quiet if it is already gone."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def die_with_parent(parent_pid: int) -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that makes the child receive SIGTERM when ``parent_pid`` dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None

    def arrange() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return arrange


def claim(folder: Path, timeout: float = STOP_SECONDS + 5) -> Optional[str]:
    """Make ``folder`` free for a new writer: None when it is (an orphaned run is stopped first), else why not."""
    holder = read_holder(folder)
    if holder is None:
        return None
    if holder.owner_pid is None or pid_alive(holder.owner_pid):
        return f"being written by {holder.describe()}"
    _stop_orphan(holder.pid, timeout)
    holder = read_holder(folder)
    return None if holder is None else f"an orphaned run ({holder.describe()}) did not stop"


def _stop_orphan(pid: int, timeout: float) -> None:
    """SIGTERM to the orphan's group, then SIGKILL if it has not let go of the lock in ``timeout`` s."""
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        signal_group(pid, signal.SIGKILL)
        time.sleep(0.2)
