"""``fedloom report ... --into DOC``: keep a hand-written results page's tables in step with the runs.

The page holds its narrative around a marked block; everything between the two markers is replaced by one
``### <partition>`` table per group, exactly as in report.md, so regenerating never touches the prose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fedloom.errors import ConfigError

START, END = "<!-- tables:start -->", "<!-- tables:end -->"


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table (cells' pipes escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]


def tables_block(sections: Sequence[tuple[str, Sequence[str], Sequence[Sequence[str]]]]) -> str:
    """(heading, header, rows) per group -> the markdown that goes between the markers."""
    return "\n".join("\n".join([f"### {heading}", "", *table_lines(header, rows)]) + "\n"
                     for heading, header, rows in sections)


def splice(doc: str, block: str, where: str = "the document") -> str:
    """Replace the text between START and END (markers kept) by ``block``."""
    start, end = doc.find(START), doc.find(END)
    if start < 0 or end < 0 or end < start:
        raise ConfigError(f"{where} has no '{START}' ... '{END}' block to write the tables into")
    return doc[:start] + START + "\n" + block + doc[end:]


def read_marked(path: Path) -> str:
    """The document's text, refused up front (before any report is written) when it cannot take tables."""
    if not path.is_file():
        raise ConfigError(f"--into: file not found: {path}")
    doc = path.read_text()
    splice(doc, "", where=str(path))
    return doc
