"""Engine benchmark: the same workloads on every engine and on a plain PyTorch loop, in one invocation.

Workloads (all FedAvg, SGD, batch 10, 1 local epoch, 75/25 per-client split, Fashion-MNIST):
  W1     20 clients, Dirichlet α=0.1, FedAvgCNN, all clients per round, lr 0.005
  M1     1,000 clients, Dirichlet α=0.5, MLP 784-200-200-10, 10% of clients per round, lr 0.05
  scale  10,000 clients, Dirichlet α=0.1, FedAvgCNN, `local` (every client keeps a full personal model),
         1% per round, 3 rounds, disk client-state store, evaluation of all 10,000 clients at the end

Every configuration runs in its own subprocess (so peak RSS is its own) with one torch thread per process;
the engines: plain (hand-written loop, the baseline), serial, vectorized, processes (2 workers) and
processes+vectorized; opt-in, the same with bfloat16 forward passes (``--modes processes+bf16`` ...).
Opt-in: ``--modes processes ray`` adds the Ray engine (2 actors on a local Ray cluster; ratio to processes printed).
Printed per configuration: seconds per round (median), CPU-seconds per round (main +
workers), peak RSS (main + workers), slot utilization, accuracy after each round; and ratios to the plain loop.

    python benchmarks/engines.py --workloads w1 m1 --rounds 3
    python benchmarks/engines.py --workloads scale
    python benchmarks/engines.py --whole-run --workloads m1 w1 --repeats 3   # whole CLI runs (whole_run.py)
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

WORKLOADS = {
    "w1": dict(clients=20, alpha=0.1, model="cnn", join_ratio=1.0, lr=0.005, algorithm="fedavg"),
    "m1": dict(clients=1000, alpha=0.5, model="mlp", join_ratio=0.1, lr=0.05, algorithm="fedavg"),
    "scale": dict(clients=10000, alpha=0.1, model="cnn", join_ratio=0.01, lr=0.005, algorithm="local",
                  store="disk"),
}
MODES = ["plain", "serial", "vectorized", "processes", "processes+vectorized"]
#: opt-in: the same engines with forward passes under bfloat16 autocast (--precision bfloat16)
BF16_MODES = ["serial+bf16", "vectorized+bf16", "processes+bf16"]
#: opt-in: the same engines with plain local SGD steps compiled by torch.compile (--compile; the first round
#: carries the compile time, so compare medians over rounds >= 3)
COMPILE_MODES = ["serial+compile", "processes+compile"]
#: opt-in: the Ray engine (pip install 'fedloom[ray]'), 2 actors on a local Ray cluster, compared with processes
RAY_MODES = ["ray", "ray+vectorized", "ray+tree"]  # ray+tree: --ray.reduce tree (worker partial sums)
#: opt-in: the C heap (--malloc, fedloom/engines/heap.py). fedloom's modes run with its default, tuned; the plain
#: loop with the system's. "+glibc": a fedloom engine with --malloc system; "plain+tuned-heap": the plain loop
#: in the tuned heap (what the same setting gives a hand-written loop)
HEAP_MODES = ["serial+glibc", "processes+glibc", "plain+tuned-heap"]


# ------------------------------------------------------------------------------------------ one configuration
def run_config(workload: str, mode: str, rounds: int, out: str):
    from fedloom.config import RunConfig
    from fedloom.run import resolve_config

    spec = dict(WORKLOADS[workload])
    precision = "bfloat16" if mode.endswith("+bf16") else "float32"
    compile_steps = mode.endswith("+compile")
    extra = {"ray_reduce": "tree"} if mode.endswith("+tree") else {}
    extra["malloc"] = "system" if mode.endswith("+glibc") else "tuned"
    mode = mode.removesuffix("+bf16").removesuffix("+compile").removesuffix("+tree").removesuffix("+glibc")
    mode = mode.removesuffix("+tuned-heap")
    engine, inner = {"plain": ("serial", "serial"), "processes+vectorized": ("processes", "vectorized"),
                     "ray+vectorized": ("ray", "vectorized")}.get(mode, (mode, "serial"))
    return resolve_config(RunConfig(
        dataset="fashion-mnist", partition="dirichlet", batch_size=10, local_epochs=1, rounds=rounds, seed=1,
        device="cpu", threads=1, precision=precision, compile=compile_steps, engine=engine, worker_engine=inner,
        workers=2, out=out,
        eval_every=rounds if workload == "scale" else 1, options={"mlp": {"hidden": 200, "layers": 2}},
        **spec, **extra))


def measure_one(workload: str, mode: str, rounds: int, out: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from fedloom.engines.heap import configure_heap
    from fedloom.rounds import federation_of
    from fedloom.run import build_experiment, initial_round, load_data, step_round

    cfg = run_config(workload, mode, rounds, out)
    if not mode.startswith("plain") or mode == "plain+tuned-heap":
        configure_heap(cfg.malloc)  # as prepare_experiment does; the plain loop keeps the system's heap
    t0 = time.perf_counter()
    data = load_data(cfg, torch.device("cpu"))
    exp = build_experiment(cfg, data, torch.device("cpu"))
    setup = time.perf_counter() - t0
    worker_pids = engine_worker_pids(exp.engine)
    if mode.startswith("plain"):
        return measure_plain(exp, rounds, setup)
    server, _, _ = initial_round(exp) if workload != "scale" else (exp.algorithm.init_server(
        exp.runtime.init_params, federation_of(exp.data)), None, None)
    seconds, cpu, accuracy, totals = [], [], [], {}
    for r in range(1, rounds + 1):
        c0, t0 = cpu_seconds(worker_pids), time.perf_counter()
        out_round = step_round(exp, server, r, totals)
        seconds.append(time.perf_counter() - t0)
        cpu.append(cpu_seconds(worker_pids) - c0)
        server = out_round.server
        if out_round.record:
            accuracy.append(out_round.record["accuracy"])
    worker_rss = sum(peak_rss_of(pid) for pid in worker_pids)
    exp.engine.close()
    usage = getattr(exp.engine, "usage", None)
    return {"seconds": seconds, "cpu_seconds": cpu, "accuracy": accuracy, "setup_seconds": setup,
            "peak_rss_mb": self_rss_mb() + worker_rss, "utilization": usage.utilization if usage else None,
            "workers": len(worker_pids)}


def engine_worker_pids(engine) -> list[int]:
    """The worker processes of a sharded engine (processes: its transport's links; ray: its actors' pids)."""
    transport = getattr(engine, "transport", None)
    if hasattr(transport, "links"):
        return [link.process.pid for link in transport.links]
    return [info["pid"] for info in getattr(transport, "info", {}).values()]


def measure_plain(exp, rounds: int, setup: float) -> dict:
    from plain_loop import PlainFedAvg, stock_copy

    model = stock_copy(exp.runtime.model)
    cfg = exp.config
    plain = PlainFedAvg(model, exp.data, cfg.lr, cfg.batch_size, cfg.local_epochs, cfg.seed, cfg.join_ratio)
    seconds, cpu, accuracy = [], [], []
    for r in range(1, rounds + 1):
        c0, t0 = cpu_seconds([]), time.perf_counter()
        accuracy.append(plain.round(r))
        seconds.append(time.perf_counter() - t0)
        cpu.append(cpu_seconds([]) - c0)
    return {"seconds": seconds, "cpu_seconds": cpu, "accuracy": accuracy, "setup_seconds": setup,
            "peak_rss_mb": self_rss_mb(), "utilization": None, "workers": 0}


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of this process plus the given (live) worker processes, from /proc."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError):
            pass
    return total


def peak_rss_of(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def self_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------ the driver
def run_subprocess(workload: str, mode: str, rounds: int, scratch: Path) -> dict:
    out = scratch / f"{workload}-{mode.replace('+', '-')}"
    cmd = [sys.executable, __file__, "--one", workload, mode, "--rounds", str(rounds), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(workload: str, results: dict[str, dict]) -> list[str]:
    base = results.get("plain", {})
    base_s = statistics.median(base["seconds"]) if "seconds" in base else None
    lines = [f"\n{workload}: " + json.dumps(WORKLOADS[workload]),
             f"{'engine':<22}{'s/round':>9}{'CPU-s/round':>12}{'speedup':>9}{'peak RSS MB':>12}"
             f"{'slots used':>11}{'setup s':>9}  seconds per round | accuracy per round"]
    for mode, r in results.items():
        if "error" in r:
            lines.append(f"{mode:<22}failed: {r['error']}")
            continue
        s = statistics.median(r["seconds"])
        speed = f"{base_s / s:.2f}x" if base_s else "-"
        util = f"{r['utilization']:.3f}" if r.get("utilization") is not None else "-"
        acc = " ".join(f"{a:.4f}" for a in r["accuracy"])
        per_round = " ".join(f"{x:.2f}" for x in r["seconds"])
        lines.append(f"{mode:<22}{s:>9.2f}{statistics.median(r['cpu_seconds']):>12.2f}{speed:>9}"
                     f"{r['peak_rss_mb']:>12.0f}{util:>11}{r['setup_seconds']:>9.1f}  {per_round} | {acc}")
    for ray_mode, other in (("ray", "processes"), ("ray+tree", "processes"), ("ray+vectorized", "processes+vectorized")):
        if "seconds" in results.get(ray_mode, {}) and "seconds" in results.get(other, {}):
            ratio = statistics.median(results[ray_mode]["seconds"]) / statistics.median(results[other]["seconds"])
            lines.append(f"{ray_mode} / {other} s/round: {ratio:.3f}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["w1", "m1"], choices=list(WORKLOADS))
    parser.add_argument("--modes", nargs="+", default=None, choices=MODES + BF16_MODES + COMPILE_MODES + RAY_MODES + HEAP_MODES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scratch", default="bench-out/engines")
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", nargs=2, metavar=("WORKLOAD", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one[0], args.one[1], args.rounds, args.out)))
        return 0
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    everything = {}
    for workload in args.workloads:
        modes = args.modes or (["serial", "vectorized", "processes"] if workload == "scale" else MODES)
        rounds = 3 if workload == "scale" else args.rounds
        results = {}
        for mode in modes:
            results[mode] = run_subprocess(workload, mode, rounds, scratch)
            print(f"  {workload} {mode}: done", file=sys.stderr, flush=True)
        everything[workload] = results
        print("\n".join(report(workload, results)), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    if "--whole-run" in sys.argv:  # whole CLI runs timed from outside (benchmarks/whole_run.py)
        sys.argv.remove("--whole-run")
        from whole_run import main as whole_run_main

        sys.exit(whole_run_main())
    sys.exit(main())
