"""InfoBatch (Qin et al., ICLR 2024) on the local-training seam: the same federated run with and without
``--infobatch.*``, in one process, alternating rounds (round r without, then round r with) so that a change in
machine load hits both equally. Reports per round: accuracy of both, the sample passes done and skipped, and the
cost of both: process CPU seconds of the whole round (training and the evaluation, which is the same for both;
a shared machine's load barely moves CPU time) and wall seconds of the training alone.

    python benchmarks/infobatch.py --setting w1 --rounds 2 --json benchmarks/results/infobatch/w1.json
    python benchmarks/infobatch.py --setting fmnist-mlp --rounds 6 --json benchmarks/results/infobatch/fmnist-mlp.json

Settings: ``w1`` is docs/benchmarks.md's W1 (FedAvg, Fashion-MNIST, 20 clients, Dir(0.1), FedAvgCNN, batch 10,
lr 0.005, 1 local epoch, all clients every round); ``fmnist-mlp`` the same federation with the MLP, batch 32,
lr 0.05 and 2 local epochs per round (pruning and annealing inside a round as well as across rounds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedloom.config import RunConfig
from fedloom.run import build_experiment, initial_round, load_data, resolve_config, step_round

SETTINGS = {
    "w1": dict(model="cnn", batch_size=10, lr=0.005, local_epochs=1),
    "fmnist-mlp": dict(model="mlp", batch_size=32, lr=0.05, local_epochs=2),
}


def config(setting: str, rounds: int, seed: int, options: dict) -> RunConfig:
    return resolve_config(RunConfig(
        algorithm="fedavg", dataset="fashion-mnist", partition="dirichlet", alpha=0.1, clients=20, rounds=rounds,
        join_ratio=1.0, train_ratio=0.75, seed=seed, device="cpu", threads=1, options=options,
        **SETTINGS[setting]))


def timed_round(exp, server, round_: int, totals: dict) -> tuple:
    cpu, wall = time.process_time(), time.perf_counter()
    out = step_round(exp, server, round_, totals)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="w1")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--prune-ratio", type=float, default=0.5)
    parser.add_argument("--delta", type=float, default=0.875)
    parser.add_argument("--json", default=None, help="write the results here (rewritten after every round)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ib = {"infobatch": {"prune_ratio": args.prune_ratio, "delta": args.delta}}
    plain_cfg, ib_cfg = (config(args.setting, args.rounds, args.seed, o) for o in ({}, ib))
    data = load_data(plain_cfg, torch.device("cpu"))
    runs = {name: build_experiment(cfg, data, torch.device("cpu")) for name, cfg in (("plain", plain_cfg),
                                                                                      ("infobatch", ib_cfg))}
    servers = {name: initial_round(exp)[0] for name, exp in runs.items()}
    totals = {name: {} for name in runs}
    rows: list[dict] = []
    result = {"setting": args.setting, "seed": args.seed, "prune_ratio": args.prune_ratio, "delta": args.delta,
              "threads": 1, "rounds": rows}
    for r in range(1, args.rounds + 1):
        row = {"round": r}
        for name, exp in runs.items():
            out, cpu, wall = timed_round(exp, servers[name], r, totals[name])
            servers[name] = out.server
            row.update({f"{name}_accuracy": out.record["accuracy"], f"{name}_cpu_s": round(cpu, 2),
                        f"{name}_wall_s": round(wall, 2), f"{name}_train_wall_s": round(out.train_seconds, 2)})
            if name == "infobatch":
                row.update(passes=out.record["sample_passes"], saved=out.record["sample_passes_saved"])
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(summarize(result), indent=1) + "\n")
    print(json.dumps({k: v for k, v in summarize(result).items() if k != "rounds"}))
    return 0


def summarize(result: dict) -> dict:
    rows = result["rounds"]
    done, saved = sum(r["passes"] for r in rows), sum(r["saved"] for r in rows)
    cpu = {name: sum(r[f"{name}_cpu_s"] for r in rows) for name in ("plain", "infobatch")}
    wall = {name: sum(r[f"{name}_train_wall_s"] for r in rows) for name in ("plain", "infobatch")}
    last = rows[-1]
    return {**result, "saved_fraction": saved / max(done + saved, 1),
            "final_accuracy_plain": last["plain_accuracy"], "final_accuracy_infobatch": last["infobatch_accuracy"],
            "accuracy_difference_points": 100 * (last["infobatch_accuracy"] - last["plain_accuracy"]),
            "cpu_saving": 1 - cpu["infobatch"] / max(cpu["plain"], 1e-9),
            "train_wall_saving": 1 - wall["infobatch"] / max(wall["plain"], 1e-9)}


if __name__ == "__main__":
    raise SystemExit(main())
