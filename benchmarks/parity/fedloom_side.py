"""Run fedloom for one method and seed on a partition file; write its curve in the harness's format.

    python benchmarks/parity/fedloom_side.py --partition DIR/clients.npz --method gpfl --rounds 10 --seed 1 \
        --out curve.json

fedloom evaluates the initial model as round 0 and, for the personalized methods, scores round r after the
download of round r+1's broadcast... i.e. after the server step of round r and before the next local training
(docs/algorithms.md), the point at which PFLlib evaluates at the top of iteration r. ``--eval-train`` adds the
train-split loss, the quantity PFLlib reports as its loss. For FedDBE, whose initialization period fedloom
counts as round 1 while PFLlib runs it in its server's constructor, fedloom round r + 1 is recorded as round r. Per-client test accuracy is read from the
per-client sums that fedloom's evaluation summarizes each round. The curve is rewritten after every round, so
a run stopped early still leaves the rounds it finished.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from methods import COMMON_FEDLOOM, METHODS  # noqa: E402


def run(partition: Path, method: str, rounds: int, seed: int, threads: int, out: Path, folder: Path,
        drop_last: bool = False) -> None:
    import fedloom.api as api
    import fedloom.rounds as rounds_mod

    captured: dict[str, Any] = {}
    original = rounds_mod.summarize_clients

    def capture(per_client: dict, task: Any, prefix: str = "") -> dict:
        if prefix == "":  # the test split, the one scored
            captured["clients"] = [task.finalize(per_client[c])[task.primary_metric] for c in sorted(per_client)]
        return original(per_client, task, prefix)
    rounds_mod.summarize_clients = capture  # rounds.evaluate calls it by its module-level name

    result: dict[str, Any] = {"implementation": "fedloom", "method": method, "seed": seed, "rounds": rounds,
                              "options": METHODS[method].fedloom_options, "drop_last": drop_last, "curve": []}
    t0 = time.perf_counter()

    offset = METHODS[method].fedloom_offset
    result["fedloom_offset"] = offset

    def record(round_: int, metrics: dict) -> None:
        if round_ < offset:  # before PFLlib's evaluation 0 (FedDBE's initialization round)
            return
        result["curve"].append({"round": round_ - offset, "fedloom_round": round_, "accuracy": metrics["accuracy"],
                                "train_loss": metrics.get("train_loss"), "test_loss": metrics.get("loss"),
                                "client_accuracy": captured.get("clients"),
                                "seconds": round(time.perf_counter() - t0, 2)})
        out.write_text(json.dumps(result))
        print(json.dumps({k: v for k, v in result["curve"][-1].items() if k != "client_accuracy"}), flush=True)

    api.run({**COMMON_FEDLOOM, "dataset": "fashion-mnist", "partition_file": str(partition),
             "algorithm": method, "rounds": rounds + offset, "seed": seed, "threads": threads, "eval_every": 1,
             "eval_train": True, "overwrite": True, "drop_last": drop_last, **METHODS[method].fedloom_options},
            out=str(folder), callbacks=[record])
    result["complete"] = True
    out.write_text(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--partition", type=Path, required=True, help="fedloom partition file (clients.npz)")
    p.add_argument("--method", choices=sorted(METHODS), required=True)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True, help="curve JSON")
    p.add_argument("--run-dir", type=Path, help="fedloom run folder (default: beside --out)")
    p.add_argument("--drop-last", action="store_true", help="train with --drop-last (PFLlib's DataLoader)")
    a = p.parse_args()
    run(a.partition.resolve(), a.method, a.rounds, a.seed, a.threads, a.out,
        a.run_dir or a.out.with_suffix(".run"), a.drop_last)


if __name__ == "__main__":
    main()
