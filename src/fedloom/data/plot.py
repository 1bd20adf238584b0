"""Partition figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend change).

- partition.png: a clients x classes heatmap of label counts on a log colour scale (empty cells grey, so 0 and a
  few samples never look alike when client sizes are skewed) above a bar plot of client sizes (train/test).
  Per-cell counts are written only up to ANNOTATE_MAX_CLIENTS clients. Beyond SUMMARY_CLIENTS clients the
  heatmap shows HEATMAP_SAMPLE clients evenly spaced by id and the bars become histograms of client sizes and
  of classes per client: one patch per client would cost seconds per thousand clients and show nothing.
- label_distribution.png: per-client label distribution as stacked bars, in counts (top) and in percent of the
  client (bottom), like flwr-datasets' plot_label_distributions. Beyond BAR_MAX_CLIENTS clients the bars are
  drawn as gap-free stacked steps (one polygon per class: fast and still readable for hundreds of clients).
  Up to LEGEND_MAX_CLASSES classes get a legend of distinct colours; more classes get a colour scale. Beyond
  SUMMARY_CLIENTS clients it shows the same evenly spaced sample of clients as the heatmap.
With a global test set, both show the clients' own (train) samples; the shared test set is named in the title.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from fedloom.data.federated import FederatedData
from fedloom.data.summary import SUMMARY_CLIENTS, size_bins

ANNOTATE_MAX_CLIENTS = 30
BAR_MAX_CLIENTS = 60
LEGEND_MAX_CLASSES = 20
HEATMAP_SAMPLE = 100


def shown_clients(num_clients: int) -> np.ndarray:
    """Every client, or HEATMAP_SAMPLE evenly spaced by id (first and last included) beyond SUMMARY_CLIENTS."""
    if num_clients <= SUMMARY_CLIENTS:
        return np.arange(num_clients)
    return np.unique(np.linspace(0, num_clients - 1, HEATMAP_SAMPLE).round().astype(np.int64))


def partition_figure(fd: FederatedData) -> Figure:
    """The heatmap + client sizes figure of ``fd`` (a matplotlib Figure on the Agg canvas)."""
    counts = fd.client_label_counts()
    n = fd.num_clients
    if n <= SUMMARY_CLIENTS:
        fig = Figure(figsize=(_width(n), 6.5), layout="constrained")
        FigureCanvasAgg(fig)
        heat_ax, bar_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        _heatmap(fig, heat_ax, counts, fd, np.arange(n))
        _size_bars(bar_ax, fd)
    else:
        fig = Figure(figsize=(_width(HEATMAP_SAMPLE), 7.0), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplot_mosaic([["heat", "heat"], ["sizes", "classes"]], height_ratios=[3, 1.3])
        _heatmap(fig, axes["heat"], counts, fd, shown_clients(n))
        _histograms(axes["sizes"], axes["classes"], counts)
    fig.suptitle(_title(fd, "label counts"))
    return fig


def plot_partition(fd: FederatedData, path: Path) -> None:
    """Save the heatmap + size figure of ``fd`` to ``path`` (PNG)."""
    partition_figure(fd).savefig(path, dpi=110)


def plot_label_distribution(fd: FederatedData, path: Path) -> None:
    """Save stacked bars of each client's label distribution (counts and percentages) to ``path`` (PNG)."""
    label_distribution_figure(fd).savefig(path, dpi=110)


def label_distribution_figure(fd: FederatedData) -> Figure:
    """Stacked bars of each shown client's label distribution, in counts (top) and percent (bottom)."""
    clients = shown_clients(fd.num_clients)
    counts = fd.client_label_counts()[clients].astype(np.float64)
    sizes = counts.sum(axis=1, keepdims=True)
    percent = 100.0 * np.divide(counts, sizes, out=np.zeros_like(counts), where=sizes > 0)
    fig = Figure(figsize=(_width(len(clients)) + 1.5, 7.0), layout="constrained")
    FigureCanvasAgg(fig)
    count_ax, pct_ax = fig.subplots(2, 1, sharex=True)
    colors = _class_colors(fd.num_classes)
    _stacked(count_ax, counts, colors)
    _stacked(pct_ax, percent, colors)
    count_ax.set_ylabel("samples")
    pct_ax.set_ylabel("% of client")
    pct_ax.set_ylim(0, 100)
    pct_ax.set_xlabel(_client_axis(fd.num_clients, len(clients)))
    _client_ticks(pct_ax, fd.num_clients)
    _class_key(fig, count_ax, pct_ax, colors, fd)
    fig.suptitle(_title(fd, "label distribution"))
    return fig


def _client_axis(num_clients: int, shown: int) -> str:
    return "client" if shown == num_clients else f"{shown} of {num_clients} clients, evenly spaced by id"


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


def _heatmap(  # type: ignore[no-untyped-def]
    fig: Figure, ax, counts: np.ndarray, fd: FederatedData, clients: np.ndarray
) -> None:
    names = fd.dataset.class_names or [str(c) for c in range(fd.num_classes)]
    label_heatmap(fig, ax, counts, [str(s) for s in names[: fd.num_classes]], clients,
                  annotate=fd.num_clients <= ANNOTATE_MAX_CLIENTS)


def label_heatmap(  # type: ignore[no-untyped-def]
    fig: Figure, ax, counts: np.ndarray, class_names: list[str], clients: np.ndarray, annotate: bool = False,
    tick_size: float = 8,
) -> None:
    """Counts [clients, classes] of the ``clients`` rows on a log colour scale with a colorbar; empty cells are
    grey (outside the scale), so 0 and a handful of samples never share a colour."""
    num_clients, num_classes = counts.shape
    shown = counts[clients]
    top = max(int(shown.max()) if shown.size else 1, 2)
    cmap = colormaps["viridis"].with_extremes(bad="#d9d9d9")
    img = ax.imshow(np.ma.masked_equal(shown.T, 0), aspect="auto", cmap=cmap, interpolation="nearest",
                    norm=LogNorm(vmin=1, vmax=top))
    fig.colorbar(img, ax=ax, label="samples (log scale; grey = 0)", pad=0.01)
    if num_classes <= 40:
        ax.set_yticks(range(num_classes), labels=class_names, fontsize=tick_size)
    ax.set_ylabel("class")
    if len(clients) < num_clients:
        ax.set_xlabel(_client_axis(num_clients, len(clients)))
        ticks = np.linspace(0, len(clients) - 1, 6).round().astype(int)
        ax.set_xticks(ticks, labels=[str(clients[t]) for t in ticks])
    if annotate and num_classes <= 40:
        for (i, c), v in np.ndenumerate(shown):
            if v:  # dark text on the bright end of viridis, white on the dark end
                color = "black" if np.log(v) > 0.6 * np.log(top) else "white"
                ax.text(i, c, str(v), ha="center", va="center", fontsize=6, color=color)


def _histograms(size_ax, class_ax, counts: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Histograms of client sizes and of classes per client (the many-client stand-in for per-client bars)."""
    sizes = counts.sum(axis=1)
    edges = size_bins(sizes, bins=20)
    size_ax.hist(sizes, bins=edges, color="tab:blue")
    if len(edges) > 2 and edges[-1] > 20 * max(edges[0], 1):
        size_ax.set_xscale("log")
    size_ax.set_xlabel("client size (samples)")
    size_ax.set_ylabel("clients")
    classes = (counts > 0).sum(axis=1)
    values, number = np.unique(classes, return_counts=True)
    class_ax.bar(values, number, width=0.8, color="tab:green")
    class_ax.set_xlabel("classes per client")
    class_ax.set_ylabel("clients")


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
