"""``fedloom report RUNS_DIR --out REPORT_DIR``: leaderboard per (dataset, partition) as report.md, report.tex
(booktabs tables for a paper), a self-contained report.html (every figure embedded as base64 PNG, CSS inline, no
external asset) and leaderboard.csv; every figure also as PNG, PDF and SVG in plots/, sized for a two-column
paper. Only completed run folders (with summary.json) are read; run folders are never modified.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fedloom.bench.collect import Group, find_runs, group_runs, legend_label
from fedloom.bench.html import render_html
from fedloom.bench.leaderboard import Row, attach_reference, group_target, leaderboard, load_reference, table
from fedloom.bench.plots import FORMATS, client_distributions, cost_curves, learning_curves, partition_heatmap
from fedloom.bench.report_latex import latex_document
from fedloom.bench.report_trust import TrustMatrix, asr_figure, markdown_tables, trust_matrix
from fedloom.bench.splice import read_marked, splice, table_lines, tables_block
from fedloom.errors import ConfigError

SETTING_FIELDS = ("model", "model_family", "clients", "rounds", "join_ratio", "local_epochs", "batch_size", "lr",
                  "lr_decay", "train_ratio")
#: settings left out of the line at their default value (so pages made before they existed read the same)
SETTING_DEFAULTS = {"lr_decay": 1.0}


@dataclass
class GroupReport:
    """Everything rendered for one (dataset, partition) group."""

    group: Group
    target: float
    rows: list[Row]
    header: list[str]
    cells: list[list[str]]
    settings: str
    figures: dict[str, dict[str, bytes]] = field(default_factory=dict)  # file stem -> {"png"|"pdf"|"svg": bytes}
    trust: Optional[TrustMatrix] = None  # the attack × defense matrix, when the group's runs have attacks

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.group.dataset}-{self.group.partition}".lower()).strip("-")


def common_settings(group: Group) -> str:
    """The settings every run of the group shares (those that vary appear in the row labels instead)."""
    configs = [run.config for variant in group.variants for run in variant.runs]
    parts = []
    for name in SETTING_FIELDS:
        values = {getattr(c, name, None) for c in configs}
        value = values.pop() if len(values) == 1 else None
        # None: differs between runs, or unset (a family run has no --model, a single-model run no family)
        if value is not None and value != SETTING_DEFAULTS.get(name):
            parts.append(f"{name.replace('_', ' ')} {value}")
    return ", ".join(parts)


def partition_figures(group: Group) -> dict[str, dict[str, bytes]]:
    """A label-count heatmap of each distinct partition in the group (normally one: it does not depend on the
    training seed), drawn from the run folder's partition.json."""
    figures: dict[str, dict[str, bytes]] = {}
    for variant in group.variants:
        for run in variant.runs:
            digest = str(run.summary.get("partition_hash", ""))[:8] or run.folder.name
            if f"partition-{digest}" in figures or len(figures) >= 3:
                continue
            drawn = partition_heatmap(run)
            if drawn is not None:
                figures[f"partition-{digest}"] = drawn
    return figures


def build_group(group: Group, target: Optional[float], reference: list[dict[str, str]],
                trust_last: int = 1) -> GroupReport:
    goal = group_target(group, target)
    rows = leaderboard(group, goal)
    if reference:
        attach_reference(rows, group, reference)
    header, cells = table(rows, goal, bool(reference))
    order = [r.label for r in rows]
    legend = {v.label: legend_label(v) for v in group.variants}
    figures = {"curves": learning_curves(group, order, legend)}
    cost = cost_curves(group, order, legend)
    if cost is not None:
        figures["cost"] = cost
    figures["clients"] = client_distributions(group, order, legend)
    trust = trust_matrix(group, trust_last)
    asr = asr_figure(trust, group.title) if trust is not None else None
    if asr is not None:
        figures["asr"] = asr
    figures.update(partition_figures(group))
    return GroupReport(group, goal, rows, header, cells, common_settings(group), figures, trust)


# ------------------------------------------------------------------------------------------------ writing
def markdown(reports: list[GroupReport], title: str, meta: list[str]) -> str:
    lines = [f"# {title}", "", *[f"- {m}" for m in meta], ""]
    for rep in reports:
        lines += [f"## {rep.group.title}", "", f"Settings: {rep.settings}.", "", *table_lines(rep.header, rep.cells)]
        lines.append("")
        if rep.trust is not None:
            lines += ["### Attacks × defenses", "", *markdown_tables(rep.trust)]
        for stem in rep.figures:
            name = f"plots/{rep.slug}-{stem}"
            lines += [f"![{stem}]({name}.png)", f"([PDF]({name}.pdf), [SVG]({name}.svg))", ""]
        lines.append("")
    return "\n".join(lines)


def write_csv(path: Path, reports: list[GroupReport]) -> None:
    header = ["dataset", "partition", "label", "algorithm", "hyperparameters", "model", "seeds", "best_mean",
              "best_std", "final_mean", "final_std", "client_p10_mean", "client_p10_std", "client_std_mean",
              "client_std_std", "late_gain", "target", "rounds_to_target", "seeds_reaching_target", "total_bytes",
              "wall_seconds", "published", "delta"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for rep in reports:
            for r in rep.rows:
                fair = [f"{v:.4f}" if pair else "" for pair in (r.client_p10, r.client_std)
                        for v in (pair or (0.0, 0.0))]
                writer.writerow([rep.group.dataset, rep.group.partition, r.label + r.note, r.algorithm, r.hyper, r.model,
                                 " ".join(map(str, r.seeds)), f"{r.best[0]:.4f}", f"{r.best[1]:.4f}",
                                 f"{r.final[0]:.4f}", f"{r.final[1]:.4f}", *fair,
                                 "" if r.late_gain is None else f"{r.late_gain:.4f}", f"{rep.target:.6f}",
                                 "" if r.rounds_to_target is None else f"{r.rounds_to_target:.2f}", r.reached,
                                 f"{r.total_bytes:.0f}", f"{r.wall_seconds:.3f}",
                                 "" if r.published is None else r.published,
                                 "" if r.delta is None else f"{r.delta:.4f}"])


def write_report(root: Path, out: Path, reference: Optional[Path] = None, target: Optional[float] = None,
                 title: Optional[str] = None, into: Optional[Path] = None, trust_last: int = 1) -> str:
    """Write report.md, report.html, leaderboard.csv and plots/ into ``out`` (and the tables into the marked
    block of ``into``); return a one-line summary."""
    doc = read_marked(into) if into is not None else None
    if not root.is_dir():
        raise ConfigError(f"runs folder not found: {root}")
    runs, incomplete = find_runs(root)
    if not runs:
        raise ConfigError(f"no completed run folders (with summary.json) under {root}")
    ref_rows = load_reference(reference) if reference else []
    reports = [build_group(g, target, ref_rows, trust_last) for g in group_runs(runs)]
    title = title or f"fedloom report: {root}"
    meta = [f"generated {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from {len(runs)} completed runs under "
            f"`{root}`" + (f" ({incomplete} incomplete run folders not included)" if incomplete else ""),
            "accuracy: Σcorrect/Σsamples over every client's own test split, in %; mean ± std (population) "
            "over seeds (the value alone for one seed); "
            "best = the best evaluated round of each run, final = the last round"]
    if reference:
        meta.append(f"published numbers: `{reference}`; Δ = our mean best − published (points)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    for rep in reports:
        for stem, files in rep.figures.items():
            for fmt in FORMATS:
                (out / "plots" / f"{rep.slug}-{stem}.{fmt}").write_bytes(files[fmt])
    (out / "report.md").write_text(markdown(reports, title, meta))
    (out / "report.tex").write_text(latex_document(reports, title))
    (out / "report.html").write_text(render_html(reports, title, meta))
    write_csv(out / "leaderboard.csv", reports)
    if into is not None and doc is not None:
        one_dataset = len({r.group.dataset for r in reports}) == 1
        headings = [r.group.partition if one_dataset else r.group.title for r in reports]
        block = tables_block([(h, r.header, r.cells) for h, r in zip(headings, reports)])
        block += "".join("\n".join([f"### {h}: attacks × defenses", "", *markdown_tables(r.trust)])
                         for h, r in zip(headings, reports) if r.trust is not None)
        into.write_text(splice(doc, block, where=str(into)))
    return (f"report: {len(runs)} runs in {len(reports)} group(s) -> {out / 'report.html'}, "
            f"{out / 'report.md'}, {out / 'report.tex'}, {out / 'leaderboard.csv'}, figures in {out / 'plots'} "
            "(PNG, PDF, SVG)")
