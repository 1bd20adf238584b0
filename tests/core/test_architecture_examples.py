"""The three seam examples of docs/architecture.md are complete files that work as printed: a transform with
a wire codec, an aggregator, a round pattern."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from typing import Iterator

import pytest

from fedloom.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
BASE = ["run", "--dataset", "digits", "--clients", "6", "--rounds", "2", "--device", "cpu", "--threads", "1"]


def example(title: str) -> str:
    text = DOC.read_text()
    match = re.search(rf"### Example: {title}\n```python\n(.*?)```", text, re.S)
    assert match, f"no example '{title}' in {DOC}"
    return match.group(1)


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    from fedloom.patterns import PATTERNS
    from fedloom.pipeline.aggregators import AGGREGATORS
    from fedloom.pipeline.transforms import TRANSFORMS

    examples = [("an upload transform with a wire codec", TRANSFORMS, "half"),
                ("a server aggregator", AGGREGATORS, "median-norm-mean"), ("a round pattern", PATTERNS, "shuffled-cyclic")]
    for title, registry, name in examples:
        if name not in registry:
            module = types.ModuleType(f"architecture_example_{name.replace('-', '_')}")
            sys.modules[module.__name__] = module  # dataclasses look their module up
            exec(compile(example(title), f"<{DOC.name}: {title}>", "exec"), module.__dict__)
    yield
    for _, registry, name in examples:  # other tests list the registries' names
        registry._items.pop(name, None)


def last(out: Path) -> dict:
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


def test_half_transform_halves_the_upload_bytes(tmp_path: Path) -> None:
    assert main(BASE + ["--out", str(tmp_path / "a")]) == 0
    assert main(BASE + ["--transform", "half", "--half.scale", "4", "--out", str(tmp_path / "b")]) == 0
    assert last(tmp_path / "b")["bytes_up"] * 2 == last(tmp_path / "a")["bytes_up"]


def test_aggregator_reports_its_metric_and_validates_options(tmp_path: Path, capsys) -> None:
    assert main(BASE + ["--aggregator", "median-norm-mean", "--out", str(tmp_path / "a")]) == 0
    assert "server_clipped" in last(tmp_path / "a")
    assert main(BASE + ["--aggregator", "median-norm-mean", "--median-norm-mean.factor", "0",
                        "--out", str(tmp_path / "b")]) != 0
    assert "factor" in capsys.readouterr().err


def test_shuffled_cyclic_pattern_runs_a_server_algorithm(tmp_path: Path) -> None:
    assert main(BASE + ["--pattern", "shuffled-cyclic", "--join-ratio", "0.5", "--out", str(tmp_path / "a")]) == 0
    assert last(tmp_path / "a")["clients_sampled"] == 3
