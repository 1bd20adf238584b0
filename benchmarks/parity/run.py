"""fedloom vs PFLlib's own code on identical clients (Zhang et al., "PFLlib", JMLR 2025): one command.

    python benchmarks/parity/run.py --partition DIR/clients.npz --pfllib /tmp/pfllib --out OUT \
        --rounds 10 --seeds 3 --workers 3 [--methods gpfl,fedavg,...] [--deadline 12:00] [--report-only]

1. writes the fedloom partition in PFLlib's layout (``fedloom partition --partition-file ... --pfllib``) under
   OUT/dataset/<name>, where PFLlib's ``../dataset/<name>`` finds it;
2. runs, for every method × seed, PFLlib's client/server (pfllib_side.py) and fedloom (fedloom_side.py) with the
   hyperparameters of methods.py, each in its own process at 1 torch thread, ``--workers`` at a time (niced),
   skipping curves already complete; a job still running at ``--deadline`` (UTC, HH:MM) is stopped and keeps the
   rounds it finished;
3. compares them (compare.py): OUT/report/rounds.csv, OUT/report/parity.md and one figure per method.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare import compare  # noqa: E402
from methods import METHODS, PRIORITY  # noqa: E402


def export(partition: Path, out: Path) -> Path:
    """PFLlib's layout of the partition, named by its hash (reused when present)."""
    manifest = json.loads(__import__("numpy").load(partition)["manifest"].item())
    folder = out / "dataset" / f"fedloom-{manifest['partition_hash'][:12]}"
    if not (folder / "config.json").exists():
        subprocess.run([str(Path(sys.executable).with_name("fedloom")), "partition", "--partition-file", str(partition),
                        "--dataset", manifest["dataset"], "--pfllib", str(folder), "--out", str(out / "partition")],
                       check=True)
    return folder


def complete(path: Path, rounds: int) -> bool:
    if not path.exists():
        return False
    data = json.loads(path.read_text())
    return bool(data.get("complete")) and data["rounds"] >= rounds


def jobs(methods: list[str], seeds: int, rounds: int, curves: Path, data: Path, partition: Path,
         pfllib: Path, drop_last: bool = False) -> list[tuple[Path, list[str]]]:
    """(curve file, command) of every missing curve, method by method, seed by seed."""
    out = []
    for method in methods:
        for seed in range(1, seeds + 1):
            for impl in ("pfllib", "fedloom"):
                path = curves / f"{impl}-{method}-s{seed}.json"
                if complete(path, rounds):
                    continue
                common = ["--method", method, "--rounds", str(rounds), "--seed", str(seed), "--out", str(path)]
                if impl == "pfllib":
                    cmd = [str(HERE / "pfllib_side.py"), "--pfllib", str(pfllib), "--data", str(data), *common]
                else:
                    cmd = [str(HERE / "fedloom_side.py"), "--partition", str(partition), *common,
                           *(["--drop-last"] if drop_last else [])]
                out.append((path, ["nice", "-n", "10", sys.executable, "-W", "ignore", *cmd]))
    return out


def run_jobs(todo: list[tuple[Path, list[str]]], workers: int, deadline: dt.datetime | None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list[tuple[Path, subprocess.Popen]] = []
    while todo or running:
        while todo and len(running) < workers and not past(deadline):
            path, cmd = todo.pop(0)
            log = open(path.with_suffix(".log"), "w")
            running.append((path, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
            print("started", path.name, flush=True)
        for path, proc in list(running):
            if proc.poll() is not None:
                running.remove((path, proc))
                print("finished", path.name, "rc", proc.returncode, flush=True)
            elif past(deadline):
                proc.terminate(), proc.wait()
                running.remove((path, proc))
                print("stopped at the deadline", path.name, flush=True)
        if past(deadline) and not running:
            break
        time.sleep(5)


def past(deadline: dt.datetime | None) -> bool:
    return deadline is not None and dt.datetime.now(dt.timezone.utc) >= deadline


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--partition", type=Path, required=True, help="fedloom partition file (clients.npz)")
    p.add_argument("--pfllib", type=Path, required=True, help="PFLlib checkout (system/main.py inside)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--methods", default=",".join(PRIORITY), help="comma-separated, in running order")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--deadline", help="UTC HH:MM: stop running jobs then and report what finished")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--fedloom-drop-last", action="store_true",
                   help="fedloom trains with --drop-last, PFLlib's DataLoader(drop_last=True) (use its own --out; "
                        "copy PFLlib's complete curves there to reuse them)")
    a = p.parse_args()
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; shared methods: {', '.join(sorted(METHODS))}")
    curves = a.out / "curves"
    curves.mkdir(parents=True, exist_ok=True)
    if not a.report_only:
        data = export(a.partition.resolve(), a.out.resolve())
        deadline = None
        if a.deadline:
            h, m = map(int, a.deadline.split(":"))
            deadline = dt.datetime.now(dt.timezone.utc).replace(hour=h, minute=m, second=0, microsecond=0)
        run_jobs(jobs(methods, a.seeds, a.rounds, curves.resolve(), data, a.partition.resolve(),
                      a.pfllib.resolve(), a.fedloom_drop_last), a.workers, deadline)
    compare(curves, methods, a.rounds, a.out / "report")
    print((a.out / "report" / "parity.md").read_text())


if __name__ == "__main__":
    main()
