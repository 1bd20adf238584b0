"""Record the golden metrics.jsonl of every registered algorithm (serial and processes engines) on a small
fixed digits setting. Run once, before a refactor, from the code whose behaviour must be kept:

    PYTHONPATH=<checkout>/src OMP_NUM_THREADS=1 python tests/golden/make_golden.py

tests/golden/test_golden.py then requires byte-identical metrics from the current code."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
SETTING = ["--dataset", "digits", "--model", "mlp", "--clients", "6", "--rounds", "3", "--join-ratio", "0.5",
           "--lr", "0.05", "--batch-size", "8", "--device", "cpu", "--threads", "1", "--quiet", "--seed", "3"]
ENGINES = {"serial": [], "processes": ["--engine", "processes", "--workers", "2"]}


def main() -> None:
    from fedloom.algorithms import ALGORITHMS
    from fedloom.cli import main as cli

    out = HERE / "metrics"
    out.mkdir(exist_ok=True)
    for algorithm in ALGORITHMS.names():
        for engine, flags in ENGINES.items():
            tmp = Path(tempfile.mkdtemp())
            code = cli(["run", "--algorithm", algorithm, *SETTING, *flags, "--out", str(tmp / "run")])
            assert code == 0, (algorithm, engine)
            shutil.copy(tmp / "run" / "metrics.jsonl", out / f"{algorithm}-{engine}.jsonl")
            shutil.rmtree(tmp)
            print(algorithm, engine, file=sys.stderr)


if __name__ == "__main__":
    main()
