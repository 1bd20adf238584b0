"""One writer per run folder: an exclusive ``flock`` on ``RUN_DIR/.lock`` held for the whole run.

The kernel drops a ``flock`` when its process dies, however it dies (kill -9 included), so a lock can never
be left stale; the file's JSON body only *describes* the holder (pid, the ``fedloom bench`` that launched it,
start time) for error messages and for ``fedloom bench`` to recognise runs whose owner died. Two processes
resuming one folder — the corrupted metrics.jsonl of an orphaned grid run — are impossible: the second one is
refused in one line before it touches anything.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional

from fedloom.errors import ConfigError

LOCK_NAME = ".lock"
#: Set by ``fedloom bench`` in the environment of the runs it launches: the pid of the owning bench.
OWNER_ENV = "FEDLOOM_OWNER_PID"


@dataclass(frozen=True)
class LockHolder:
    pid: int
    owner_pid: Optional[int]  # the fedloom bench that launched the run, if any
    started: float

    def describe(self) -> str:
        owner = f", launched by fedloom bench pid {self.owner_pid}" if self.owner_pid else ""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid}{owner}, since {since}"


def pid_alive(pid: Optional[int]) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    """A dead child not yet reaped still answers kill(0); /proc tells the truth on Linux."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status.rsplit(")", 1)[-1].split()[0] != "Z"


def _owner_from_env() -> Optional[int]:
    value = os.environ.get(OWNER_ENV, "")
    return int(value) if value.isdigit() else None


class RunLock:
    """An exclusive, non-blocking lock on a run folder; ``release`` (or process death) frees it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._handle: Optional[IO[str]] = None

    def acquire(self) -> "RunLock":
        path = self.folder / LOCK_NAME
        try:
            handle = open(path, "a+")
        except OSError as exc:
            raise ConfigError(f"cannot write to run folder {self.folder}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            holder = read_holder(self.folder)
            who = holder.describe() if holder else "another process"
            raise ConfigError(f"run folder {self.folder} is being written by {who}; wait for it to finish or "
                              f"stop it (a folder never has two writers)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "owner_pid": _owner_from_env(), "started": time.time()}))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock; the file stays (no unlink race)
            self._handle = None

    @property
    def held(self) -> bool:
        return self._handle is not None


def read_holder(folder: Path) -> Optional[LockHolder]:
    """Who holds the folder's lock right now, or None when nobody does (a free lock whatever the file says)."""
    path = folder / LOCK_NAME
    if not path.is_file():
        return None
    with open(path, "a+") as probe:
        try:
            fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            probe.seek(0)
            return _parse_holder(probe.read())
        fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
    return None


def _parse_holder(text: str) -> LockHolder:
    try:
        info = json.loads(text)
        return LockHolder(int(info["pid"]), info.get("owner_pid"), float(info.get("started", 0.0)))
    except (ValueError, KeyError, TypeError):
        return LockHolder(0, None, 0.0)  # written but not yet flushed by a process that is starting
