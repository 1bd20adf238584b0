"""Partition reports that scale: beyond SUMMARY_CLIENTS clients the table, heatmap and bars summarize."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import LogNorm

from fedloom.data.base import PartitionSpec
from fedloom.data.federated import FederatedData, build_federated_data
from fedloom.data.plot import HEATMAP_SAMPLE, partition_figure, shown_clients
from fedloom.data.summary import EXTREME_CLIENTS, SUMMARY_CLIENTS, format_table, label_emd, size_bins


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> FederatedData:
    # 1,797 digits over 300 clients: ~6 samples each, far beyond SUMMARY_CLIENTS
    return build_federated_data("digits", {}, PartitionSpec("dirichlet", 300, alpha=0.3),
                                cache_dir=tmp_path_factory.mktemp("cache"))


def test_label_counts_match_a_per_client_bincount(many: FederatedData) -> None:
    y = many.dataset.y.numpy()
    expected = np.stack([np.bincount(y[np.concatenate([tr.numpy(), te.numpy()])], minlength=10)
                         for tr, te in zip(many.train_idx, many.test_idx)])
    assert np.array_equal(many.client_label_counts(), expected)
    train_only = np.stack([np.bincount(y[tr.numpy()], minlength=10) for tr in many.train_idx])
    assert np.array_equal(many.label_counts("train"), train_only)


def test_many_clients_print_histograms_and_the_extremes_only(many: FederatedData) -> None:
    text = format_table(many)
    lines = text.splitlines()
    assert len(lines) < 60  # not one row per client
    counts = many.client_label_counts()
    emd = label_emd(counts)
    most = lines.index(f"{EXTREME_CLIENTS} most skewed clients (highest label EMD):")
    first_row = lines[most + 1].split()
    assert int(first_row[0]) == int(np.argmax(emd))  # ties: the lowest id, as argmax
    assert float(first_row[-1]) == pytest.approx(emd.max(), abs=5e-4)
    least = lines.index(f"{EXTREME_CLIENTS} least skewed clients:")
    assert float(lines[least + EXTREME_CLIENTS].split()[-1]) == pytest.approx(emd.min(), abs=5e-4)
    # the histogram bars count every client exactly once
    sizes_at = lines.index("client sizes (samples: clients):")
    classes_at = lines.index("classes per client (classes: clients):")
    assert sum(int(line.split()[1]) for line in lines[sizes_at + 1:classes_at]) == 300
    header_at = next(i for i, line in enumerate(lines) if line.split()[:3] == ["client", "train", "test"])
    assert sum(int(line.split()[1]) for line in lines[classes_at + 1:header_at]) == 300
    assert "300 clients summarized" in lines[-1]


def test_few_clients_keep_one_row_each() -> None:
    fd = build_federated_data("digits", {}, PartitionSpec("iid", SUMMARY_CLIENTS))
    assert len(format_table(fd).splitlines()) == 1 + 1 + SUMMARY_CLIENTS + 1 + 1


def test_size_bins_are_geometric_for_skewed_sizes_and_cover_every_size() -> None:
    assert size_bins(np.array([3, 4, 5])).tolist() == [3, 4, 5, 6]
    skewed = np.array([1, 2, 3, 50, 1000])
    edges = size_bins(skewed)
    assert edges[0] == 1 and edges[-1] == 1001
    widths = np.diff(edges)
    assert widths[-1] > 10 * widths[0]  # geometric: the last bin is much wider than the first
    assert np.histogram(skewed, bins=edges)[0].sum() == 5


def test_heatmap_samples_clients_on_a_log_scale_with_grey_zeros(many: FederatedData) -> None:
    clients = shown_clients(300)
    assert len(clients) == HEATMAP_SAMPLE and clients[0] == 0 and clients[-1] == 299
    fig = partition_figure(many)
    heat = fig.axes[0]
    image = heat.images[0]
    assert image.get_array().shape == (10, HEATMAP_SAMPLE)  # classes x sampled clients, not x 300
    assert isinstance(image.norm, LogNorm)
    assert np.array_equal(image.get_array().mask, many.client_label_counts()[clients].T == 0)
    patches = sum(len(ax.patches) for ax in fig.axes)
    assert patches < 60  # histogram bins and class bars, not one bar per client


def test_few_clients_heatmap_shows_every_client() -> None:
    fd = build_federated_data("digits", {}, PartitionSpec("dirichlet", 8, alpha=0.1))
    image = partition_figure(fd).axes[0].images[0]
    assert image.get_array().shape == (10, 8)
    assert isinstance(image.norm, LogNorm)
