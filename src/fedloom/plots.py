"""Plots written into run folders, drawn with matplotlib's object API on the Agg canvas (no display needed).

matplotlib is imported when a figure is drawn, not when fedloom.run is imported, and pyplot only when a caller
asks for ``fedloom.plots.plt`` (the report does, for its style context): importing pyplot costs ~0.5-1 s of
every run's start-up and would switch a notebook's backend.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def __getattr__(name: str) -> Any:
    """``from fedloom.plots import plt``: pyplot on the Agg backend, imported on first use."""
    if name == "plt":
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def preload_in_background() -> threading.Thread:
    """Import what :func:`accuracy_figure` needs on a daemon thread while the rounds run, so the figure at the end
    of a run costs its drawing (~0.1 s) and not also matplotlib's import (~0.4 s). The rounds lose little to it:
    torch releases the GIL inside its kernels, and with the processes engine the main thread mostly waits."""
    thread = threading.Thread(target=_import_figure_modules, name="fedloom-plot-preload", daemon=True)
    thread.start()
    return thread


def _import_figure_modules() -> None:
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except Exception:  # the figure's own import will report it, at the end of the run, in the main thread
        pass


def accuracy_figure(records: list[dict[str, Any]], title: str) -> "Figure":
    """Overall accuracy per round with the 10th-90th percentile band of per-client accuracies."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rounds = [r["round"] for r in records]
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.fill_between(rounds, [r["client_accuracy_p10"] for r in records],
                    [r["client_accuracy_p90"] for r in records], alpha=0.2, label="clients p10-p90")
    ax.plot(rounds, [r["accuracy"] for r in records], marker="o" if len(rounds) < 30 else None,
            label="accuracy (Σcorrect/Σsamples)")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_curve(records: list[dict[str, Any]], path: Path, title: str) -> "Figure":
    """Save :func:`accuracy_figure` to ``path`` (PNG) and return the figure."""
    fig = accuracy_figure(records, title)
    fig.savefig(path, dpi=110)
    return fig
