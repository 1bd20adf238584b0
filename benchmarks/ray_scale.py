"""Scale probe of the Ray engine (issue 25): 100,000 clients, an M1-size MLP (784-200-200-10), 1% of the clients
per round, a personal model per client (``local``) in the disk client-state store; peak memory of every process
(driver and each Ray worker) and seconds per round, for one or more cohort sizes (memory should grow with the
cohort, not with the federation).

Data: FedProx's Synthetic(1, 1) with 784 features (the MLP of M1 takes 784 inputs), one device per client and
at most ``--samples`` samples each (100,000 clients cannot each have samples of Fashion-MNIST's 70,000). Every
worker holds the whole federation's data (as the processes engine's workers do), so the data is the floor of
every process's memory: 100,000 × samples × 784 × 4 bytes. Rounds run without evaluation (evaluating 100,000
personal models is not what is measured); the first round also writes the first states.

    OMP_NUM_THREADS=1 python benchmarks/ray_scale.py --clients 100000 --join-ratios 0.005 0.01 --rounds 3

One torch thread per process; prints one JSON line per cohort size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def probe(clients: int, join_ratio: float, rounds: int, workers: int, samples: int, scratch: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    from fedloom.config import RunConfig
    from fedloom.rounds import federation_of
    from fedloom.run import build_experiment, load_data, resolve_config, step_round
    from engines import engine_worker_pids, peak_rss_of, self_rss_mb

    out = scratch / f"scale-{clients}-{join_ratio}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = resolve_config(RunConfig(
        dataset="synthetic", clients=clients, join_ratio=join_ratio, algorithm="local", model="mlp",
        batch_size=10, lr=0.05, rounds=1000, eval_every=1000, store="disk", engine="ray", workers=workers,
        device="cpu", threads=1, seed=1, out=str(out),
        options={"synthetic": {"dimension": 784, "max_samples_per_device": samples},
                 "mlp": {"hidden": 200, "layers": 2}}))
    t0 = time.perf_counter()
    data = load_data(cfg, torch.device("cpu"))
    exp = build_experiment(cfg, data, torch.device("cpu"))
    setup = time.perf_counter() - t0
    server = exp.algorithm.init_server(exp.runtime.init_params, federation_of(exp.data))
    seconds, totals = [], {}
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        server = step_round(exp, server, r, totals).server
        seconds.append(time.perf_counter() - t0)
    pids = dict(zip(sorted(exp.engine.transport.info), engine_worker_pids(exp.engine)))
    workers_rss = {str(w): round(peak_rss_of(pid)) for w, pid in pids.items()}
    # the peak includes start-up (data generation); the resident size after the rounds is the steady state
    workers_now = {str(w): round(status_mb(pid, "VmRSS")) for w, pid in pids.items()}
    driver_now = round(status_mb(os.getpid(), "VmRSS"))
    idle = exp.engine.round_stats().get("idle_fraction")
    exp.engine.close()
    store_bytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"clients": clients, "join_ratio": join_ratio, "cohort": round(clients * join_ratio),
            "workers": workers, "samples_per_client_max": samples, "rounds": rounds,
            "seconds_per_round": [round(s, 2) for s in seconds], "median_s_per_round": round(statistics.median(
                seconds[1:] or seconds), 2), "setup_seconds": round(setup, 1), "driver_peak_rss_mb": round(
                self_rss_mb()), "worker_peak_rss_mb": workers_rss,
            "driver_rss_after_rounds_mb": driver_now, "worker_rss_after_rounds_mb": workers_now,
            "disk_store_mb": round(store_bytes / 2**20),
            "last_idle_fraction": idle, "data_mb_per_process": round(data.dataset.x.numel() * 4 / 2**20)}


def status_mb(pid: int, field: str) -> float:
    """A field of /proc/PID/status in MB (VmRSS: resident now; VmHWM: the peak), 0 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--join-ratios", type=float, nargs="+", default=[0.01])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=5, help="cap of each client's samples")
    parser.add_argument("--scratch", default="bench-out/ray-scale")
    parser.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    if args.one is not None:
        print(json.dumps(probe(args.clients, args.one, args.rounds, args.workers, args.samples, scratch)))
        return 0
    for ratio in args.join_ratios:  # each in its own process, so that peak memory is its own
        cmd = [sys.executable, __file__, "--one", str(ratio), "--clients", str(args.clients), "--rounds",
               str(args.rounds), "--workers", str(args.workers), "--samples", str(args.samples), "--scratch",
               str(scratch)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        print(lines[-1] if done.returncode == 0 and lines else json.dumps(
            {"join_ratio": ratio, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
