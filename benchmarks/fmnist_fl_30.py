"""Regenerate docs/results/fmnist-fl-30.md's tables: the report of benchmarks/results/fmnist-fl-30 (completed runs)
and the per-round table of every run, finished or not (benchmarks/fl_directions.py).

    python benchmarks/fmnist_fl_30.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = "benchmarks/results/fmnist-fl-30"
DOC = ROOT / "docs/results/fmnist-fl-30.md"


def main() -> None:
    subprocess.run([sys.executable, "-m", "fedloom.cli", "report", RUNS, "--out", "docs/results/fmnist-fl-30",
                    "--reference", "benchmarks/reference/pfllib-leaderboard.csv", "--into", str(DOC),
                    "--title", "Federated optimization on Fashion-MNIST, 30 rounds"], check=True, cwd=ROOT)
    table = subprocess.run([sys.executable, "benchmarks/fl_directions.py", RUNS, "--per-table", "8", "--baseline",
                            "fedavg"], check=True, cwd=ROOT, capture_output=True, text=True).stdout.strip()
    text = DOC.read_text()
    block = f"<!-- directions:start -->\n{table}\n<!-- directions:end -->"
    DOC.write_text(re.sub(r"<!-- directions:start -->.*?<!-- directions:end -->", lambda _: block, text,
                          flags=re.DOTALL))


if __name__ == "__main__":
    main()
