"""Per-round accuracy (and loss) of every run in a results folder, side by side, as a Markdown table: the
evidence for the directions docs/results/fmnist-fl.md checks (SCAFFOLD/FedDyn faster than FedAvg, FedNova vs
FedAvg under the same heterogeneous local work, FedProx vs FedAvg on Synthetic(1,1), ...). A run's label is its
algorithm plus its model when that is not the grid's usual one and the options of its own table that differ
from the defaults; new runs in the folder (VHL, FedImpro, ...) appear as new columns.

    python benchmarks/fl_directions.py benchmarks/results/fmnist-fl-budget [--loss] [--model cnn] [--per-table 8 --baseline fedavg]
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path


def label(config: dict, usual_model: str) -> str:
    from fedloom.algorithms import ALGORITHMS
    from fedloom.config import component_fields

    name = config["algorithm"]
    parts = [name]
    if config.get("model") != usual_model:
        parts.append(config["model"])
    parts += model_options(config)
    defaults = {f: getattr(ALGORITHMS.get(name)(), f) for f in component_fields(ALGORITHMS.get(name))}
    changed = {k: v for k, v in config.get(name, {}).items() if defaults.get(k) != v}
    parts += [f"{k}={v}" for k, v in sorted(changed.items())]
    return " ".join(parts)


def model_options(config: dict) -> list[str]:
    """``model.option=value`` for the run's model options that differ from the model's defaults (cnn.split=conv)."""
    from fedloom.config import component_fields
    from fedloom.models import MODELS

    model = config.get("model", "")
    if "," in model or model not in MODELS:
        return []
    defaults = {f: getattr(MODELS.get(model)(), f) for f in component_fields(MODELS.get(model))}
    return [f"{model}.{k}={v}" for k, v in sorted(config.get(model, {}).items()) if k in defaults and defaults[k] != v]


def columns_of(folder: Path, key: str, usual_model: str) -> dict[str, dict[int, float]]:
    """Label -> {round: value} for every run of ``folder`` with at least one metrics record."""
    columns = {}
    for run in sorted(folder.iterdir()):
        metrics = run / "metrics.jsonl"
        if not metrics.is_file():
            continue
        config = tomllib.loads((run / "config.toml").read_text())
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        if not rows:  # a run that has just started
            continue
        done = " (done)" if (run / "summary.json").is_file() else f" (to round {rows[-1]['round']})"
        columns[label(config, usual_model) + done] = {r["round"]: r[key] for r in rows if key in r}
    return columns


def table(folder: Path, key: str, usual_model: str, per_table: int = 0, baseline: str = "") -> str:
    """The Markdown table (rounds down, runs across); with ``per_table`` > 0, several tables of at most that
    many runs each, one after the other, so that a folder of thirty runs stays readable. The run labelled
    ``baseline`` (its bare algorithm name, no options) is the first column of every table."""
    columns = columns_of(folder, key, usual_model)
    anchor = [n for n in columns if baseline and n.split(" (")[0] == baseline]
    names = [n for n in columns if n not in anchor]
    size = per_table if per_table > 0 else max(1, len(names))
    return "\n".join(one_table({n: columns[n] for n in anchor + names[i:i + size]}, key)
                     for i in range(0, max(1, len(names)), size))


def one_table(columns: dict[str, dict[int, float]], key: str) -> str:
    rounds = sorted({r for values in columns.values() for r in values})
    head = "| round | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns) + "\n"
    scale = 100 if key == "accuracy" else 1
    body = "".join(f"| {r} | " + " | ".join(f"{v[r] * scale:.2f}" if r in v else "" for v in columns.values())
                   + " |\n" for r in rounds)
    return head + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--loss", action="store_true", help="the evaluation loss instead of accuracy (%)")
    parser.add_argument("--model", default="cnn", help="the grid's usual model (others are named in labels)")
    parser.add_argument("--per-table", type=int, default=0, help="at most this many runs per table (0: one table)")
    parser.add_argument("--baseline", default="", help="the run repeated as every table's first column (fedavg)")
    args = parser.parse_args()
    print(table(args.folder, "loss" if args.loss else "accuracy", args.model, args.per_table, args.baseline))


if __name__ == "__main__":
    main()
