"""Provenance of a run: which code, libraries and machine produced it (recorded in summary.json).

Everything here is best effort and never fails a run: a missing ``git`` binary, an installed wheel (no checkout)
or an unreadable /proc/cpuinfo give ``None`` for that entry.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

import fedloom

GIT_SECONDS = 5.0  # a hung git (network file system) must not hold up a run


def provenance(device: Any, threads: int) -> dict[str, Any]:
    """The provenance block of summary.json for a run on ``device`` with ``threads`` torch threads."""
    return {**static_provenance(), "device": describe_device(device), "threads": int(threads),
            "torch_threads": torch.get_num_threads()}


def code_provenance() -> dict[str, Any]:
    """{"git_commit", "git_dirty"} of the code this process runs (static_provenance's, taken once)."""
    static = static_provenance()
    return {"git_commit": static["git_commit"], "git_dirty": static["git_dirty"]}


@functools.lru_cache(maxsize=1)
def static_provenance() -> dict[str, Any]:
    """What does not change within a process, computed once: a run takes it when it starts
    (run.prepare_experiment), so the commit is that of the code the process loaded, not the HEAD of a commit
    made while it trained."""
    commit, dirty = git_commit(source_root())
    return {"fedloom_version": fedloom.__version__, "git_commit": commit, "git_dirty": dirty,
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "hostname": platform.node(), "command": " ".join(sys.argv[:1] + sys.argv[1:])[:1000] or None}


def source_root() -> Optional[Path]:
    """The checkout fedloom is imported from (``<root>/src/fedloom``), or None for an installed package."""
    root = Path(fedloom.__file__).resolve().parent.parent.parent
    return root if (root / ".git").exists() else None


def git_commit(root: Optional[Path]) -> tuple[Optional[str], Optional[bool]]:
    """(HEAD's commit, whether tracked files differ from it) of the checkout at ``root``; (None, None) when
    there is no checkout or no git."""
    if root is None:
        return None, None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=GIT_SECONDS)
        if head.returncode != 0:
            return None, None
        diff = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--"], capture_output=True,
                              timeout=GIT_SECONDS)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head.stdout.strip() or None, (diff.returncode == 1 if diff.returncode in (0, 1) else None)


def cpu_model() -> Optional[str]:
    """The CPU's model name (Linux /proc/cpuinfo, else what the platform module knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def describe_device(device: Any) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H200)``."""
    text = str(device)
    if text.startswith("cuda") and torch.cuda.is_available():
        try:
            return f"{text} ({torch.cuda.get_device_name(torch.device(text))})"
        except (RuntimeError, AssertionError):
            return text
    return text
