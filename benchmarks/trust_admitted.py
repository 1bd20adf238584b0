"""Admitted-client rates and per-round cost of the cells of a trust grid (issue 19, docs/results/trust.md).

For every completed run folder under RUNS (with ``--in-progress`` also the runs still going, marked so): the
attack, the defense, MA and ASR at the last evaluated round, the mean over the evaluated rounds (the rows of
metrics.jsonl: every round, or every k-th with --eval-every k) of the uploads a selecting defense admitted and
of its admitted TPR (benign admitted / benign in the cohort) and FPR (malicious admitted / malicious in the
cohort), the same over Snowball's warm-up (bottom-up only) rounds and over its top-down rounds, and the mean
wall seconds per round (training + aggregation, and evaluation) from timings.jsonl. The defenses are those of
docs/trust-defenses.md; Snowball is Qin, Chen, Zhi, Yan, Deng, AAAI 2024.

    python benchmarks/trust_admitted.py benchmarks/results/trust-fmnist
    python benchmarks/trust_admitted.py benchmarks/results/trust-fmnist-cnn --in-progress
    python benchmarks/trust_admitted.py benchmarks/results/trust-matrix-snowball-scale --over-seeds

With ``--over-seeds`` the runs of one cell (same attack, defense and defense options) are pooled over their
seeds: mean ± std (population) of each column, and the number of seeds. A defense whose options differ between
runs is named with the options that differ (``snowball-minus (ct=4, share=0.25)``), the cohort size (clients
sampled per round) and the local epochs among them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tomllib
from collections import defaultdict
from pathlib import Path

COLUMNS = ("ma", "asr", "admitted", "tpr", "fpr", "wu_tpr", "wu_fpr", "td_tpr", "td_fpr", "train_s", "eval_s")


def mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def fmt(value: float, digits: int = 2) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def cell(folder: Path) -> dict:
    config = tomllib.loads((folder / "config.toml").read_text())
    threat = config.get("attack", {})
    threat = {"name": threat, "fraction": 1.0} if isinstance(threat, str) else threat  # older config.toml files
    attacked = threat.get("fraction", 0) > 0
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
    rows = [r for r in rows if r["round"] > 0]
    evaluated = [r for r in rows if "accuracy" in r]
    last = evaluated[-1] if evaluated else {}
    topdown = [r for r in rows if r.get("server_snowball_topdown") == 1.0]
    warmup = [r for r in rows if r.get("server_snowball_topdown") == 0.0]  # Snowball's bottom-up-only rounds
    times = [json.loads(line) for line in (folder / "timings.jsonl").read_text().splitlines() if line]

    def rate(key: str, subset: list[dict]) -> float:
        return mean([float(r[key]) for r in subset if key in r])

    defense = config.get("aggregator", "mean")
    return {"attack": threat.get("name", "none") if attacked else "no attack", "defense": defense,
            "options": {"cohort": round(config.get("clients", 0) * config.get("join_ratio", 1.0)),
                        "local_epochs": config.get("local_epochs"), **config.get(defense, {})},
            "rounds": max((r["round"] for r in rows), default=0),
            "complete": (folder / "summary.json").is_file(),
            "ma": 100 * last.get("accuracy", float("nan")), "asr": 100 * last.get("asr", float("nan")),
            "admitted": rate("server_admitted", rows), "tpr": rate("server_admitted_tpr", rows),
            "fpr": rate("server_admitted_fpr", rows), "td_rounds": len(topdown),
            "wu_tpr": rate("server_admitted_tpr", warmup), "wu_fpr": rate("server_admitted_fpr", warmup),
            "td_tpr": rate("server_admitted_tpr", topdown), "td_fpr": rate("server_admitted_fpr", topdown),
            "train_s": mean([t["train_seconds"] for t in times]), "eval_s": mean([t["eval_seconds"] for t in times])}


def name_options(cells: list[dict]) -> None:
    """Append to each defense's name the options whose values differ between the runs of that defense."""
    seen: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for c in cells:
        for key, value in c["options"].items():
            seen[c["defense"]][key].add(repr(value))
    for c in cells:
        varying = [k for k, values in seen[c["defense"]].items() if len(values) > 1]
        if varying:
            c["defense"] += " (" + ", ".join(f"{k}={c['options'][k]}" for k in varying) + ")"


def pool_seeds(cells: list[dict]) -> list[dict]:
    """One row per (attack, defense): each column as 'mean ± std' over the seeds, and the seed count."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for c in cells:
        groups[(c["attack"], c["defense"])].append(c)
    pooled = []
    for (attack, defense), runs in groups.items():
        row = {"attack": attack, "defense": f"{defense} [{len(runs)} seeds]", "rounds": runs[0]["rounds"],
               "complete": all(r["complete"] for r in runs), "td_rounds": runs[0]["td_rounds"]}
        for key in COLUMNS:
            values = [r[key] for r in runs if not math.isnan(r[key])]
            row[key] = (statistics.fmean(values), statistics.pstdev(values)) if values else (math.nan, 0.0)
        pooled.append(row)
    return pooled


def show(value, digits: int = 2) -> str:
    if isinstance(value, tuple):
        return fmt(value[0], digits) if math.isnan(value[0]) else f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"
    return fmt(value, digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--in-progress", action="store_true", help="also the runs without summary.json yet")
    parser.add_argument("--over-seeds", action="store_true", help="pool each cell's runs over their seeds")
    args = parser.parse_args()
    marker = "*/metrics.jsonl" if args.in_progress else "*/summary.json"
    cells = [cell(p.parent) for p in sorted(args.runs.glob(marker))]
    name_options(cells)
    if args.over_seeds:
        cells = pool_seeds(cells)
    cells.sort(key=lambda c: (c["attack"] != "no attack", c["attack"], c["defense"]))
    print("| attack | defense | rounds | MA (%) | ASR (%) | admitted / round | TPR | FPR | TPR (warm-up) | FPR (warm-up) "
          "| top-down rounds evaluated | TPR (top-down) | FPR (top-down) | s / round (train + aggregate) "
          "| s / round (eval) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in cells:
        rounds = c["rounds"] if c["complete"] else f"{c['rounds']} so far (running)"
        print(f"| {c['attack']} | {c['defense']} | {rounds} | {show(c['ma'])} | {show(c['asr'])} "
              f"| {show(c['admitted'], 1)} | {show(c['tpr'])} "
              f"| {show(c['fpr'])} | {show(c['wu_tpr'])} | {show(c['wu_fpr'])} | {c['td_rounds'] or '—'} "
              f"| {show(c['td_tpr'])} | {show(c['td_fpr'])} "
              f"| {show(c['train_s'], 1)} | {show(c['eval_s'], 1)} |")


if __name__ == "__main__":
    main()
