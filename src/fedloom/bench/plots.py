"""Report figures, sized for a two-column paper and rendered as PNG, PDF and SVG.

Every figure is drawn at its print size (SINGLE = 3.3 in, one column; DOUBLE = 7.0 in, the page width) with
text of at least 7 pt, so it can go into a paper unscaled; the HTML report shows the PNG at that size or
larger, never shrunk. Figures: learning curves (every round, and the second half zoomed on the leaders),
accuracy against the cumulative bytes sent and against wall-clock training time, per-client final accuracy,
and the partition's label counts (log colour scale). Curves differ in colour, dash pattern and marker; the
markers of different curves sit at staggered rounds, so two methods whose curves coincide stay visible.
"""

from __future__ import annotations

import io
import json
from typing import Callable, Optional

import matplotlib
import numpy as np
from matplotlib.ticker import MaxNLocator

from fedloom.bench.collect import Group, RunData, Variant
from fedloom.plots import plt  # Agg backend, set once for all of fedloom

SINGLE, DOUBLE = 3.3, 7.0  # inches: one column and the full width of a two-column paper
FORMATS = ("png", "pdf", "svg")
PNG_DPI = 200  # the HTML page shows the PNG at ~110 px per inch, so text stays sharp on high-density screens
PAPER_STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
               "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2, "lines.markersize": 3.5,
               "pdf.fonttype": 42, "svg.fonttype": "none", "svg.hashsalt": "fedloom", "axes.titlepad": 4}  # 42: TrueType, editable text
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")
DASHES = ("-", "--", ":", "-.")
ZOOM_POINTS = 5.0  # the zoomed panel shows the methods whose final accuracy is within this many points of the best

Figure = "plt.Figure"


def render(draw: Callable[[], "plt.Figure"]) -> dict[str, bytes]:
    """Draw a figure under the paper style and return it as {"png": ..., "pdf": ..., "svg": ...}."""
    with plt.rc_context(PAPER_STYLE):
        fig = draw()
        out = {}
        for fmt in FORMATS:
            buffer = io.BytesIO()
            # a fixed date keeps PDF/SVG bytes reproducible across report runs
            meta = {"CreationDate": None} if fmt == "pdf" else ({"Date": None} if fmt == "svg" else {})
            fig.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=meta)
            out[fmt] = buffer.getvalue()
        plt.close(fig)
    return out


def _horizontal() -> dict[str, object]:
    # matplotlib 3.10 renamed vert=False to orientation="horizontal" (and deprecated the old spelling)
    major, minor = (int(p) for p in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def line_style(index: int) -> dict[str, object]:
    """Colour, dash and marker of the index-th curve: consecutive curves differ in all three, and 40 curves
    have 40 distinct (colour, dash) pairs (the dash shifts by one more every ten colours)."""
    return {"color": plt.get_cmap("tab10")(index % 10), "linestyle": DASHES[(index + index // 10) % 4],
            "marker": MARKERS[index % len(MARKERS)]}


def marker_rounds(index: int, count: int, points: int, marks: int = 8) -> tuple[int, int]:
    """``markevery`` for curve ``index`` of ``count``: about ``marks`` markers, each curve's shifted by a
    fraction of the spacing, so coinciding curves show their markers side by side instead of on top."""
    step = max(2 if points > 4 else 1, points // marks)  # every other point at least, so there is room to shift
    if count > step:  # more curves than offsets: consecutive curves (the likeliest to coincide) still differ
        return (index % step, step)
    return (int(round(index * step / max(count, 1))) % step, step)


# ------------------------------------------------------------------------------------------------ data
def mean_curve(variant: Variant) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounds evaluated by every seed, and the mean and std of accuracy (percent) across seeds there."""
    per_seed = [{r["round"]: r["accuracy"] for r in run.records if "accuracy" in r} for run in variant.runs]
    rounds = sorted(set.intersection(*(set(s) for s in per_seed)))
    values = np.array([[s[r] for r in rounds] for s in per_seed]) * 100
    return np.array(rounds), values.mean(axis=0), values.std(axis=0)


def cumulative_bytes(run: RunData) -> dict[int, float]:
    """Bytes sent up and down by the end of each evaluated round (round 0: nothing sent yet)."""
    return {r["round"]: float(r.get("cum_bytes_up", 0) + r.get("cum_bytes_down", 0)) for r in run.records}


def cumulative_seconds(run: RunData) -> Optional[dict[int, float]]:
    """Training + evaluation seconds by the end of each round, from timings.jsonl (None without it)."""
    path = run.folder / "timings.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    total, out = 0.0, {0: 0.0}
    for row in sorted(rows, key=lambda r: r["round"]):
        total += float(row.get("train_seconds", 0.0)) + float(row.get("eval_seconds", 0.0))
        out[int(row["round"])] = total
    return out


def cost_curve(variant: Variant, cost: Callable[[RunData], Optional[dict[int, float]]]
               ) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Mean cost (over seeds) against mean accuracy (percent) at the rounds every seed evaluated and costed."""
    costs = [cost(run) for run in variant.runs]
    if any(c is None for c in costs):
        return None
    accs = [{r["round"]: r["accuracy"] for r in run.records if "accuracy" in r} for run in variant.runs]
    rounds = sorted(set.intersection(*(set(a) & set(c) for a, c in zip(accs, costs))))  # type: ignore[arg-type]
    if not rounds:
        return None
    x = np.mean([[c[r] for r in rounds] for c in costs], axis=0)  # type: ignore[index]
    y = np.mean([[a[r] for r in rounds] for a in accs], axis=0) * 100
    return x, y


# ------------------------------------------------------------------------------------------------ figures
def _legend_below(fig: "plt.Figure", axes: list, labels_count: int, columns: int) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    rows = -(-labels_count // columns)
    fig.legend(handles, labels, loc="lower center", ncol=columns, frameon=False, handlelength=3.2,
               columnspacing=1.2, bbox_to_anchor=(0.5, 0.0))
    # reserve the legend's height (7 pt rows of ~0.16 in, plus padding) at the bottom, in figure fractions
    fig.tight_layout(rect=(0, min(0.6, (0.08 + rows * 0.16) / fig.get_size_inches()[1]), 1, 1))


def learning_curves(group: Group, order: list[str], legend: dict[str, str]) -> dict[str, bytes]:
    """One line per variant (in leaderboard order) with its std band: every round on the left, and on the right
    the second half of the budget zoomed on the leaders, where a full-range axis squeezes them into one band."""
    def draw() -> "plt.Figure":
        variants = {v.label: v for v in group.variants}
        curves = [(label, *mean_curve(variants[label])) for label in order]
        rows = -(-len(order) // 2)
        fig, (full, zoom) = plt.subplots(1, 2, figsize=(DOUBLE, 2.5 + 0.16 * rows))
        for index, (label, rounds, mean, std) in enumerate(curves):
            style = line_style(index)
            for ax in (full, zoom):
                ax.plot(rounds, mean, label=f"{legend[label]} (n={len(variants[label].runs)})",
                        markevery=marker_rounds(index, len(curves), len(rounds)), **style)
                ax.fill_between(rounds, mean - std, mean + std, color=style["color"], alpha=0.12, linewidth=0)
        _zoom_on_leaders(zoom, curves)
        for ax in (full, zoom):
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
        full.set_title(f"{group.title}: mean ± std over seeds")
        zoom.set_title(f"second half, within {ZOOM_POINTS:g} points of the best final")
        _legend_below(fig, [full], len(order), 2)
        return fig

    return render(draw)


def _zoom_on_leaders(ax: "plt.Axes", curves: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> None:
    finals = [mean[-1] for _, _, mean, _ in curves if mean.size]
    if not finals:
        return
    last = max(rounds[-1] for _, rounds, _, _ in curves if rounds.size)
    first = last // 2
    peak = max(float(mean[rounds >= first].max()) for _, rounds, mean, _ in curves if (rounds >= first).any())
    ax.set_xlim(first, max(last, first + 1))
    ax.set_ylim(max(finals) - ZOOM_POINTS, peak + 0.1 * ZOOM_POINTS)


def cost_curves(group: Group, order: list[str], legend: dict[str, str]) -> Optional[dict[str, bytes]]:
    """Accuracy against cumulative bytes (up + down) and against wall-clock seconds (train + evaluation, from
    timings.jsonl), mean over seeds: what a method's accuracy costs. None when no run has either."""
    variants = {v.label: v for v in group.variants}
    by_bytes = {label: cost_curve(variants[label], cumulative_bytes) for label in order}
    by_time = {label: cost_curve(variants[label], cumulative_seconds) for label in order}
    if not any(c is not None and c[0].max() > 0 for c in by_bytes.values()) and not any(by_time.values()):
        return None

    def draw() -> "plt.Figure":
        rows = -(-len(order) // 2)
        fig, (left, right) = plt.subplots(1, 2, figsize=(DOUBLE, 2.5 + 0.16 * rows))
        unit, scale = _byte_unit(by_bytes)
        for ax, curves, xlabel, factor in ((left, by_bytes, f"{unit} sent, up + down (cumulative)", scale),
                                           (right, by_time, "wall-clock seconds, training + evaluation", 1.0)):
            for index, label in enumerate(order):
                curve = curves[label]
                if curve is None:
                    continue
                x, y = curve[0] / factor, curve[1]
                keep = x > 0  # round 0 costs nothing and has no place on a log axis
                ax.plot(x[keep], y[keep], label=legend[label],
                        markevery=marker_rounds(index, len(order), int(keep.sum())), **line_style(index))
            _log_if_wide(ax, [c[0][c[0] > 0] / factor for c in curves.values() if c is not None])
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
        left.set_title(f"{group.title}: accuracy vs communication")
        right.set_title("accuracy vs time")
        _legend_below(fig, [left], len(order), 2)
        return fig

    return render(draw)


def _byte_unit(curves: dict[str, Optional[tuple[np.ndarray, np.ndarray]]]) -> tuple[str, float]:
    top = max((float(c[0].max()) for c in curves.values() if c is not None and c[0].size), default=0.0)
    return next(((unit, size) for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)) if top >= size), ("bytes", 1.0))


def _log_if_wide(ax: "plt.Axes", xs: list[np.ndarray]) -> None:
    values = np.concatenate(xs) if xs else np.zeros(0)
    if values.size and values.min() > 0 and values.max() / values.min() > 30:
        ax.set_xscale("log")


def client_distributions(group: Group, order: list[str], legend: dict[str, str]) -> dict[str, bytes]:
    """A box per variant of the final per-client test accuracies (clients.csv), all seeds pooled."""
    variants = {v.label: v for v in group.variants}
    data = [np.array([a for run in variants[label].runs for a in run.client_accuracy]) * 100 for label in order]

    def draw() -> "plt.Figure":
        fig, ax = plt.subplots(figsize=(DOUBLE if max(len(legend[k]) for k in order) > 28 else SINGLE + 1.2,
                                        0.8 + 0.22 * max(3, len(order))))
        ax.boxplot([d if d.size else np.array([np.nan]) for d in data], showmeans=True,
                   flierprops={"markersize": 2}, meanprops={"markersize": 3}, **_horizontal())
        ax.set_yticks(range(1, len(order) + 1), [legend[k] for k in order])
        ax.invert_yaxis()  # leaderboard order top to bottom
        ax.set_xlabel("final per-client test accuracy (%)")
        ax.set_title(f"{group.title}: per-client accuracy, all seeds")
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        return fig

    return render(draw)


def partition_heatmap(run: RunData) -> Optional[dict[str, bytes]]:
    """The run's label counts per client and class (partition.json) on a log colour scale, one column wide;
    beyond SUMMARY_CLIENTS clients an evenly spaced sample of them."""
    path = run.folder / "partition.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    counts = np.asarray(info.get("summary", {}).get("label_counts", []), dtype=np.int64)
    if counts.ndim != 2 or not counts.size:
        return None
    from fedloom.data.plot import label_heatmap, shown_clients

    names = [str(n) for n in info.get("class_names") or range(counts.shape[1])]

    def draw() -> "plt.Figure":
        fig, ax = plt.subplots(figsize=(SINGLE, 0.9 + 0.16 * min(counts.shape[1], 20)))
        label_heatmap(fig, ax, counts, names, shown_clients(len(counts)), tick_size=7)
        if len(counts) <= 50:
            ax.set_xlabel("client")
        ax.set_title(f"{info.get('dataset', '')}: {info.get('partition_description', '')}", fontsize=7)
        fig.tight_layout()
        return fig

    return render(draw)
