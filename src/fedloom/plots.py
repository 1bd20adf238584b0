"""Plots written into run folders (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def accuracy_curve(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Overall accuracy per round with the 10th-90th percentile band of per-client accuracies."""
    rounds = [r["round"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 4))
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
