"""The fixed start-up of a run (what every bench run pays): digits without importing sklearn, no pyplot at
import, partition figures drawn once per partition and copied afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fedloom.data.plot as plot
from fedloom.data.base import PartitionSpec
from fedloom.data.datasets.digits import load_digits_arrays
from fedloom.data.federated import build_federated_data
from fedloom.data.summary import write_partition_report


def test_digits_read_from_the_bundled_csv_equal_load_digits() -> None:
    from sklearn.datasets import load_digits

    images, target = load_digits_arrays()
    bunch = load_digits()
    assert np.array_equal(images, bunch.images) and images.dtype == bunch.images.dtype
    assert np.array_equal(target, bunch.target)


def test_importing_the_run_module_and_loading_digits_imports_neither_pyplot_nor_sklearn() -> None:
    code = ("import sys, fedloom.run; from fedloom.data.datasets.digits import load_digits_arrays; "
            "load_digits_arrays(); print(sorted(m for m in ('matplotlib.pyplot', 'sklearn', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_partition_figures_are_drawn_once_then_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fd = build_federated_data("digits", {}, PartitionSpec("dirichlet", 5, alpha=0.5), cache_dir=tmp_path / "c")
    calls: list[str] = []
    for name in ("plot_partition", "plot_label_distribution"):
        real = getattr(plot, name)
        monkeypatch.setattr(plot, name, lambda f, p, real=real, name=name: (calls.append(name), real(f, p)))
    write_partition_report(fd, tmp_path / "a", cache_dir=tmp_path / "c")
    write_partition_report(fd, tmp_path / "b", cache_dir=tmp_path / "c")
    assert calls == ["plot_partition", "plot_label_distribution"]  # the second run folder drew nothing
    for name in ("partition.png", "label_distribution.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    other = build_federated_data("digits", {}, PartitionSpec("dirichlet", 5, alpha=0.1), cache_dir=tmp_path / "c")
    write_partition_report(other, tmp_path / "d", cache_dir=tmp_path / "c")
    assert len(calls) == 4  # another partition is drawn anew
