"""With one global model scored on a shared global test set, the report's per-client columns (client p10, client
std) have nothing to measure and say "—" instead of repeating the global accuracy as a spread of zero."""

from __future__ import annotations

from pathlib import Path

from fedloom.bench.report import write_report
from fedloom.cli import main

RUN = ["--dataset", "digits", "--model", "logreg", "--clients", "4", "--rounds", "2", "--lr", "0.05", "--quiet",
       "--device", "cpu", "--algorithm", "fedavg"]


def _row_cells(md: str, label: str) -> dict[str, str]:
    header = next(line for line in md.splitlines() if line.startswith("| algorithm"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = next(line for line in md.splitlines() if line.startswith(f"| {label}"))
    return dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))


def test_global_test_split_has_no_client_spread_columns(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    for split in ("per-client", "global"):
        assert main(["run", *RUN, "--test-split", split, "--out", str(tmp_path / split / "runs" / "fedavg"),
                     "--cache-dir", cache]) == 0
        write_report(tmp_path / split / "runs", tmp_path / split / "report")
    shared = _row_cells((tmp_path / "global" / "report" / "report.md").read_text(), "fedavg")
    assert shared["client p10 (%)"] == "—" and shared["client std (pts)"] == "—"
    own = _row_cells((tmp_path / "per-client" / "report" / "report.md").read_text(), "fedavg")
    assert own["client p10 (%)"] != "—" and float(own["client std (pts)"]) > 0
