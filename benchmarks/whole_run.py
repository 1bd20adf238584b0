"""Whole runs, timed from outside: the wall time of a command from its start to its summary, as a user sees it.

Per-round figures (benchmarks/engines.py) leave out what a user also waits for: interpreter start and imports, data
loading and partitioning, worker start-up, the round-0 evaluation, the partition report and the accuracy figure.
This script runs each configuration as its own process (1 torch thread per process, OMP_NUM_THREADS=1), ``--repeats``
times interleaved (so a drifting machine affects every configuration alike), and reports the median wall time, the
CPU time of the process tree, the time spent in rounds (sum of train and eval seconds in timings.jsonl) and the rest,
the fixed cost. The plain mode is benchmarks/plain_loop.py's hand-written loop run as a whole script on the same
partition (its imports and data loading included).

Workloads: M1 (Fashion-MNIST, 1,000 clients Dir(0.5), MLP 784-200-200-10, 10% per round, lr 0.05, 40 rounds, evaluation
every 10) and W1 (20 clients Dir(0.1), FedAvgCNN, every client, lr 0.005, 5 rounds, evaluation every round).
``--before SRC`` also runs ``--before-modes`` on another checkout's ``src``, interleaved with this code's runs (a
before/after comparison in one sitting; ratios are then to serial@before); ``--pythonpath DIR`` runs only that code.

    python benchmarks/engines.py --whole-run --workloads m1 --repeats 3
    python benchmarks/whole_run.py --workloads m1 w1 --modes plain serial processes --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = {
    "m1": ["--dataset", "fashion-mnist", "--partition", "dirichlet", "--alpha", "0.5", "--clients", "1000",
           "--model", "mlp", "--join-ratio", "0.1", "--lr", "0.05", "--rounds", "40", "--eval-every", "10"],
    "w1": ["--dataset", "fashion-mnist", "--partition", "dirichlet", "--alpha", "0.1", "--clients", "20",
           "--model", "cnn", "--join-ratio", "1.0", "--lr", "0.005", "--rounds", "5", "--eval-every", "1"],
}
COMMON = ["--algorithm", "fedavg", "--batch-size", "10", "--local-epochs", "1", "--seed", "1", "--device", "cpu",
          "--threads", "1", "--quiet", "--overwrite"]
MODES = {
    "serial": ["--engine", "serial"],
    "vectorized": ["--engine", "vectorized"],
    "processes": ["--engine", "processes", "--workers", "2"],  # --processes.start auto: fork here
    "processes-spawn": ["--engine", "processes", "--workers", "2", "--processes.start", "spawn"],
    "serial-compile": ["--engine", "serial", "--compile"],
    "processes-compile": ["--engine", "processes", "--workers", "2", "--compile"],
}


def command(workload: str, mode: str, out: Path) -> list[str]:
    if mode == "plain":
        return [sys.executable, str(HERE / "plain_loop.py"), *RUNS[workload], "--seed", "1"]
    return [sys.executable, "-m", "fedloom.cli", "run", *RUNS[workload], *COMMON, *MODES[mode], "--out", str(out)]


def time_once(cmd: list[str], env: dict[str, str], out: Path) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rounds = in_rounds(out, done.stdout)
    return {"wall": wall, "cpu": cpu, "rounds": rounds, "fixed": wall - rounds}


def in_rounds(out: Path, stdout: str) -> float:
    """Seconds spent in rounds: timings.jsonl for fedloom runs, the plain loop's own last line otherwise."""
    timings = out / "timings.jsonl"
    if timings.is_file():
        rows = [json.loads(line) for line in timings.read_text().splitlines() if line.strip()]
        return sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in rows)
    return float(json.loads(stdout.strip().splitlines()[-1])["round_seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["m1", "w1"], choices=list(RUNS))
    parser.add_argument("--modes", nargs="+", default=["plain", "serial", "processes"],
                        choices=["plain", *MODES])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pythonpath", default=None, help="another checkout's src folder (before/after)")
    parser.add_argument("--before", default=None, metavar="SRC",
                        help="also run --before-modes on another checkout's src, interleaved with this code's runs")
    parser.add_argument("--before-modes", nargs="+", default=["plain", "serial", "processes"])
    parser.add_argument("--label", default="", help="a name for this code in the output (e.g. before)")
    parser.add_argument("--scratch", default="bench-out/whole-run")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([args.pythonpath, str(HERE)])
    before_env = {**env, "PYTHONPATH": os.pathsep.join([args.before, str(HERE)])} if args.before else None
    plan = [(mode, mode, env) for mode in args.modes]
    if before_env is not None:  # interleaved: a drifting machine affects before and after alike
        plan += [(f"{mode}@before", mode, before_env) for mode in args.before_modes]
    results: dict[str, dict[str, list[dict]]] = {}
    for workload in args.workloads:
        results[workload] = {name: [] for name, _, _ in plan}
        for _ in range(args.repeats):
            for name, mode, run_env in plan:
                out = Path(args.scratch) / f"{workload}-{name.replace('@', '-')}"
                results[workload][name].append(time_once(command(workload, mode, out), run_env, out))
        print(report(workload, results[workload], args.label), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def report(workload: str, runs: dict[str, list[dict]], label: str) -> str:
    med = {mode: {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu", "rounds", "fixed")}
           for mode, rs in runs.items()}
    base = med.get("serial@before", med.get("serial", {})).get("wall")
    lines = [f"\n{workload} whole run{f' ({label})' if label else ''}, 1 torch thread per process, median of "
             f"{len(next(iter(runs.values())))}:",
             f"{'mode':<20}{'wall s':>8}{'CPU s':>8}{'rounds s':>10}{'fixed s':>9}{'serial/this':>13}"
             + ("   (serial = serial@before)" if "serial@before" in med else "")]
    for mode, m in med.items():
        ratio = f"{base / m['wall']:.2f}x" if base else "-"
        lines.append(f"{mode:<20}{m['wall']:>8.2f}{m['cpu']:>8.2f}{m['rounds']:>10.2f}{m['fixed']:>9.2f}{ratio:>13}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
