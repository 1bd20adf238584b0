"""Report figures as PNG bytes: learning curves (mean ± std band over seeds) and per-client accuracy boxes."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from matplotlib.ticker import MaxNLocator

from fedloom.bench.collect import Group, Variant
from fedloom.plots import plt  # Agg backend, set once for all of fedloom


def _png(fig: "plt.Figure") -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _horizontal() -> dict[str, object]:
    # matplotlib 3.10 renamed vert=False to orientation="horizontal" (and deprecated the old spelling)
    major, minor = (int(p) for p in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def mean_curve(variant: Variant) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounds evaluated by every seed, and the mean and std of accuracy (percent) across seeds there."""
    per_seed = [{r["round"]: r["accuracy"] for r in run.records if "accuracy" in r} for run in variant.runs]
    rounds = sorted(set.intersection(*(set(s) for s in per_seed)))
    values = np.array([[s[r] for r in rounds] for s in per_seed]) * 100
    return np.array(rounds), values.mean(axis=0), values.std(axis=0)


ZOOM_POINTS = 5.0  # the zoomed panel shows the methods whose final accuracy is within this many points of the best


def line_style(index: int) -> dict[str, object]:
    """Ten colours, then the same ten dashed, dotted, dash-dotted: 40 lines before any two look alike."""
    return {"color": plt.get_cmap("tab10")(index % 10), "linestyle": ("-", "--", ":", "-.")[(index // 10) % 4]}


def learning_curves(group: Group, order: list[str]) -> bytes:
    """One line per variant (in leaderboard order) with its std band: every round on the left, and on the right
    the second half of the budget zoomed on the leaders, where a full-range axis squeezes them into one band."""
    fig, (full, zoom) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    variants = {v.label: v for v in group.variants}
    curves = [(label, *mean_curve(variants[label])) for label in order]
    for index, (label, rounds, mean, std) in enumerate(curves):
        style = line_style(index)
        for ax in (full, zoom):
            ax.plot(rounds, mean, label=f"{label} (n={len(variants[label].runs)})", linewidth=1.4, **style)
            ax.fill_between(rounds, mean - std, mean + std, color=style["color"], alpha=0.15, linewidth=0)
    _zoom_on_leaders(zoom, curves)
    for ax in (full, zoom):
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    full.set_title(f"{group.title}: accuracy, mean ± std over seeds", fontsize=10)
    zoom.set_title(f"second half, within {ZOOM_POINTS:g} points of the best final", fontsize=10)
    zoom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=1 if len(order) <= 16 else 2)
    return _png(fig)


def _zoom_on_leaders(ax: "plt.Axes", curves: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> None:
    finals = [mean[-1] for _, _, mean, _ in curves if mean.size]
    if not finals:
        return
    last = max(rounds[-1] for _, rounds, _, _ in curves if rounds.size)
    first = last // 2
    peak = max(float(mean[rounds >= first].max()) for _, rounds, mean, _ in curves if (rounds >= first).any())
    ax.set_xlim(first, max(last, first + 1))
    ax.set_ylim(max(finals) - ZOOM_POINTS, peak + 0.1 * ZOOM_POINTS)


def client_distributions(group: Group, order: list[str]) -> bytes:
    """A box per variant of the final per-client test accuracies (clients.csv), all seeds pooled."""
    variants = {v.label: v for v in group.variants}
    data = [np.array([a for run in variants[label].runs for a in run.client_accuracy]) * 100 for label in order]
    fig, ax = plt.subplots(figsize=(5.8, 1.2 + 0.32 * max(3, len(order))))
    ax.boxplot([d if d.size else np.array([np.nan]) for d in data], showmeans=True, flierprops={"markersize": 3},
               **_horizontal())
    ax.set_yticks(range(1, len(order) + 1), order)
    ax.invert_yaxis()  # leaderboard order top to bottom
    ax.set_xlabel("final per-client test accuracy (%)")
    ax.set_title(f"{group.title}: per-client accuracy (every client of every seed)", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)
