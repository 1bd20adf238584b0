"""Looking at live processes from tests (fault and engine tests): a process's direct children, from /proc."""

from __future__ import annotations

from pathlib import Path


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc), e.g. a processes-engine run's workers."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # field 4 (ppid) follows the ")" that closes the command name, which may itself contain spaces
            if int(stat.rsplit(")", 1)[-1].split()[1]) == pid:
                found.append(int(entry.name))
    return found
