"""partition.png: a clients x classes heatmap of label counts with a colorbar, above a bar plot of client sizes.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend change). Per-cell count
annotations are drawn only up to ANNOTATE_MAX_CLIENTS clients; beyond that the heatmap stays readable unlabeled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fedloom.data.federated import FederatedData

ANNOTATE_MAX_CLIENTS = 30


def plot_partition(fd: FederatedData, path: Path) -> None:
    """Save the heatmap + size bar plot of ``fd`` to ``path`` (PNG)."""
    counts = fd.label_counts("all")
    n = fd.num_clients
    fig = Figure(figsize=(min(max(8.0, 0.45 * n + 2), 18.0), 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    heat_ax, bar_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    _heatmap(fig, heat_ax, counts, fd)
    _size_bars(bar_ax, fd)
    p = fd.partition
    fig.suptitle(f"{fd.dataset.name}: {p.name} partition, {n} clients (hash {fd.partition_hash[:12]})")
    fig.savefig(path, dpi=110)


def _heatmap(fig: Figure, ax, counts: np.ndarray, fd: FederatedData) -> None:  # type: ignore[no-untyped-def]
    img = ax.imshow(counts.T, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(img, ax=ax, label="samples", pad=0.01)
    names = fd.dataset.class_names or [str(c) for c in range(fd.num_classes)]
    ax.set_yticks(range(fd.num_classes), labels=[str(s) for s in names[: fd.num_classes]], fontsize=8)
    ax.set_ylabel("class")
    if fd.num_clients <= ANNOTATE_MAX_CLIENTS:
        top = counts.max() if counts.size else 0
        for (i, c), v in np.ndenumerate(counts):
            if v:
                color = "black" if v > 0.6 * top else "white"
                ax.text(i, c, str(v), ha="center", va="center", fontsize=6, color=color)


def _size_bars(ax, fd: FederatedData) -> None:  # type: ignore[no-untyped-def]
    x = np.arange(fd.num_clients)
    width = 0.8 if fd.num_clients <= 200 else 1.0
    ax.bar(x, fd.train_sizes(), width=width, label="train", color="tab:blue")
    ax.bar(x, fd.test_sizes(), width=width, bottom=fd.train_sizes(), label="test", color="tab:orange")
    ax.set_xlabel("client")
    ax.set_ylabel("samples")
    ax.legend(fontsize=7, loc="upper right")
    if fd.num_clients <= ANNOTATE_MAX_CLIENTS:
        ax.set_xticks(x)
