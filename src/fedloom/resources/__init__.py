"""Files shipped inside the package: the benchmark grids and the published reference numbers the README uses.

In a checkout ``grids`` and ``reference`` are links to ``benchmarks/grids`` and ``benchmarks/reference`` (one
copy of each file); a wheel holds the files themselves. ``packaged`` lets a README command such as ``fedloom
bench benchmarks/grids/fmnist-pfl.toml`` work from an installed wheel too: a path that does not exist falls
back to the shipped file of the same name.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
KINDS = ("grids", "reference")


def packaged(path: Path) -> Path:
    """``path`` itself when it exists; else the shipped grid or reference file with the same name (when there
    is one); else ``path`` unchanged (the caller reports it missing)."""
    if path.exists():
        return path
    for kind in KINDS:
        candidate = ROOT / kind / path.name
        if candidate.is_file():
            return candidate
    return path


def shipped(kind: str) -> list[Path]:
    """The shipped files of ``kind`` ("grids" or "reference")."""
    return sorted(p for p in (ROOT / kind).iterdir() if p.is_file()) if (ROOT / kind).is_dir() else []
