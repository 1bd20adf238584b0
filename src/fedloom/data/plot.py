"""Partition figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend change).

- partition.png: a clients x classes heatmap of label counts with a colorbar, above a bar plot of client sizes
  (train/test). Per-cell counts are written only up to ANNOTATE_MAX_CLIENTS clients.
- label_distribution.png: per-client label distribution as stacked bars, in counts (top) and in percent of the
  client (bottom), like flwr-datasets' plot_label_distributions. Beyond BAR_MAX_CLIENTS clients the bars are
  drawn as gap-free stacked steps (one polygon per class: fast and still readable for hundreds of clients).
  Up to LEGEND_MAX_CLASSES classes get a legend of distinct colours; more classes get a colour scale.
With a global test set, both show the clients' own (train) samples; the shared test set is named in the title.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from fedloom.data.federated import FederatedData

ANNOTATE_MAX_CLIENTS = 30
BAR_MAX_CLIENTS = 60
LEGEND_MAX_CLASSES = 20


def plot_partition(fd: FederatedData, path: Path) -> None:
    """Save the heatmap + size bar plot of ``fd`` to ``path`` (PNG)."""
    counts = fd.client_label_counts()
    n = fd.num_clients
    fig = Figure(figsize=(_width(n), 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    heat_ax, bar_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    _heatmap(fig, heat_ax, counts, fd)
    _size_bars(bar_ax, fd)
    fig.suptitle(_title(fd, "label counts"))
    fig.savefig(path, dpi=110)


def plot_label_distribution(fd: FederatedData, path: Path) -> None:
    """Save stacked bars of each client's label distribution (counts and percentages) to ``path`` (PNG)."""
    counts = fd.client_label_counts().astype(np.float64)
    sizes = counts.sum(axis=1, keepdims=True)
    percent = 100.0 * np.divide(counts, sizes, out=np.zeros_like(counts), where=sizes > 0)
    fig = Figure(figsize=(_width(fd.num_clients) + 1.5, 7.0), layout="constrained")
    FigureCanvasAgg(fig)
    count_ax, pct_ax = fig.subplots(2, 1, sharex=True)
    colors = _class_colors(fd.num_classes)
    _stacked(count_ax, counts, colors)
    _stacked(pct_ax, percent, colors)
    count_ax.set_ylabel("samples")
    pct_ax.set_ylabel("% of client")
    pct_ax.set_ylim(0, 100)
    pct_ax.set_xlabel("client")
    _client_ticks(pct_ax, fd.num_clients)
    _class_key(fig, count_ax, pct_ax, colors, fd)
    fig.suptitle(_title(fd, "label distribution"))
    fig.savefig(path, dpi=110)


def _width(num_clients: int) -> float:
    return min(max(8.0, 0.45 * num_clients + 2), 18.0)


def _title(fd: FederatedData, what: str) -> str:
    from fedloom.data.summary import describe, label_emd

    counts = fd.client_label_counts()
    test = f", global test set of {len(fd.test_idx[0])}" if fd.test_split == "global" and fd.num_clients else ""
    return (f"{fd.dataset.name}: {what}, {describe(fd)}, {fd.num_clients} clients{test}\n"
            f"mean label EMD {label_emd(counts).mean():.3f}, classes/client {(counts > 0).sum(1).mean():.2f}, "
            f"hash {fd.partition_hash[:12]}")  # fmt: skip


def _class_colors(num_classes: int) -> np.ndarray:
    """Distinct qualitative colours for few classes, a perceptual colour scale for many."""
    if num_classes <= 10:
        return colormaps["tab10"](np.arange(num_classes))
    if num_classes <= LEGEND_MAX_CLASSES:
        return colormaps["tab20"](np.arange(num_classes))
    return colormaps["viridis"](np.linspace(0, 1, num_classes))


def _stacked(ax, values: np.ndarray, colors: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Stacked bars (few clients) or stacked gap-free steps (many clients) of ``values`` [clients, classes]."""
    n = len(values)
    bottoms = np.concatenate([np.zeros((n, 1)), np.cumsum(values, axis=1)], axis=1)
    x = np.arange(n)
    for c in range(values.shape[1]):
        if n <= BAR_MAX_CLIENTS:
            ax.bar(x, values[:, c], bottom=bottoms[:, c], width=0.85, color=colors[c], linewidth=0)
        else:  # step edges at client boundaries, like bars of width 1
            edges = np.append(x - 0.5, n - 0.5)
            lo, hi = np.append(bottoms[:, c], bottoms[-1, c]), np.append(bottoms[:, c + 1], bottoms[-1, c + 1])
            ax.fill_between(edges, lo, hi, step="post", color=colors[c], linewidth=0)
    ax.set_xlim(-0.5, n - 0.5)
    ax.margins(y=0.02)


def _client_ticks(ax, num_clients: int) -> None:  # type: ignore[no-untyped-def]
    if num_clients <= ANNOTATE_MAX_CLIENTS:
        ax.set_xticks(np.arange(num_clients))
        ax.tick_params(axis="x", labelsize=7)


def _class_key(  # type: ignore[no-untyped-def]
    fig: Figure, count_ax, pct_ax, colors: np.ndarray, fd: FederatedData
) -> None:
    """A legend of class names (few classes) or a colour scale of class indices (many classes)."""
    from fedloom.data.summary import class_labels

    if fd.num_classes <= LEGEND_MAX_CLASSES:
        from matplotlib.patches import Patch

        handles = [Patch(color=colors[c], label=name) for c, name in enumerate(class_labels(fd))]
        count_ax.legend(handles=handles, title="class", fontsize=7, title_fontsize=8, loc="upper left",
                        bbox_to_anchor=(1.005, 1.0), frameon=False)  # fmt: skip
        return
    mappable = ScalarMappable(norm=Normalize(0, fd.num_classes - 1), cmap=colormaps["viridis"])
    fig.colorbar(mappable, ax=[count_ax, pct_ax], label="class index", pad=0.01)


def _heatmap(fig: Figure, ax, counts: np.ndarray, fd: FederatedData) -> None:  # type: ignore[no-untyped-def]
    img = ax.imshow(counts.T, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(img, ax=ax, label="samples", pad=0.01)
    names = fd.dataset.class_names or [str(c) for c in range(fd.num_classes)]
    if fd.num_classes <= 40:
        ax.set_yticks(range(fd.num_classes), labels=[str(s) for s in names[: fd.num_classes]], fontsize=8)
    ax.set_ylabel("class")
    if fd.num_clients <= ANNOTATE_MAX_CLIENTS and fd.num_classes <= 40:
        top = counts.max() if counts.size else 0
        for (i, c), v in np.ndenumerate(counts):
            if v:
                color = "black" if v > 0.6 * top else "white"
                ax.text(i, c, str(v), ha="center", va="center", fontsize=6, color=color)


def _size_bars(ax, fd: FederatedData) -> None:  # type: ignore[no-untyped-def]
    x = np.arange(fd.num_clients)
    width = 0.8 if fd.num_clients <= 200 else 1.0
    ax.bar(x, fd.train_sizes(), width=width, label="train", color="tab:blue")
    if fd.test_split == "global":
        ax.set_ylabel("train samples")  # every client shares the same test set: stacking it would mislead
    else:
        ax.bar(x, fd.test_sizes(), width=width, bottom=fd.train_sizes(), label="test", color="tab:orange")
        ax.set_ylabel("samples")
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel("client")
    if fd.num_clients <= ANNOTATE_MAX_CLIENTS:
        ax.set_xticks(x)
