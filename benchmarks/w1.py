"""Workload W1: FedAvg on Fashion-MNIST, 20 clients, Dirichlet α=0.1, 75/25 per-client split, FedAvgCNN,
all clients every round, 1 local epoch, batch 10, SGD lr 0.005 (PFLlib's leaderboard setting).

Times fedloom's serial engine against a plain hand-written PyTorch loop (nn.Module + torch.optim.SGD +
loss.backward(), one model object reused for every client) over the *same* partition and the *same* initial
weights, in the same process, alternating rounds (plain round r, then fedloom round r) so that any change in
machine load hits both equally. Prints seconds per round for both, their ratio, peak RSS and the accuracy of
both after every round.

    python benchmarks/w1.py --rounds 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from fedloom.config import RunConfig
from fedloom.run import build_experiment, initial_round, load_data, resolve_config, step_round

sys.path.insert(0, str(Path(__file__).parent))
from plain_loop import PlainFedAvg  # noqa: E402  (a sibling script, not a package)


def w1_config(rounds: int, seed: int, threads: int, data_dir: str | None) -> RunConfig:
    return resolve_config(RunConfig(
        algorithm="fedavg", dataset="fashion-mnist", partition="dirichlet", alpha=0.1, clients=20, rounds=rounds,
        join_ratio=1.0, local_epochs=1, batch_size=10, lr=0.005, model="cnn", seed=seed, device="cpu",
        threads=threads, train_ratio=0.75, data_dir=data_dir))


class PlainCNN(nn.Module):
    """FedAvgCNN written out by hand, as a user of plain PyTorch would."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(1024, 512), nn.ReLU())
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc1(self.conv2(self.conv1(x))))


def copy_from_fedloom(plain: PlainCNN, params: dict[str, torch.Tensor]) -> None:
    """Same initial weights: fedloom's body.0/body.3/body.7/head map to conv1/conv2/fc1/fc."""
    names = {"body.0": "conv1.0", "body.3": "conv2.0", "body.7": "fc1.1", "head": "fc"}
    state = {}
    for name, tensor in params.items():
        prefix, leaf = name.rsplit(".", 1)
        state[f"{names[prefix]}.{leaf}"] = tensor.clone()
    plain.load_state_dict(state)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (same for both)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--plain-batches", choices=["same", "own"], default="same",
                        help="same: the plain loop uses fedloom's per-(seed, round, client) batch order, so the "
                             "two should agree to float rounding; own: its own torch.randperm stream")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = w1_config(args.rounds, args.seed, args.threads, args.data_dir)
    data = load_data(cfg, torch.device("cpu"))
    rss_data = peak_rss_mb()
    exp = build_experiment(cfg, data, torch.device("cpu"))
    model = PlainCNN(data.num_classes)
    copy_from_fedloom(model, exp.runtime.init_params)
    plain = PlainFedAvg(model, data, cfg.lr, cfg.batch_size, cfg.local_epochs, args.seed,
                        same_batches=args.plain_batches == "same")
    server, _, _ = initial_round(exp)
    totals: dict[str, int] = {}
    rows = []
    print(f"W1: {data.num_clients} clients, {sum(len(i) for i in data.train_idx)} train / "
          f"{sum(len(i) for i in data.test_idx)} test samples, torch threads={args.threads}, "
          f"plain-loop batches: {args.plain_batches}", flush=True)
    for r in range(1, args.rounds + 1):
        t0 = time.perf_counter()
        plain_acc = plain.round(r)
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = step_round(exp, server, r, totals)
        t_fed = time.perf_counter() - t0
        server = out.server
        rows.append({"round": r, "plain_seconds": t_plain, "fedloom_seconds": t_fed,
                     "plain_accuracy": plain_acc, "fedloom_accuracy": out.record["accuracy"]})
        print(f"round {r}: plain {t_plain:6.1f}s acc {plain_acc:.4f} | fedloom {t_fed:6.1f}s "
              f"acc {out.record['accuracy']:.4f} | ratio {t_fed / t_plain:.3f}", flush=True)
    plain_s = statistics.mean(r["plain_seconds"] for r in rows)
    fed_s = statistics.mean(r["fedloom_seconds"] for r in rows)
    max_gap = max(abs(r["plain_accuracy"] - r["fedloom_accuracy"]) for r in rows)
    result = {"rounds": args.rounds, "threads": args.threads, "plain_batches": args.plain_batches, "plain_seconds_per_round": plain_s,
              "fedloom_seconds_per_round": fed_s, "ratio_fedloom_over_plain": fed_s / plain_s,
              "max_accuracy_gap_points": 100 * max_gap, "peak_rss_mb": peak_rss_mb(),
              "rss_after_data_mb": rss_data, "per_round": rows}
    print(f"mean s/round: plain {plain_s:.2f}, fedloom {fed_s:.2f}, ratio fedloom/plain {fed_s / plain_s:.3f}; "
          f"max accuracy gap {100 * max_gap:.2f} points; peak RSS {peak_rss_mb():.0f} MB "
          f"({rss_data:.0f} MB after loading data)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
