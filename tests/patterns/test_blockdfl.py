"""BlockDFL's protocol: stake-weighted roles, median scoring, Krum among candidates, the vote, bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedloom.algorithms._sparsify import kept
from fedloom.algorithms.blockdfl import BlockDFL, median_scores, select_roles
from fedloom.cli import main
from fedloom.patterns.blockdfl import vote
from helpers import make_experiment


def test_roles_are_disjoint_and_drawn_by_stake() -> None:
    rng = np.random.default_rng(0)
    groups = select_roles(np.ones(12), (4, 3, 3), rng)
    assert [len(g) for g in groups] == [4, 3, 3] and len(set().union(*map(set, groups))) == 10
    heavy = np.ones(12)
    heavy[7] = 1000.0  # a node holding nearly all the stake is drawn first, i.e. as a provider
    picks = [7 in select_roles(heavy, (1, 1, 1), np.random.default_rng(s))[0] for s in range(50)]
    plain = [7 in select_roles(np.ones(12), (1, 1, 1), np.random.default_rng(s))[0] for s in range(50)]
    assert sum(picks) >= 45 and sum(plain) <= 15


def test_median_scores_by_hand() -> None:
    updates = [{"w": torch.tensor([0.0, 0.0])}, {"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([10.0, 0.0])}]
    # coordinate-wise median (1, 0): distances 1, 0, 9
    assert median_scores(updates).tolist() == pytest.approx([1.0, 0.0, 9.0])


def _updates() -> list[dict]:
    honest = [{"w": torch.tensor([1.0 + 0.1 * i, 1.0])} for i in range(4)]
    return honest + [{"w": torch.tensor([-5.0, -5.0])}, {"w": torch.tensor([-6.0, -5.0])}]


def test_honest_aggregator_keeps_the_updates_nearest_the_median() -> None:
    candidate, rows = BlockDFL(keep=0.5).propose(_updates(), malicious_rows=[4, 5], honest=True)
    assert rows == [0, 1, 2] and torch.allclose(candidate["w"], torch.tensor([1.1, 1.0]))
    bad, bad_rows = BlockDFL(keep=0.5).propose(_updates(), malicious_rows=[4, 5], honest=False)
    assert bad_rows == [4, 5] and torch.allclose(bad["w"], torch.tensor([-5.5, -5.0]))


def test_verifiers_pick_by_krum_and_the_quorum_commits() -> None:
    algo = BlockDFL(aggregators=5)  # Krum with f = 1 among 5 candidates
    good, bad = {"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([-5.0, -5.0])}
    candidates = [bad, good, good, bad, good]
    honest_votes = vote(algo, candidates, [True, False, False, True, False], [False] * 5)
    assert honest_votes[1] == 5  # every honest verifier votes for the first best-scored honest candidate
    split = vote(algo, candidates, [True, False, False, True, False], [True, True, False, False, False])
    assert split == [2, 3, 0, 0, 0]  # 3 of 5 votes: not above the 2/3 quorum, nothing is committed
    assert not split[1] > algo.quorum * 5


GOSSIP = ["run", "--pattern", "blockdfl", "--algorithm", "blockdfl", "--dataset", "digits", "--model", "mlp",
          "--partition", "iid", "--clients", "10", "--rounds", "2", "--lr", "0.1", "--batch-size", "32", "--quiet",
          "--device", "cpu", "--blockdfl.providers", "4", "--blockdfl.aggregators", "3",
          "--blockdfl.verifiers", "3"]


def test_blockdfl_learns_and_counts_bytes(tmp_path: Path) -> None:
    assert main([*GOSSIP, "--rounds", "6", "--eval-every", "3", "--out", str(tmp_path / "b")]) == 0
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["accuracy"] > records[0]["accuracy"] + 0.2 and records[-1]["cum_blocks"] == 6
    params = make_experiment(clients=10).runtime.init_params
    message = 8 * sum(kept(t.numel(), 0.1) for t in params.values())  # top-k values + indices
    dense = 4 * sum(t.numel() for t in params.values())
    assert records[-1]["bytes_up"] == 4 * 3 * message + 3 * 3 * dense  # providers→aggregators, candidates→verifiers
    assert records[-1]["bytes_down"] == 10 * dense  # the block reaches every participant


def test_too_few_participants_is_one_error(tmp_path: Path, capsys) -> None:
    assert main([*GOSSIP, "--clients", "9", "--blockdfl.providers", "5", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs 11 distinct participants" in err[0]


@pytest.mark.slow
def test_blockdfl_serial_and_processes_agree(tmp_path: Path) -> None:
    args = [*GOSSIP, "--attack", "signflip", "--attack.fraction", "0.3"]
    assert main([*args, "--out", str(tmp_path / "serial")]) == 0
    assert main([*args, "--engine", "processes", "--workers", "2", "--out", str(tmp_path / "proc")]) == 0
    assert (tmp_path / "serial" / "metrics.jsonl").read_bytes() == (tmp_path / "proc" / "metrics.jsonl").read_bytes()
