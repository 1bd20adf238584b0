"""Shared by the Flower tests: a small digits config and a comparison of two runs' metrics."""

from __future__ import annotations

from typing import Any

import pytest

DIGITS = {"algorithm": "fedavg", "dataset": "digits", "clients": 6, "rounds": 2, "local_epochs": 1,
          "batch_size": 32, "lr": 0.05, "seed": 3}


def nodes(n: int = 3) -> list[dict[str, Any]]:
    return [{"partition-id": i, "num-partitions": n} for i in range(n)]


def assert_same_metrics(flower: list[dict], reference: list[dict]) -> None:
    """Per round: every metric the reference reports, equal to float rounding (the records keep 10 digits)."""
    assert len(flower) == len(reference)
    for got, want in zip(flower, reference):
        for key in ("round", "accuracy", "loss", "bytes_up", "bytes_down", "accuracy_personal"):
            if key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), (key, got, want)
