"""What ``--overwrite`` may touch: only fedloom run folders, and only files fedloom writes.

A folder qualifies when it carries the marker ``.fedloom-run`` (written by every run since the marker was
introduced) or, for older folders, a ``config.toml`` beside one of the run's own logs. Even then it is
refused if it holds anything fedloom does not write (a user's notes, a subfolder), and the current
directory, a parent of it, the home folder and ``/`` are never candidates. Replacing is a rename aside, not a
delete: the old folder lives on as ``.NAME.previous-PID`` until the new run has started (see
``RunFolder.create``), and a run killed before that point gets its predecessor back at the next start.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import sys
from pathlib import Path

from fedloom.errors import ConfigError
from fedloom.locking import LOCK_NAME, pid_alive, read_holder

RUN_MARKER = ".fedloom-run"
#: Every entry fedloom writes into a run folder. A feature that writes a new file adds its name here, so that
#: ``--overwrite`` keeps refusing folders that hold anything else.
RUN_FOLDER_ENTRIES = {
    RUN_MARKER, LOCK_NAME, "config.toml", "metrics.jsonl", "timings.jsonl", "clients.csv", "accuracy.png",
    "summary.json", "FAILED", "checkpoint.pt", "run.log", "client_states", "tensorboard",
    "partition.json", "label_counts.csv", "partition.png", "label_distribution.png",
}
#: Temporary files of atomic writes (``.NAME.XXXX.tmp``): left only by a process killed mid-write.
TEMPORARY_PATTERNS = (".*.tmp",)
_RUN_LOGS = ("metrics.jsonl", "summary.json", "FAILED", "checkpoint.pt", "run.log")


def is_run_folder(path: Path) -> bool:
    if (path / RUN_MARKER).is_file():
        return True
    return (path / "config.toml").is_file() and any((path / name).exists() for name in _RUN_LOGS)


def foreign_entries(path: Path) -> list[str]:
    """Names in ``path`` that fedloom does not write."""
    return sorted(entry.name for entry in path.iterdir() if entry.name not in RUN_FOLDER_ENTRIES
                  and not any(fnmatch.fnmatch(entry.name, pattern) for pattern in TEMPORARY_PATTERNS))


def _protected(resolved: Path) -> str | None:
    cwd = Path.cwd().resolve()
    if resolved == Path(resolved.anchor):
        return "the root of the file system"
    if resolved == Path.home().resolve():
        return "your home folder"
    if resolved == cwd:
        return "the current directory"
    if resolved in cwd.parents:
        return "a parent of the current directory"
    return None


def check_replaceable(path: Path) -> None:
    """ConfigError unless ``path`` is a fedloom run folder that holds only what fedloom wrote."""
    what = _protected(path.resolve())
    if what:
        raise ConfigError(f"--overwrite refused: {path} is {what}; give --out a run folder of its own")
    if not is_run_folder(path):
        shown = ", ".join(foreign_entries(path)[:5])
        raise ConfigError(f"--overwrite refused: {path} is not a fedloom run folder (it holds {shown}); fedloom "
                          f"only replaces its own run folders, so choose another --out")
    foreign = foreign_entries(path)
    if foreign:
        raise ConfigError(f"--overwrite refused: run folder {path} also holds files fedloom did not write "
                          f"({', '.join(foreign[:5])}); move them out or choose another --out")
    holder = read_holder(path)
    if holder is not None:
        raise ConfigError(f"--overwrite refused: run folder {path} is being written by {holder.describe()}")


def _aside_name(path: Path, pid: int) -> Path:
    return path.parent / f".{path.name}.previous-{pid}"


def move_aside(path: Path) -> Path:
    """Rename the run folder to its hidden sibling (atomic on one file system)."""
    aside = _aside_name(path, os.getpid())
    if aside.exists():
        shutil.rmtree(aside)
    try:
        os.replace(path, aside)
    except OSError as exc:
        raise ConfigError(f"cannot replace run folder {path}: {exc.strerror or exc}") from None
    return aside


def put_back(aside: Path, path: Path) -> None:
    """Undo ``move_aside``: drop whatever the failed new run wrote at ``path`` and restore the old folder."""
    if path.exists() and (is_run_folder(path) or not any(path.iterdir())) and not foreign_entries(path):
        shutil.rmtree(path, ignore_errors=True)
    if not path.exists():
        os.replace(aside, path)


def recover_previous(path: Path) -> None:
    """A run killed before its start completed left its predecessor aside: restore it (the killed run's
    partial folder is fedloom's own and is dropped) or, when the folder at ``path`` completed anyway,
    delete it."""
    if not path.parent.is_dir():
        return
    for aside in path.parent.glob(f".{glob_escape(path.name)}.previous-*"):
        pid = aside.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        if (path / "summary.json").is_file():
            shutil.rmtree(aside, ignore_errors=True)
            continue
        put_back(aside, path)
        if not aside.exists():
            print(f"fedloom: restored {path} (an --overwrite of it was killed before the new run started)",
                  file=sys.stderr)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files of atomic writes whose writer was killed (the caller holds the folder's lock, so no
    live writer owns any of them)."""
    for pattern in TEMPORARY_PATTERNS:
        for stale in path.glob(pattern):
            if stale.is_file():
                stale.unlink(missing_ok=True)
    states = path / "client_states"
    if states.is_dir():
        for stale in states.glob("*/*.tmp"):
            stale.unlink(missing_ok=True)
