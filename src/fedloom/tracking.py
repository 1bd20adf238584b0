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
from typing import Any, Iterable

from fedloom.errors import ConfigError

COMPLETE_MARKER = "summary.json"
FAILED_MARKER = "FAILED"


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class RunFolder:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path, overwrite: bool) -> "RunFolder":
        """Prepare an empty run folder; refuse to clobber a finished run unless ``overwrite``."""
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out {path} exists and is not a folder")
        if path.exists() and any(path.iterdir()):
            if not overwrite:
                state = "a completed run" if (path / COMPLETE_MARKER).exists() else "files"
                raise ConfigError(f"run folder {path} already holds {state}; use --overwrite or another --out")
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path / name, text)

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def append_jsonl(self, name: str, record: dict[str, Any]) -> None:
        with open(self.path / name, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def write_csv(self, name: str, header: list[str], rows: Iterable[list[Any]]) -> None:
        tmp = self.path / f".{name}.tmp"
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, self.path / name)

    def mark_failed(self, error: BaseException) -> None:
        (self.path / COMPLETE_MARKER).unlink(missing_ok=True)
        message = f"{type(error).__name__}: {error}\n" if str(error) else f"{type(error).__name__}\n"
        self.write_text(FAILED_MARKER, message)

    def finish(self, summary: dict[str, Any]) -> None:
        (self.path / FAILED_MARKER).unlink(missing_ok=True)
        self.write_json(COMPLETE_MARKER, summary)
