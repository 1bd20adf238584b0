"""D-PSGD ATC/CTA, CHOCO-SGD, DCD-PSGD and GossipFL: each one's defining mechanism, bytes equal to the payloads,
and one clear error for the settings they cannot run with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedloom.algorithms._sparsify import kept, top_k
from fedloom.algorithms.choco import choco_consensus
from fedloom.algorithms.gossipfl import pair_indices
from fedloom.algorithms.tree import tree_sq_dist, tree_sub
from fedloom.cli import main
from fedloom.patterns.gossip import consensus_distance, mix
from fedloom.patterns.topology import mixing_matrix
from helpers import make_experiment


def _run_rounds(rounds: int, **overrides):
    exp = make_experiment(pattern="gossip", partition="iid", clients=4, batch_size=16, lr=0.1, **overrides)
    server, _, _ = exp.pattern.start(exp)
    totals: dict = {}
    for r in range(1, rounds + 1):
        out = exp.pattern.step(exp, server, r, totals)
        server = out.server
    states = {cid: exp.runtime.uploads.split(s)[0] for cid, s in exp.engine.client_states()}
    return exp, out, states


def test_atc_makes_complete_graph_nodes_identical_cta_does_not() -> None:
    _, _, atc = _run_rounds(1, algorithm="dpsgd", topology="complete", options={"dpsgd": {"order": "atc"}})
    _, _, cta = _run_rounds(1, algorithm="dpsgd", topology="complete")
    # ATC: every node takes the exact average of the trained models; CTA adds each node's own step to it
    assert consensus_distance([s["params"] for s in atc.values()])[1] == pytest.approx(0.0, abs=1e-10)
    assert consensus_distance([s["params"] for s in cta.values()])[1] > 1e-6


def test_choco_compressed_consensus_reaches_the_mean() -> None:
    n, w = 6, mixing_matrix("ring", 6)
    x = [{"w": torch.randn(40, generator=torch.Generator().manual_seed(i))} for i in range(n)]
    mean0, d0 = consensus_distance(x)
    hat = [{"w": torch.zeros(40)} for _ in range(n)]
    s = [{"w": torch.zeros(40)} for _ in range(n)]
    for _ in range(400):
        q = []
        for i in range(n):  # q_i = top-k(x_i − x̂_i), 25% of the coordinates
            diff = tree_sub(x[i], hat[i])
            idx = top_k(diff, 0.25)["w"]
            q.append({"w": torch.zeros(40).index_put((idx,), diff["w"][idx])})
        hat = [{"w": h["w"] + qi["w"]} for h, qi in zip(hat, q)]
        s = [{"w": si["w"] + mi["w"]} for si, mi in zip(s, mix(w, q))]
        x = [choco_consensus(x[i], hat[i], s[i], gamma=0.4) for i in range(n)]
    mean, d = consensus_distance(x)
    assert torch.allclose(mean["w"], mean0["w"], atol=1e-3)  # the average is a fixed point (float32 sums)
    assert d < 1e-8 * d0


def test_dcd_replicas_track_the_neighbourhood_average() -> None:
    exp, _, states = _run_rounds(3, algorithm="dcd-psgd", topology="ring", options={"dcd-psgd": {"ratio": 0.3}})
    w = mixing_matrix("ring", 4)
    models = [states[i]["params"] for i in range(4)]
    for i in range(4):  # m_i, updated only with compressed messages, equals Σ_j W_ij x_j exactly
        expected = mix(w, models)[i]
        assert tree_sq_dist(states[i]["avg"], expected) < 1e-10


def test_gossipfl_peers_exchange_the_same_coordinates() -> None:
    params = {"a": torch.zeros(50), "b": torch.zeros(3, 7)}
    same = pair_indices(params, 0.2, 7, 4, 2, 5)
    assert all(torch.equal(same[k], pair_indices(params, 0.2, 7, 4, 5, 2)[k]) for k in params)
    assert not torch.equal(same["a"], pair_indices(params, 0.2, 7, 4, 2, 6)["a"])
    exp, _, states = _run_rounds(1, algorithm="gossipfl", topology="matching",
                                 options={"gossipfl": {"ratio": 0.2}})
    from fedloom.patterns.topology import GraphSpec, make_topology
    graph = make_topology("matching", 4, GraphSpec(seed=exp.config.seed)).graph(1)
    for i in range(4):
        j = next(iter(graph[i]))
        idx = pair_indices(states[i]["params"], 0.2, exp.config.seed, 1, i, j)
        for name, xi in states[i]["params"].items():
            xj = states[j]["params"][name].reshape(-1)
            on = idx[name]
            assert torch.equal(xi.reshape(-1)[on], xj[on])  # both hold ½ x_i + ½ x_j there
            off = torch.ones(xi.numel(), dtype=torch.bool).index_fill(0, on, False)
            assert not torch.equal(xi.reshape(-1)[off], xj[off])  # and their own values elsewhere


GOSSIP = ["run", "--pattern", "gossip", "--dataset", "digits", "--model", "mlp", "--partition", "iid", "--clients",
          "4", "--rounds", "2", "--lr", "0.1", "--batch-size", "16", "--quiet", "--device", "cpu"]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("send_indices, per_value", [("true", 8), ("false", 4)])
def test_gossipfl_bytes_are_the_payload(tmp_path: Path, send_indices: str, per_value: int) -> None:
    assert main([*GOSSIP, "--algorithm", "gossipfl", "--topology", "saps", "--gossipfl.ratio", "0.05",
                 "--gossipfl.send-indices", send_indices, "--out", str(tmp_path / "g")]) == 0
    record = _records(tmp_path / "g")[-1]
    k = sum(kept(t.numel(), 0.05) for t in make_experiment(clients=4).runtime.init_params.values())
    assert record["message_bytes"] == k * per_value
    assert record["bytes_up"] == 4 * record["message_bytes"]  # one peer each: one message per node


def test_choco_bytes_and_communication_time(tmp_path: Path) -> None:
    bandwidth = tmp_path / "b.csv"
    rows = [[0 if i == j else (1.0 if {i, j} == {0, 1} else 4.0) for j in range(4)] for i in range(4)]
    bandwidth.write_text("\n".join(",".join(str(v) for v in row) for row in rows))
    assert main([*GOSSIP, "--algorithm", "choco", "--topology", "ring", "--choco.ratio", "0.1",
                 "--gossip.bandwidth", "file", "--gossip.bandwidth-file", str(bandwidth),
                 "--out", str(tmp_path / "c")]) == 0
    record = _records(tmp_path / "c")[-1]
    k = sum(kept(t.numel(), 0.1) for t in make_experiment(clients=4).runtime.init_params.values())
    assert record["message_bytes"] == 8 * k and record["bytes_up"] == 4 * 2 * 8 * k  # ring: two neighbours
    # the slowest transfer is a message over the 1 MB/s link between nodes 0 and 1
    assert record["comm_time"] == pytest.approx(8 * k / 1e6, rel=1e-6)
    assert record["cum_comm_time"] == pytest.approx(2 * record["comm_time"], rel=1e-6)


@pytest.mark.parametrize("args, words", [
    (["--algorithm", "gossipfl", "--topology", "ring"], "one peer per iteration"),
    (["--algorithm", "choco", "--topology", "matching"], "fixed W"),
    (["--algorithm", "dcd-psgd", "--gossip.drop", "0.1"], "fixed W"),
    (["--algorithm", "gossipfl", "--topology", "saps", "--gossipfl.ratio", "0"], "gossipfl.ratio must be in (0, 1]"),
    (["--algorithm", "choco", "--choco.ratio", "1.5"], "choco.ratio must be in (0, 1]"),
    (["--algorithm", "dpsgd", "--topology", "random-regular", "--gossip.degree", "3", "--clients", "5"],
     "no 3-regular graph has 5 nodes"),
    (["--algorithm", "dpsgd", "--topology", "erdos-renyi", "--gossip.edge-prob", "0.01"], "not connected"),
    (["--algorithm", "dpsgd", "--gossip.bandwidth", "measured", "--clients", "15"], "14-node"),
    (["--algorithm", "dpsgd", "--topology", "saps", "--gossip.bandwidth", "none"], "matches by bandwidth"),
    (["--algorithm", "dpsgd", "--gossip.failure", "1"], "gossip.failure must be in [0, 1)"),
])
def test_bad_decentralized_input_is_one_error_before_training(tmp_path: Path, capsys, args, words) -> None:
    assert main([*GOSSIP, *args, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and not (tmp_path / "bad").exists()


def test_bad_bandwidth_file_shape_is_one_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "b.csv").write_text("0,1\n1,0\n")
    assert main([*GOSSIP, "--algorithm", "dpsgd", "--gossip.bandwidth", "file", "--gossip.bandwidth-file",
                 str(tmp_path / "b.csv"), "--out", str(tmp_path / "bad")]) == 2
    assert "shape (2, 2), the run needs 4 x 4" in capsys.readouterr().err


@pytest.mark.parametrize("algorithm", [
    ["gossipfl", "--topology", "saps", "--gossip.failure", "0.2"],
    pytest.param(["choco", "--topology", "ring"], marks=pytest.mark.slow)])
def test_serial_and_processes_engines_agree(tmp_path: Path, algorithm: list[str]) -> None:
    assert main([*GOSSIP, "--algorithm", *algorithm, "--out", str(tmp_path / "serial")]) == 0
    assert main([*GOSSIP, "--algorithm", *algorithm, "--engine", "processes", "--workers", "2",
                 "--out", str(tmp_path / "proc")]) == 0
    assert (tmp_path / "serial" / "metrics.jsonl").read_bytes() == (tmp_path / "proc" / "metrics.jsonl").read_bytes()


def test_gossipfl_resumes_exactly(tmp_path: Path) -> None:
    """The saps matching depends on every earlier match: a resumed run replays them and continues identically."""
    from fedloom.cli import build_config, make_parser, raw_from_args
    from fedloom.run import run_experiment

    args = [*GOSSIP, "--algorithm", "gossipfl", "--topology", "saps", "--rounds", "4", "--gossipfl.ratio", "0.1"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    parsed = make_parser().parse_args([*args, "--checkpoint-every", "1", "--out", str(tmp_path / "cut")])

    def stop(round_: int, record: dict) -> None:
        if round_ == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(build_config(raw_from_args(parsed)), progress=stop)
    assert main(["run", "--resume", str(tmp_path / "cut"), "--quiet"]) == 0
    assert (tmp_path / "cut" / "metrics.jsonl").read_bytes() == (tmp_path / "full" / "metrics.jsonl").read_bytes()
