"""`fedloom report --into DOC`: the tables between the markers are replaced, the prose around them kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedloom.bench.splice import END, START, read_marked, splice, tables_block
from fedloom.errors import ConfigError


def test_splice_replaces_only_the_marked_block() -> None:
    doc = f"# Title\nintro\n{START}\nold table\n{END}\nreading\n"
    block = tables_block([("dirichlet-0.1", ["algorithm", "best"], [["fedavg", "71.26"], ["a|b", "1"]])])
    new = splice(doc, block)
    assert new == (f"# Title\nintro\n{START}\n### dirichlet-0.1\n\n| algorithm | best |\n|---|---|\n"
                   f"| fedavg | 71.26 |\n| a\\|b | 1 |\n{END}\nreading\n")
    assert splice(new, block) == new  # idempotent: regenerating twice changes nothing


def test_documents_without_markers_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        read_marked(tmp_path / "missing.md")
    page = tmp_path / "page.md"
    page.write_text(f"{END}\n{START}\n")  # markers in the wrong order
    with pytest.raises(ConfigError, match="no '<!-- tables:start -->'"):
        read_marked(page)
