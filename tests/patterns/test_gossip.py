"""Gossip rounds: mixing matrices, pure averaging at the rate of |λ₂|, D-PSGD on every engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedloom.cli import main
from fedloom.patterns.gossip import consensus_distance, mix
from fedloom.patterns.topology import degrees, mixing_matrix, second_eigenvalue, spectral_gap


@pytest.mark.parametrize("name, n", [("ring", 8), ("torus", 12), ("complete", 5)])
def test_mixing_matrices_are_symmetric_doubly_stochastic(name: str, n: int) -> None:
    w = mixing_matrix(name, n)
    assert torch.allclose(w, w.T) and torch.allclose(w.sum(0), torch.ones(n, dtype=w.dtype))
    assert 0 < spectral_gap(w) <= 1


def test_ring_weights_by_hand() -> None:
    w = mixing_matrix("ring", 5)  # degree 2 everywhere: 1/3 to each neighbour and to itself
    assert torch.allclose(w[0], torch.tensor([1 / 3, 1 / 3, 0, 0, 1 / 3], dtype=w.dtype))
    assert degrees(w) == [2] * 5
    # the eigenvalues of this circulant are (1 + 2cos(2πk/5))/3: |λ₂| = (1 + 2cos(2π/5))/3
    assert second_eigenvalue(w) == pytest.approx((1 + 2 * torch.cos(torch.tensor(2 * torch.pi / 5)).item()) / 3)


def test_torus_has_four_neighbours() -> None:
    assert degrees(mixing_matrix("torus", 16)) == [4] * 16


def test_pure_gossip_converges_to_the_mean_at_the_rate_of_lambda2() -> None:
    n, w = 10, mixing_matrix("ring", 10)
    models = [{"x": torch.randn(200, generator=torch.Generator().manual_seed(i))} for i in range(n)]
    mean0, d0 = consensus_distance(models)
    distances = [d0]
    for _ in range(60):
        models = mix(w, models)
        mean, d = consensus_distance(models)
        assert torch.allclose(mean["x"], mean0["x"], atol=1e-5)  # averaging preserves the mean
        distances.append(d)
    lam2 = second_eigenvalue(w)
    # ‖x_t − x̄‖ ≤ |λ₂|^t ‖x_0 − x̄‖, and the per-step contraction tends to λ₂² on squared distances
    assert all(distances[t] <= lam2 ** (2 * t) * d0 * (1 + 1e-4) for t in range(len(distances)))
    assert distances[-1] / distances[-2] == pytest.approx(lam2 ** 2, rel=0.02)


def test_complete_graph_gossip_is_exact_averaging() -> None:
    models = [{"x": torch.tensor([float(i)])} for i in range(4)]
    mixed = mix(mixing_matrix("complete", 4), models)
    assert all(m["x"].item() == pytest.approx(1.5) for m in mixed)


GOSSIP = ["run", "--algorithm", "dpsgd", "--pattern", "gossip", "--dataset", "digits", "--model", "mlp",
          "--partition", "iid", "--clients", "6", "--rounds", "4", "--lr", "0.05", "--quiet", "--device", "cpu"]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_dpsgd_learns_and_reports_gossip_metrics(tmp_path: Path) -> None:
    # one minibatch step per iteration (the paper's D-PSGD): 80 iterations of 32 samples per node
    assert main([*GOSSIP, "--rounds", "80", "--eval-every", "40", "--lr", "0.1", "--batch-size", "32",
                 "--out", str(tmp_path / "g")]) == 0
    records = _records(tmp_path / "g")
    assert records[-1]["accuracy"] > 0.8 and records[-1]["avg_model_accuracy"] > 0.8
    assert 0 < records[-1]["consensus_distance"] < 0.1 and records[0]["consensus_distance"] == 0
    assert records[-1]["bytes_per_node"] * 6 == records[-1]["bytes_up"]  # two neighbours each on the ring


@pytest.mark.parametrize("engine", ["processes", "vectorized"])
def test_dpsgd_runs_the_same_on_every_engine(engine: str, tmp_path: Path) -> None:
    assert main([*GOSSIP, "--out", str(tmp_path / "serial")]) == 0
    extra = ["--engine", engine] + (["--workers", "2"] if engine == "processes" else [])
    assert main([*GOSSIP, *extra, "--out", str(tmp_path / engine)]) == 0
    if engine == "processes":
        assert (tmp_path / "serial" / "metrics.jsonl").read_bytes() == (tmp_path / engine / "metrics.jsonl").read_bytes()
    else:
        for a, b in zip(_records(tmp_path / "serial"), _records(tmp_path / engine)):
            assert a["accuracy"] == b["accuracy"] and a["consensus_distance"] == pytest.approx(b["consensus_distance"],
                                                                                               rel=1e-4)


def test_gossip_resumes_exactly(tmp_path: Path) -> None:
    from fedloom.run import run_experiment
    from fedloom.cli import build_config, make_parser, raw_from_args

    assert main([*GOSSIP, "--out", str(tmp_path / "full")]) == 0
    args = make_parser().parse_args([*GOSSIP, "--checkpoint-every", "1", "--out", str(tmp_path / "cut")])

    def stop(round_: int, record: dict) -> None:
        if round_ == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(build_config(raw_from_args(args)), progress=stop)
    assert main(["run", "--resume", str(tmp_path / "cut"), "--quiet"]) == 0
    assert (tmp_path / "cut" / "metrics.jsonl").read_bytes() == (tmp_path / "full" / "metrics.jsonl").read_bytes()
