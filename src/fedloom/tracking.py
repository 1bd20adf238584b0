"""The run folder: the source of truth for a run.

Layout: ``config.toml`` (resolved), ``partition.json``/``label_counts.csv``/``partition.png``, ``metrics.jsonl``
(one JSON object per evaluated round, deterministic given the config), ``timings.jsonl`` (seconds per round;
kept apart so that metrics.jsonl is byte-identical across repeated runs), ``clients.csv`` (final per-client
metrics), ``accuracy.png`` and ``summary.json``. summary.json is written last, so its presence means the run
completed; a failed run leaves ``FAILED`` with the error instead and never a summary.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

from fedloom.errors import ConfigError
from fedloom.folder_safety import (RUN_MARKER, check_replaceable, move_aside, put_back, recover_previous,
                                  remove_stale_temporaries)
from fedloom.locking import RunLock

COMPLETE_MARKER = "summary.json"
FAILED_MARKER = "FAILED"


def file_mode() -> int:
    """The mode an ordinary ``open(path, "w")`` gives a new file: 0666 less the umask (0644 under the usual
    022). ``tempfile.mkstemp`` creates its files 0600, which made config.toml and summary.json unreadable to
    colleagues on a shared machine while metrics.jsonl was not; atomic writes apply this mode explicitly.
    Linux reports the umask in /proc/self/status (thread-safe); elsewhere it is read by setting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:  # never leave the temporary behind (a kill -9 can; the next start sweeps it)
        Path(tmp).unlink(missing_ok=True)
        raise


class RunFolder:
    """A run folder held by this process (an exclusive lock, see fedloom.locking).

    ``create(..., overwrite=True)`` replaces a previous run without ever losing it to a failed start: the old
    folder is renamed aside (``.NAME.previous-PID``), the new run is written at NAME, and the old one is
    deleted only by ``commit_start`` once the new run has written its config, partition and round-0
    evaluation; ``abort_start`` (any failure before that) puts the old folder back.
    """

    def __init__(self, path: Path, lock: Optional[RunLock] = None) -> None:
        self.path = path
        self.lock = lock
        self.previous: Optional[Path] = None  # the replaced run, until commit_start

    @classmethod
    def create(cls, path: Path, overwrite: bool) -> "RunFolder":
        """Prepare an empty run folder; refuse to clobber a finished run unless ``overwrite``, and refuse to
        overwrite anything that is not a fedloom run folder (see :mod:`fedloom.folder_safety`)."""
        recover_previous(path)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out {path} exists and is not a folder")
        previous: Optional[Path] = None
        if path.exists() and any(path.iterdir()):
            if not overwrite:
                state = "a completed run" if (path / COMPLETE_MARKER).exists() else "files"
                raise ConfigError(f"run folder {path} already holds {state}; use --overwrite or another --out")
            check_replaceable(path)
            previous = move_aside(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            folder = cls(path, RunLock(path).acquire())
            atomic_write_text(path / RUN_MARKER, "fedloom run folder\n")
        except BaseException as exc:
            if previous is not None:
                put_back(previous, path)
            if isinstance(exc, OSError):
                raise ConfigError(f"cannot create run folder {path}: {exc.strerror or exc}") from None
            raise
        folder.previous = previous
        return folder

    @classmethod
    def open_existing(cls, path: Path) -> "RunFolder":
        """An existing run folder, locked for writing (``--resume``)."""
        recover_previous(path)
        folder = cls(path, RunLock(path).acquire())
        remove_stale_temporaries(path)
        return folder

    def commit_start(self) -> None:
        """The new run has started: the run it replaced can go."""
        if self.previous is not None:
            shutil.rmtree(self.previous, ignore_errors=True)
            self.previous = None

    def abort_start(self) -> None:
        """The new run failed before it started: remove it and restore the run it replaced."""
        if self.previous is not None:
            self.release()
            put_back(self.previous, self.path)
            self.previous = None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path / name, text)

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def append_jsonl(self, name: str, record: dict[str, Any]) -> None:
        with open(self.path / name, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def write_csv(self, name: str, header: list[str], rows: Iterable[list[Any]]) -> None:
        tmp = self.path / f".{name}.tmp"
        try:
            with open(tmp, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(rows)
            os.replace(tmp, self.path / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def mark_failed(self, error: BaseException) -> None:
        (self.path / COMPLETE_MARKER).unlink(missing_ok=True)
        message = f"{type(error).__name__}: {error}\n" if str(error) else f"{type(error).__name__}\n"
        self.write_text(FAILED_MARKER, message)

    def finish(self, summary: dict[str, Any]) -> None:
        (self.path / FAILED_MARKER).unlink(missing_ok=True)
        self.write_json(COMPLETE_MARKER, summary)


class MemoryFolder:
    """A run "folder" kept in memory (``fedloom.api.run(out=None)``): the same writes as RunFolder, into dicts;
    ``path`` is None, so nothing that needs a file (plots, checkpoints) is drawn or saved."""

    path = None

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.lines: dict[str, list[dict[str, Any]]] = {}
        self.tables: dict[str, tuple[list[str], list[list[Any]]]] = {}

    def write_text(self, name: str, text: str) -> None:
        self.texts[name] = text

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def append_jsonl(self, name: str, record: dict[str, Any]) -> None:
        self.lines.setdefault(name, []).append(dict(record))

    def write_csv(self, name: str, header: list[str], rows: Iterable[list[Any]]) -> None:
        self.tables[name] = (list(header), [list(row) for row in rows])
