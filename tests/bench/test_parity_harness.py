"""benchmarks/parity: the fedloom-vs-PFLlib criterion, the subsample and the reading of PFLlib's main.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PARITY = Path(__file__).resolve().parents[2] / "benchmarks" / "parity"
sys.path.insert(0, str(PARITY))

import compare  # noqa: E402
import pfllib_side  # noqa: E402

FAKE_MAIN = '''
import argparse
from flcore.servers.serveravg import FedAvg
from flcore.servers.serverditto import Ditto
def run(args):
    for i in range(1):
        if args.algorithm == "FedAvg":
            args.head = copy.deepcopy(args.model.fc)
            args.model = BaseHeadSplit(args.model, args.head)
            server = FedAvg(args, i)

        elif args.algorithm == "Ditto":
            server = Ditto(args, i)

        else:
            raise NotImplementedError
if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument('-lr', "--local_learning_rate", type=float, default=0.005)
    parser.add_argument('-mu', "--mu", type=float, default=0.0)
    args = parser.parse_args()
    run(args)
'''


def _curves(fl: list[list[float]], pf: list[list[float]]) -> dict:
    def rows(seeds: list[list[float]]) -> dict:
        return {s: [{"round": r, "accuracy": a, "client_accuracy": [a, a]} for r, a in enumerate(curve)]
                for s, curve in enumerate(seeds, 1)}
    return {"fedloom": rows(fl), "pfllib": rows(pf)}


def test_criterion_is_the_larger_seed_range() -> None:
    # round 1: means 0.50 vs 0.45, ranges 0.02 and 0.06 -> |d| = 0.05 <= 0.06: within
    # round 2: means 0.80 vs 0.70, ranges 0.02 and 0.04 -> |d| = 0.10 > 0.04: outside
    curves = _curves([[0.1, 0.49, 0.79], [0.1, 0.51, 0.81]], [[0.1, 0.42, 0.68], [0.1, 0.48, 0.72]])
    stats = {s["round"]: s for s in compare.round_stats(curves, 2)}
    assert stats[1]["diff"] == pytest.approx(0.05) and stats[1]["spread"] == pytest.approx(0.06)
    assert stats[1]["within"] and not stats[2]["within"]
    assert stats[2]["diff"] == pytest.approx(0.10) and stats[2]["spread"] == pytest.approx(0.04)
    assert compare.client_gap(curves, 2) == pytest.approx(0.10)


def test_rounds_not_reached_by_every_seed_are_left_out() -> None:
    curves = _curves([[0.1, 0.5, 0.8], [0.1, 0.5]], [[0.1, 0.5, 0.8], [0.1, 0.5, 0.8]])
    assert [s["round"] for s in compare.round_stats(curves, 2)] == [0, 1]


def test_pfllib_parser_and_server_class_read_from_main_source() -> None:
    parser = pfllib_side.pfllib_parser(FAKE_MAIN)
    args = parser.parse_args([])
    assert args.local_learning_rate == 0.005 and args.mu == 0.0
    assert pfllib_side.server_class_of(FAKE_MAIN, "FedAvg") == ("flcore.servers.serveravg", "FedAvg", True)
    assert pfllib_side.server_class_of(FAKE_MAIN, "Ditto") == ("flcore.servers.serverditto", "Ditto", False)
    with pytest.raises(SystemExit):
        pfllib_side.server_class_of(FAKE_MAIN, "FedNova")


def test_subsample_keeps_fraction_minimum_and_a_valid_hash(tmp_path: Path) -> None:
    from fedloom.data.cache import content_hash
    sizes = [200, 30, 8]
    train = [np.arange(i * 1000, i * 1000 + n) for i, n in enumerate(sizes)]
    test = [np.arange(i * 1000 + 500, i * 1000 + 500 + n // 2) for i, n in enumerate(sizes)]
    src = tmp_path / "clients.npz"
    np.savez(src, manifest=np.array(json.dumps({"partition_hash": content_hash(train, test)})),
             train_indices=np.concatenate(train), train_offsets=np.cumsum([0] + sizes),
             test_indices=np.concatenate(test), test_offsets=np.cumsum([0] + [n // 2 for n in sizes]))
    out = tmp_path / "sub" / "clients.npz"
    subprocess.run([sys.executable, str(PARITY / "subsample.py"), str(src), "--fraction", "0.1", "--out", str(out),
                    "--min-train", "20", "--min-test", "5"], check=True, capture_output=True)
    sub = np.load(out)
    kept = np.diff(sub["train_offsets"])
    assert kept.tolist() == [20, 20, 8]  # max(20, ceil(0.1 n)), or all of a smaller client
    assert np.diff(sub["test_offsets"]).tolist() == [10, 5, 4]
    parts = [sub["train_indices"][a:b] for a, b in zip(sub["train_offsets"][:-1], sub["train_offsets"][1:])]
    assert all(np.isin(p, t).all() for p, t in zip(parts, train))  # each client keeps only its own samples
    tparts = [sub["test_indices"][a:b] for a, b in zip(sub["test_offsets"][:-1], sub["test_offsets"][1:])]
    assert json.loads(sub["manifest"].item())["partition_hash"] == content_hash(parts, tparts)
