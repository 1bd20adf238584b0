"""The Flower path's per-round overhead against the processes engine, and the bytes on the wire against fedloom's
own count, on the same config (issue 26).

Modes, each on the same workload and seed (FedAvg):
  processes   fedloom's processes engine, 3 worker processes (the baseline)
  inproc      the Flower app in one process (fedloom.flower.local.LocalGrid): every message serialized to
              Flower's protobuf form and back, 3 nodes, no network, no process start per message
  deploy      a real SuperLink and 3 SuperNodes on loopback (fedloom.flower.launch), ``flwr run`` of an app
              written by ``fedloom flower new``; per-round times from the server's flower.json
  sim         the same app in Flower's simulation runtime (``flower-superlink --simulation``, 3 simulated
              nodes in Ray actors; needs ``flwr[simulation]``); times as for deploy
Workloads: digits (6 clients, all per round) and M1 (Fashion-MNIST, 1,000 clients, Dirichlet 0.5, MLP, 10% per
round, batch 10; benchmarks/engines.py's M1).

Per round (median over rounds 2..R): seconds, ratio to processes; bytes: fedloom's count of the uploads
(``bytes_up``), the array bytes that arrived in Flower records, the protobuf-serialized ArrayRecords (each array
with its .npy header) and the metadata records (skeletons, decoders, control data).

    OMP_NUM_THREADS=1 python benchmarks/flower_overhead.py --workloads digits m1 --modes processes inproc deploy
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

WORKLOADS = {
    "digits": dict(dataset="digits", clients=6, join_ratio=1.0, lr=0.05, batch_size=32),
    "m1": dict(dataset="fashion-mnist", clients=1000, partition="dirichlet", alpha=0.5, model="mlp",
               join_ratio=0.1, lr=0.05, batch_size=10),
}
NODES = 3


def config(workload: str, rounds: int) -> dict:
    return {"algorithm": "fedavg", "local_epochs": 1, "rounds": rounds, "seed": 1, **WORKLOADS[workload]}


def round_times(cfg: dict, run) -> tuple[list[float], object]:
    """Seconds between consecutive evaluated rounds (each round is evaluated)."""
    stamps: list[float] = []
    result = run(cfg, lambda round_, metrics: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])], result


def run_processes(cfg: dict) -> dict:
    import fedloom

    engine = {"engine": "processes", "workers": NODES, "worker_timeout": 600}  # start-up on a loaded machine
    times, result = round_times(cfg, lambda c, cb: fedloom.run({**c, **engine}, out=None, callbacks=[cb]))
    return {"round_s": times, "bytes_up": [r["bytes_up"] for r in result.records[1:]]}


def run_inproc(cfg: dict) -> dict:
    from fedloom.flower import client_app
    from fedloom.flower.local import LocalGrid
    from fedloom.flower.server import run_server

    grid = LocalGrid(client_app(cfg), [{"partition-id": i, "num-partitions": NODES} for i in range(NODES)])
    times, result = round_times(cfg, lambda c, cb: run_server(c, grid, callbacks=[cb]))
    return {"round_s": times, "bytes_up": [r["bytes_up"] for r in result.records[1:]],
            "stats": result.flower_stats, "protobuf_bytes_total": grid.bytes_sent + grid.bytes_received}


def run_deploy(cfg: dict, folder: Path, simulation: int = 0) -> dict:
    """A real SuperLink and NODES SuperNodes, or (``simulation``) the SuperLink's simulation runtime with that
    many simulated nodes (ClientApps in long-lived Ray actors, no SuperNode process)."""
    from fedloom.flower.launch import LocalDeployment
    from fedloom.flower.template import write_app

    toml = folder / "config.toml"
    toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in cfg.items()))
    app = write_app(folder / "app", toml)
    deployment = LocalDeployment(folder / "flwr", [{"partition-id": i, "num-partitions": NODES}
                                                   for i in range(NODES)], simulation=simulation)
    with deployment:
        deployment.run(app, {"out": str(folder / "run"), "round-timeout": 3600, "connect-timeout": 600},
                       timeout=7200)
    stats = json.loads((folder / "run" / "flower.json").read_text())
    records = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    return {"round_s": [s["wall_s"] + s.get("eval_wall_s", 0.0) for s in stats],
            "bytes_up": [r["bytes_up"] for r in records[1:]], "stats": stats, "leftovers": deployment.leftovers()}


def summarize(workload: str, mode: str, out: dict, baseline: float | None) -> str:
    times = out["round_s"][1:] or out["round_s"]
    median = statistics.median(times)
    line = f"{workload:7s} {mode:10s} {median:8.3f} s/round"
    line += f"  ×{median / baseline:6.2f} vs processes" if baseline else ""
    if "stats" in out:
        s = out["stats"][-1]
        line += (f"  up: fedloom {out['bytes_up'][-1]:,} B, arrived arrays {s['bytes_up_wire']:,} B, "
                 f"serialized {s['bytes_up_serialized']:,} B, metadata {s['bytes_meta_up']:,} B; "
                 f"down sent {s['bytes_down_sent']:,} B")
        if "node_train_s" in s:
            line += f"; node train s {[round(v, 3) for v in s['node_train_s'].values()]}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["digits"], choices=sorted(WORKLOADS))
    parser.add_argument("--modes", nargs="+", default=["processes", "inproc"],
                        choices=["processes", "inproc", "deploy", "sim"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write every measurement to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"threads: 1 torch thread per process; {NODES} workers / nodes; a shared machine "
          f"(other jobs running: times are indicative, ratios within one invocation)", flush=True)
    results = {}
    for workload in args.workloads:
        cfg = config(workload, args.rounds)
        baseline = None
        for mode in args.modes:
            with tempfile.TemporaryDirectory(prefix="fedloom-flower-bench-") as tmp:
                if mode == "processes":
                    out = run_processes(cfg)
                elif mode == "inproc":
                    out = run_inproc(cfg)
                else:
                    out = run_deploy(cfg, Path(tmp), simulation=NODES if mode == "sim" else 0)
            results[f"{workload}/{mode}"] = out
            if mode == "processes":
                baseline = statistics.median(out["round_s"][1:] or out["round_s"])
            print(summarize(workload, mode, out, baseline), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
