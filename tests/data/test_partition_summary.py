from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from fedloom.data.base import PartitionSpec
from fedloom.data.federated import build_federated_data
from fedloom.data.summary import format_table, label_tv_distances, partition_summary, write_partition_report


def test_tv_distance_extremes() -> None:
    assert np.allclose(label_tv_distances(np.array([[5, 5], [5, 5]])), 0.0)
    assert np.allclose(label_tv_distances(np.array([[10, 0], [0, 10]])), 0.5)


def test_summary_and_table() -> None:
    fd = build_federated_data("digits", {}, PartitionSpec("pathological", 6, classes_per_client=2))
    s = partition_summary(fd)
    assert s["num_clients"] == 6 and s["total_samples"] == 1797
    assert s["mean_classes_per_client"] == 2.0 and 0.5 < s["mean_label_emd"] <= 1.0
    assert len(s["label_emd"]) == 6 and np.isclose(np.mean(s["label_emd"]), s["mean_label_emd"], atol=1e-5)
    assert np.array_equal(np.array(s["train_sizes"]) + s["test_sizes"], np.array(s["label_counts"]).sum(1))
    table = format_table(fd)
    assert table.splitlines()[1].split()[:3] == ["client", "train", "test"]
    assert len(table.splitlines()) == 1 + 1 + 6 + 1 + 1


def test_write_report(tmp_path: Path) -> None:
    fd = build_federated_data("digits", {}, PartitionSpec("dirichlet", 40, alpha=0.5))
    write_partition_report(fd, tmp_path / "run")
    info = json.loads((tmp_path / "run" / "partition.json").read_text())
    assert info["partition_hash"] == fd.partition_hash and info["partition"]["alpha"] == 0.5
    with open(tmp_path / "run" / "label_counts.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:3] == ["client", "train", "test"] and rows[0][-1] == "label_emd" and len(rows) == 41
    assert sum(int(v) for r in rows[1:] for v in r[3:-1]) == 1797
    for name in ("partition.png", "label_distribution.png"):
        png = (tmp_path / "run" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
