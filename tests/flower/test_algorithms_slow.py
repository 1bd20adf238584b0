"""Over Flower records (in one process), personalized methods and compact uploads give ``fedloom run``'s metrics:
Ditto (client state kept on the node), FedAMP (personal downloads), FedAvg with top-k (a compact upload with
per-client transform state) and FedKSeed-style compact messages where the algorithm declares them."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

import fedloom  # noqa: E402
from fedloom.flower import client_app  # noqa: E402
from fedloom.flower.local import LocalGrid  # noqa: E402
from fedloom.flower.server import run_server  # noqa: E402

from tests.flower.helpers import DIGITS, assert_same_metrics, nodes  # noqa: E402

CASES = {
    "ditto": {"algorithm": "ditto"},
    "fedamp": {"algorithm": "fedamp"},
    "fedavg-topk": {"transform": "topk", "topk": {"ratio": 0.1}},
    "fedper-partial-cohort": {"algorithm": "fedper", "join_ratio": 0.5},
    # a Compact upload (seed indices + scalars) and a compact broadcast (K accumulated scalars, sent alone)
    "fedkseed": {"algorithm": "fedkseed", "model": "logreg", "fedkseed": {"steps": 20, "k": 64, "replay": "client"}},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_flower_equals_fedloom_run(case: str) -> None:
    cfg = {**DIGITS, **CASES[case]}
    result = run_server(cfg, LocalGrid(client_app(cfg), nodes(3)))
    reference = fedloom.run(cfg, out=None)
    assert_same_metrics(result.records, reference.records)
    assert [s["bytes_up_wire"] for s in result.flower_stats] == [r["bytes_up"] for r in reference.records[1:]]
    if case == "fedkseed":  # the upload crossed as 20 × (int16 index + float32 scalar) per client
        assert result.flower_stats[0]["bytes_up_wire"] == 6 * 20 * 6
