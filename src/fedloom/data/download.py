"""Checksum-verified downloads into the fedloom cache, used only when a user asks for them.

A loader calls :func:`fetch` only when ``--<dataset>.download true`` is given or ``FEDLOOM_DOWNLOAD=1`` is set;
otherwise a missing file is a DataError that says where fedloom looked and how to get the files. Every file is
written to ``<name>.part`` and renamed only after its digest matches the official one, so an interrupted or
tampered download never looks like a valid dataset.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fedloom.errors import DataError

CHUNK = 1 << 20
TIMEOUT_S = 60  # per socket operation: a dead mirror fails instead of hanging


@dataclass(frozen=True)
class RemoteFile:
    """One official file: where it lives and its published digest ('md5:...' or 'sha256:...')."""

    name: str
    url: str
    digest: str


def download_requested(option: bool) -> bool:
    """True when the dataset option ``download`` is set or the environment says FEDLOOM_DOWNLOAD=1."""
    return bool(option) or os.environ.get("FEDLOOM_DOWNLOAD", "").strip().lower() in ("1", "true", "yes", "on")


def default_data_root() -> Path:
    """Where downloads go: $FEDLOOM_CACHE if set, else ~/.cache/fedloom."""
    return Path(os.environ.get("FEDLOOM_CACHE") or "~/.cache/fedloom").expanduser()


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks (datasets can be gigabytes)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, digest: str) -> None:
    """Raise DataError unless ``path`` has ``digest`` ('md5:<hex>' or 'sha256:<hex>')."""
    algorithm, _, expected = digest.partition(":")
    if algorithm not in ("md5", "sha256") or not expected:
        raise ValueError(f"digest must be 'md5:<hex>' or 'sha256:<hex>', got {digest!r}")
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise DataError(
            f"{path}: {algorithm} checksum mismatch (expected {expected}, got {actual}); the file is corrupt, "
            "truncated or not the official release; delete it and download it again"
        )


def fetch(remote: RemoteFile, folder: Path) -> Path:
    """``folder/remote.name``, downloaded and verified if it is not there yet (an existing file is verified)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.name
    if not target.is_file():
        part = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(remote.url, timeout=TIMEOUT_S) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out, CHUNK)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise DataError(f"download of {remote.url} failed: {exc}") from exc
        try:
            verify_file(part, remote.digest)
        except DataError:
            part.unlink(missing_ok=True)
            raise
        part.replace(target)
        return target
    verify_file(target, remote.digest)
    return target


def extract(archive: Path, folder: Path, members: Optional[list[str]] = None) -> None:
    """Unpack a .zip or .tar(.gz) archive into ``folder`` (all members, or only ``members``), refusing paths
    that would escape it."""
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = members if members is not None else zf.namelist()
            for name in names:
                _check_inside(root, name)
                zf.extract(name, folder)
        return
    with tarfile.open(archive) as tf:
        chosen = [m for m in tf.getmembers() if members is None or m.name in members]
        for member in chosen:
            _check_inside(root, member.name)
        tf.extractall(folder, members=chosen, filter="data")


def _check_inside(root: Path, name: str) -> None:
    if not (root / name).resolve().is_relative_to(root):
        raise DataError(f"archive member {name!r} would be written outside {root}; refusing to extract")
