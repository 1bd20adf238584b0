"""docs/python.md's code blocks run, in order, as one notebook would run them (in a temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedloom.algorithms import ALGORITHMS

DOC = Path(__file__).resolve().parents[2] / "docs" / "python.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)


def test_the_python_guide_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ALGORITHMS, "_items", dict(ALGORITHMS._items))  # the guide registers a plugin
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 5
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{DOC.name} block {number}", "exec"), namespace)  # noqa: S102
    assert namespace["result"].stopped_early and namespace["result"].summary["rounds"] < 20
    assert (tmp_path / "partition.pdf").stat().st_size > 0
    assert sorted(namespace["runs"]["fedprox.mu"]) == [0.01, 0.1]
    assert namespace["damped"].summary["algorithm"] == "fedavg-damped"
