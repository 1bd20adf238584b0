"""Leaderboard rows: mean ± std over seeds, rounds to a target accuracy, bytes, wall time, published numbers.

Accuracies are shown in percent. std is the population standard deviation over seeds (numpy's default, as
PFLlib reports it). Rounds-to-target is the first evaluated round whose accuracy reaches the target, averaged
over the seeds that reach it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from fedloom.bench.collect import Group, Variant
from fedloom.errors import ConfigError
from fedloom.registry import canonical

REFERENCE_COLUMNS = ("dataset", "partition", "algorithm", "accuracy")
#: dataset spellings used by other libraries' tables → one key
DATASET_ALIASES = {"fmnist": "fashionmnist", "tiny": "tinyimagenet", "tinyimagenet200": "tinyimagenet",
                   "cifar-100": "cifar100"}
#: algorithm names of other libraries' tables → fedloom's registered name (PFLlib's FedDistill is fedloom's FD)
ALGORITHM_ALIASES = {"feddistill": "fd"}


@dataclass
class Row:
    label: str
    algorithm: str
    model: str
    seeds: list[int]
    best: tuple[float, float]  # mean, std (percent)
    final: tuple[float, float]
    rounds_to_target: Optional[float]
    reached: int
    total_bytes: float
    wall_seconds: float
    late_gain: Optional[float] = None  # points gained over the last LATE_WINDOW rounds (mean over seeds)
    client_p10: Optional[tuple[float, float]] = None  # final round's 10th-percentile client accuracy (percent)
    client_std: Optional[tuple[float, float]] = None  # final round's std of client accuracies (points)
    hyper: str = ""
    note: str = ""  # shown after the label in the tables (a diverged run's "† diverged (round N)")
    published: Optional[float] = None
    source: str = ""

    @property
    def delta(self) -> Optional[float]:
        return None if self.published is None else self.best[0] - self.published


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float) * 100
    return float(array.mean()), float(array.std())


#: rounds over which "still rising?" is judged: accuracy at the last evaluated round minus LATE_WINDOW earlier
LATE_WINDOW = 5


def late_gain(records: list[dict]) -> Optional[float]:
    """Accuracy points gained between the last evaluated round and the latest one at least LATE_WINDOW rounds
    before it: positive means the curve is still rising at the end of the budget."""
    evaluated = [r for r in records if "accuracy" in r]
    if not evaluated:
        return None
    last = evaluated[-1]
    earlier = [r for r in evaluated if r["round"] <= last["round"] - LATE_WINDOW]
    return None if not earlier else 100 * (last["accuracy"] - earlier[-1]["accuracy"])


def first_round_at(records: list[dict], target: float) -> Optional[int]:
    return next((r["round"] for r in records if r.get("accuracy", -1) >= target), None)


def group_target(group: Group, target: Optional[float]) -> float:
    """The given target, else 90% of the group's highest mean best accuracy (so every group gets one)."""
    if target is not None:
        return target
    return 0.9 * max(np.mean([r.summary["best_accuracy"] for r in v.runs]) for v in group.variants)


def diverged_text(rounds: list[int], runs: int) -> str:
    """'diverged (round 2)', or '1 of 2 seeds diverged (round 2)': ``rounds`` are the rounds in which the
    diverged ones of ``runs`` runs ended (--on-divergence record); empty when none diverged."""
    if not rounds:
        return ""
    seeds = "" if len(rounds) == runs else f"{len(rounds)} of {runs} seeds "
    return f"{seeds}diverged (round {', '.join(map(str, sorted(set(rounds))))})"


def diverged_note(runs: list) -> str:
    """' † diverged (round 2)' for a variant some of whose runs ended by diverging: their best and final
    accuracies are not those of a run that trained to the end."""
    text = diverged_text([r.summary["diverged"]["round"] for r in runs if "diverged" in r.summary], len(runs))
    return f" † {text}" if text else ""


def make_row(variant: Variant, target: float) -> Row:
    runs = variant.runs
    hits = [h for h in (first_round_at(r.records, target) for r in runs) if h is not None]
    return Row(label=variant.label, note=diverged_note(runs), algorithm=variant.algorithm, model=str(variant.config.model),
               seeds=[r.config.seed for r in runs], best=_mean_std([r.summary["best_accuracy"] for r in runs]),
               final=_mean_std([r.summary["final_accuracy"] for r in runs]),
               rounds_to_target=float(np.mean(hits)) if hits else None, reached=len(hits),
               total_bytes=float(np.mean([r.summary.get("total_bytes_up", 0) + r.summary.get("total_bytes_down", 0)
                                          for r in runs])),
               wall_seconds=float(np.mean([r.summary.get("wall_seconds", 0.0) for r in runs])),
               late_gain=_mean_or_none([late_gain(r.records) for r in runs]),
               **_client_columns(variant), hyper=variant.hyper)


def _client_columns(variant: Variant) -> dict[str, Optional[tuple[float, float]]]:
    """The per-client columns, None where there is nothing to measure: with ``test_split = "global"`` and one
    global model every client is scored on the same shared test set, so the clients' "spread" in metrics.jsonl
    is the global accuracy repeated (max = min), not a measurement of clients. Personal models on the global
    test set do differ, and keep their columns."""
    runs = variant.runs
    if getattr(variant.config, "test_split", "per-client") == "global" and all(
            _final_stat([run], "client_accuracy_max") == _final_stat([run], "client_accuracy_min") for run in runs):
        return {"client_p10": None, "client_std": None}
    return {"client_p10": _final_stat(runs, "client_accuracy_p10"),
            "client_std": _final_stat(runs, "client_accuracy_std")}


def _final_stat(runs: list, key: str) -> Optional[tuple[float, float]]:
    """Mean ± std over seeds (in percent) of ``key`` at each run's last evaluated round (metrics.jsonl)."""
    values = [next((r[key] for r in reversed(run.records) if key in r), None) for run in runs]
    return None if any(v is None for v in values) else _mean_std(values)


def _mean_or_none(values: list[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def leaderboard(group: Group, target: float) -> list[Row]:
    """Rows sorted by mean best accuracy, best first."""
    return sorted((make_row(v, target) for v in group.variants), key=lambda r: -r.best[0])


# ------------------------------------------------------------------------------------------------ reference
def dataset_key(name: str) -> str:
    key = canonical(name)
    key = DATASET_ALIASES.get(key, key).replace("-", "")
    return DATASET_ALIASES.get(key, key)


def algorithm_key(name: str) -> str:
    key = canonical(name)
    return ALGORITHM_ALIASES.get(key, key)


def load_reference(path: Path) -> list[dict[str, str]]:
    """Rows of a published-numbers CSV (accuracy in percent; model, std, source optional)."""
    if not path.is_file():
        raise ConfigError(f"reference file not found: {path}")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(row for row in handle if not row.startswith("#")))
    missing = [c for c in REFERENCE_COLUMNS if rows and c not in rows[0]] or ([] if rows else ["(empty file)"])
    if missing:
        raise ConfigError(f"reference file {path} lacks column(s) {missing}; needs {', '.join(REFERENCE_COLUMNS)}")
    for row in rows:
        try:
            float(row["accuracy"])
        except ValueError:
            raise ConfigError(f"reference file {path}: accuracy {row['accuracy']!r} is not a number") from None
    return rows


def attach_reference(rows: list[Row], group: Group, reference: list[dict[str, str]]) -> None:
    """Fill ``published``/``source`` from the first reference row with the same dataset, partition and
    algorithm (and model, when the reference names one)."""
    for row in rows:
        for ref in reference:
            if dataset_key(ref["dataset"]) != dataset_key(group.dataset) or \
                    ref["partition"].strip() != group.partition or algorithm_key(ref["algorithm"]) != row.algorithm:
                continue
            if (ref.get("model") or "").strip() and canonical(ref["model"]) != row.model:
                continue
            row.published, row.source = float(ref["accuracy"]), (ref.get("source") or "").strip()
            break


# ------------------------------------------------------------------------------------------------ formatting
def fmt_pm(pair: tuple[float, float], seeds: int) -> str:
    """Mean ± std over seeds; one seed has no spread to show, so "± 0.00" would claim a precision it lacks."""
    return f"{pair[0]:.2f} ± {pair[1]:.2f}" if seeds > 1 else f"{pair[0]:.2f}"


def fmt_bytes(value: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def fmt_rounds(row: Row) -> str:
    if row.rounds_to_target is None:
        return f"— (0/{len(row.seeds)})"
    mean = f"{row.rounds_to_target:.1f}".rstrip("0").rstrip(".")
    return mean if row.reached == len(row.seeds) else f"{mean} ({row.reached}/{len(row.seeds)})"


def fmt_wall(seconds: float) -> str:
    from fedloom.bench.progress import format_seconds

    return f"{seconds:.1f}s" if seconds < 60 else format_seconds(seconds)


def table(rows: list[Row], target: float, with_reference: bool) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the Markdown, HTML and CSV outputs."""
    header = ["algorithm", "hyperparameters", "seeds", "best acc. (%)", "final acc. (%)", "client p10 (%)",
              "client std (pts)", f"gain in last {LATE_WINDOW} rounds (pts)", f"rounds to {100 * target:.1f}%",
              "total bytes", "wall time"]
    if with_reference:
        header += ["published (%)", "Δ best − published"]
    cells = []
    for row in rows:
        gain = "—" if row.late_gain is None else f"{row.late_gain:+.2f}"
        seeds = len(row.seeds)
        fair = ["—" if v is None else fmt_pm(v, seeds) for v in (row.client_p10, row.client_std)]
        line = [row.label + row.note, row.hyper or "—", str(seeds), fmt_pm(row.best, seeds), fmt_pm(row.final, seeds), *fair,
                gain, fmt_rounds(row), fmt_bytes(row.total_bytes), fmt_wall(row.wall_seconds)]
        if with_reference:
            line += ["—", "—"] if row.published is None else [f"{row.published:.2f}", f"{row.delta:+.2f}"]
        cells.append(line)
    return header, cells
