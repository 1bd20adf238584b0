"""Finding completed run folders and grouping them for the report.

Groups are (dataset, partition setting); inside a group, runs with the same config except the seed form one
row ("variant"), labelled by the algorithm plus whatever else differs between the group's variants.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fedloom.checkpoint import config_identity
from fedloom.config import RunConfig, build_config, load_toml
from fedloom.errors import FedloomError
from fedloom.tracking import COMPLETE_MARKER


@dataclass
class RunData:
    """One completed run folder, read back."""

    folder: Path
    config: RunConfig
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    client_accuracy: list[float]

    @property
    def variant_key(self) -> str:
        identity = config_identity(self.config)
        identity.pop("seed")
        return json.dumps(identity, sort_keys=True, default=str)


@dataclass
class Variant:
    """Runs identical up to the seed: one leaderboard row."""

    key: str
    runs: list[RunData]
    label: str = ""
    hyper: str = ""  # the algorithm's own options, "mu=0.01" (what the paper's method table would list)

    @property
    def algorithm(self) -> str:
        return self.runs[0].config.algorithm

    @property
    def config(self) -> RunConfig:
        return self.runs[0].config


@dataclass
class Group:
    dataset: str
    partition: str
    variants: list[Variant] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.dataset} · {self.partition}"


def partition_key(cfg: RunConfig) -> str:
    """``dirichlet-0.1``, ``pathological-2`` (``-balanced``), ``iid``, ``natural``: also the reference CSV's
    partition column."""
    if cfg.partition == "dirichlet":
        return f"dirichlet-{cfg.alpha:g}"
    if cfg.partition == "pathological":
        return f"pathological-{cfg.classes_per_client}" + ("-balanced" if cfg.balanced else "")
    return str(cfg.partition)


def _client_accuracy(folder: Path) -> list[float]:
    path = folder / "clients.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    # the 4th column is the task's primary metric (accuracy for classification)
    return [float(row[3]) for row in rows[1:] if len(row) > 3]


def read_run(folder: Path) -> Optional[RunData]:
    """A completed run folder, or None (with a warning) when it cannot be read."""
    try:
        cfg = build_config(load_toml(folder / "config.toml"))
        summary = json.loads((folder / COMPLETE_MARKER).read_text())
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
    except (FedloomError, OSError, json.JSONDecodeError) as exc:
        print(f"fedloom report: skipping {folder}: {exc}", file=sys.stderr)
        return None
    return RunData(folder, cfg, summary, records, _client_accuracy(folder))


def find_runs(root: Path) -> tuple[list[RunData], int]:
    """Completed runs under ``root`` (recursively) and the number of incomplete run folders seen."""
    complete = sorted(p.parent for p in root.rglob(COMPLETE_MARKER))
    incomplete = sum(1 for p in root.rglob("config.toml") if not (p.parent / COMPLETE_MARKER).is_file())
    runs = [r for r in (read_run(folder) for folder in complete) if r is not None]
    return runs, incomplete


def _dedupe_seeds(runs: list[RunData]) -> list[RunData]:
    """One run per seed: if a config was run twice (e.g. in two grid folders) the newest result counts."""
    newest: dict[int, RunData] = {}
    for run in sorted(runs, key=lambda r: (r.folder / COMPLETE_MARKER).stat().st_mtime):
        newest[run.config.seed] = run
    return [newest[seed] for seed in sorted(newest)]


def _flat(identity: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in identity.items() if k != "options"}
    for namespace, opts in identity.get("options", {}).items():
        flat.update({f"{namespace}.{k}": v for k, v in opts.items()})
    return flat


def label_variants(variants: list[Variant]) -> None:
    """Algorithm name plus the settings that differ between the group's variants (``fedprox (fedprox.mu=0.1)``).
    An algorithm's own options are compared only among variants of that algorithm."""
    flats = [_flat(json.loads(v.key)) for v in variants]
    algorithms = {v.algorithm for v in variants}
    for variant, flat in zip(variants, flats):
        same_algo = [f for v, f in zip(variants, flats) if v.algorithm == variant.algorithm]
        differing = []
        for key, value in flat.items():
            namespace = key.split(".", 1)[0] if "." in key else None
            pool = same_algo if namespace in algorithms else flats
            if key != "algorithm" and any(f.get(key) != value for f in pool):
                differing.append(f"{key}={value}")
        variant.label = variant.algorithm + (f" ({', '.join(differing)})" if differing else "")
        own = json.loads(variant.key).get("options", {}).get(variant.algorithm, {})
        variant.hyper = ", ".join(f"{k}={_short(v)}" for k, v in sorted(own.items()))


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


#: numeric hyperparameters added to a legend entry at most, and the longest entry (the table lists them all)
LEGEND_HYPER = 3
LEGEND_CHARS = 48  # two legend columns of 7 pt text fit a 7 in figure


def _numeric(item: str) -> bool:
    value = item.split("=", 1)[-1]
    try:
        float(value)
    except ValueError:
        return False
    return value not in ("True", "False")


def legend_label(variant: Variant) -> str:
    """The variant's label plus its algorithm's numeric options not already in it (the first LEGEND_HYPER), so
    that FedProx's mu shows in a legend even when no other FedProx run differs from it; switches and modes
    (pfllib_compat=False) stay in the table. Cut to LEGEND_CHARS characters."""
    shown = [h for h in variant.hyper.split(", ") if h and _numeric(h)
             and f"{variant.algorithm}.{h.split('=')[0]}=" not in variant.label]
    extra = ", ".join(shown[:LEGEND_HYPER]) + (", …" if len(shown) > LEGEND_HYPER else "")
    text = variant.label + (f" [{extra}]" if extra else "")
    return text if len(text) <= LEGEND_CHARS else text[:LEGEND_CHARS - 1] + "…"


def group_runs(runs: list[RunData]) -> list[Group]:
    """Runs → groups by (dataset, partition) → variants (same config up to the seed)."""
    by_group: dict[tuple[str, str], dict[str, list[RunData]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_group[(run.config.dataset, partition_key(run.config))][run.variant_key].append(run)
    groups = []
    for (dataset, partition), variants in sorted(by_group.items()):
        group = Group(dataset, partition, [Variant(k, _dedupe_seeds(v)) for k, v in variants.items()])
        label_variants(group.variants)
        groups.append(group)
    return groups
