"""The attack × defense matrix of a report (issue 19, trustworthy FL): main-task accuracy (MA) and attack success
rate (ASR) as two tables with attack rows and defense (aggregator) columns, mean ± std over seeds, rendered as
Markdown tables and as HTML heatmaps, plus per-round ASR curves (one panel per attack, one line per defense).
In the heatmaps MA is coloured by its difference from the no-attack, no-defense cell (so 62 and 82 differ at a
glance, which a 0–100 scale hid) and ASR on its absolute 0–100 scale.

The metrics are those of docs/trust-attacks.md (``accuracy`` and ``asr`` in metrics.jsonl); the matrix is that of
the Snowball paper's tables (Qin, Chen, Zhi, Yan, Deng, "Resisting Backdoor Attacks in Federated Learning via
Bidirectional Elections and Individual Perspective", AAAI 2024). A group gets a matrix when any of its runs has
an attack; a run without one (or with ``attack.fraction = 0``) is the "no attack" row.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from fedloom.bench.collect import Group, RunData, Variant, _flat
from fedloom.bench.leaderboard import diverged_text, fmt_pm

NO_ATTACK = "no attack"
#: flat identity keys that place a run in the matrix (the rest, where they differ, join the row label)
_PLACED = ("attack", "aggregator", "attack.fraction", "attack.sampling")


@dataclass
class TrustMatrix:
    """Per (row, column): one (MA, ASR) value per seed (ASR None when the run has no ``asr``), and the
    per-round ASR mean over seeds."""

    rows: list[str]
    columns: list[str]
    last_k: int
    values: dict[tuple[str, str], list[tuple[float, Optional[float]]]] = field(default_factory=dict)
    asr_curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: per cell, the round each diverged seed's run ended in (``--on-divergence record``)
    diverged: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def cell(self, row: str, column: str, metric: str) -> Optional[tuple[float, float, int]]:
        """(mean, std, seeds) in percent of ``ma`` or ``asr``; None where the cell has no value."""
        pairs = self.values.get((row, column), [])
        picked = [ma if metric == "ma" else asr for ma, asr in pairs]
        if not picked or any(v is None for v in picked):
            return None
        array = np.asarray(picked, dtype=float) * 100
        return float(array.mean()), float(array.std()), len(picked)


# ------------------------------------------------------------------------------------------------ placing
def _attacked(cfg: Any) -> bool:
    return bool(cfg.attack) and float(cfg.options.get("attack", {}).get("fraction", 1.0)) > 0


def row_label(variant: Variant, extra: list[str]) -> str:
    cfg = variant.config
    name = cfg.attack if _attacked(cfg) else NO_ATTACK
    return name + (f" ({', '.join(extra)})" if extra else "")


def column_label(variant: Variant, extra: list[str]) -> str:
    return variant.config.aggregator + (f" ({', '.join(extra)})" if extra else "")


def _own(key: str, variant: Variant) -> Optional[str]:
    """'column' for keys of the variant's aggregator table, 'attack' for its attack's, None otherwise."""
    namespace = key.split(".", 1)[0] if "." in key else None
    if namespace == variant.config.aggregator:
        return "column"
    if namespace is not None and namespace == variant.config.attack:
        return "attack"
    return None


def _differing(variants: list[Variant]) -> list[tuple[list[str], list[str]]]:
    """Per variant: (row extras, column extras), the settings that differ between variants. A component's own
    options are compared only among the variants that use that component (as collect.label_variants does)."""
    flats = [_flat(json.loads(v.key)) for v in variants]
    out = []
    for variant, flat in zip(variants, flats):
        row, column = [], []
        for key, value in sorted(flat.items()):
            if key in _PLACED or key == "seed":
                continue
            side = _own(key, variant)
            pool = [f for v, f in zip(variants, flats) if side is None or _own(key, v) == side]
            if any(f.get(key) != value for f in pool):
                (column if side == "column" else row).append(f"{key}={value}")
        attacked = [f for v, f in zip(variants, flats) if _attacked(v.config)]
        if _attacked(variant.config) and any(f.get("attack.fraction") != flat.get("attack.fraction")
                                             for f in attacked):
            row.append(f"fraction={flat.get('attack.fraction')}")
        out.append((row, column))
    return out


# ------------------------------------------------------------------------------------------------ values
def pick(run: RunData, last_k: int) -> tuple[float, Optional[float]]:
    """(MA, ASR) of one run at the evaluated round with the highest MA among its last ``last_k`` evaluated
    rounds (last_k = 1: the final round); both from the same round, so the pair describes one model. A run that
    diverged (``--on-divergence record``) ended with the model of its last record, which no later round could
    change: that record is its value whatever ``last_k``."""
    if "diverged" in run.summary:
        last = run.records[-1]
        return float(last["accuracy"]), None if last.get("asr") is None else float(last["asr"])
    evaluated = [r for r in run.records if "accuracy" in r and r.get("round", 0) > 0] or \
        [r for r in run.records if "accuracy" in r]
    window = evaluated[-last_k:]
    best = max(window, key=lambda r: r["accuracy"])  # max keeps the earliest of equal values
    asr = best.get("asr")
    return float(best["accuracy"]), None if asr is None else float(asr)


def asr_curve(variant: Variant) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Rounds that every seed evaluated with an ``asr``, and the mean ASR (percent) over seeds there."""
    per_seed = [{r["round"]: r["asr"] for r in run.records if "asr" in r} for run in variant.runs]
    if not all(per_seed):
        return None
    rounds = sorted(set.intersection(*(set(s) for s in per_seed)))
    return np.array(rounds), np.array([[s[r] for r in rounds] for s in per_seed]).mean(axis=0) * 100


def trust_matrix(group: Group, last_k: int = 1) -> Optional[TrustMatrix]:
    """The group's attack × defense matrix, or None when no run of the group has an attack."""
    if not any(v.config.attack for v in group.variants):
        return None
    labels = [(row_label(v, r), column_label(v, c)) for v, (r, c) in zip(group.variants, _differing(group.variants))]
    rows = sorted({r for r, _ in labels}, key=lambda r: (r != NO_ATTACK, r))
    columns = sorted({c for _, c in labels}, key=lambda c: (not c.startswith("mean"), c))
    matrix = TrustMatrix(rows, columns, last_k)
    for variant, key in zip(group.variants, labels):
        matrix.values.setdefault(key, []).extend(pick(run, last_k) for run in variant.runs)
        rounds = [run.summary["diverged"]["round"] for run in variant.runs if "diverged" in run.summary]
        if rounds:
            matrix.diverged.setdefault(key, []).extend(rounds)
        curve = asr_curve(variant)
        if curve is not None:
            matrix.asr_curves[key] = curve
    return matrix


# ------------------------------------------------------------------------------------------------ rendering
TITLES = {"ma": "Main-task accuracy (MA, %, higher is better)",
          "asr": "Attack success rate (ASR, %, lower is better)"}


def describe(matrix: TrustMatrix) -> str:
    when = "the final round" if matrix.last_k == 1 else \
        f"the round with the best MA among each run's last {matrix.last_k} evaluated rounds (ASR at that round)"
    return (f"Attack rows × defense columns, {when}; mean ± std (population) over seeds, the value alone for "
            "one seed; — = no value (untargeted attacks have no ASR; the no-attack row has one when it runs a "
            "backdoor's machinery at attack.fraction 0). Best of each row in bold."
            + (f" {DIVERGED_MARK} = the run diverged (a non-finite loss or model) under the attack and ended there "
               "(--on-divergence record); its value is the model it ended with, which no later round could "
               "change." if matrix.diverged else ""))


def _best(matrix: TrustMatrix, row: str, metric: str) -> Optional[str]:
    cells = {c: matrix.cell(row, c, metric) for c in matrix.columns}
    valued = {c: v[0] for c, v in cells.items() if v is not None}
    if len(valued) < 2:
        return None
    return (max if metric == "ma" else min)(valued, key=valued.get)


DIVERGED_MARK = "†"


def _text(matrix: TrustMatrix, row: str, column: str, metric: str) -> str:
    value = matrix.cell(row, column, metric)
    if value is None:
        return "—"
    rounds = matrix.diverged.get((row, column))
    return fmt_pm(value[:2], value[2]) + (f" {DIVERGED_MARK}" if rounds else "")


def markdown_tables(matrix: TrustMatrix) -> list[str]:
    lines = [describe(matrix), ""]
    for metric in ("ma", "asr"):
        lines += [f"**{TITLES[metric]}**", "", "| attack \\ defense | " + " | ".join(matrix.columns) + " |",
                  "|---|" + "---:|" * len(matrix.columns)]
        for row in matrix.rows:
            best = _best(matrix, row, metric)
            texts = [_text(matrix, row, c, metric) for c in matrix.columns]
            texts = [f"**{t}**" if c == best else t for t, c in zip(texts, matrix.columns)]
            lines.append(f"| {row} | " + " | ".join(texts) + " |")
        lines.append("")
    return lines


#: MA colours saturate at this many points from the reference: a defense that costs 20 points is as red as one
#: that costs 40, while 2 points (seed noise at one seed) stays near white and 20 is unmistakable
MA_SPAN = 20.0
#: hues: red for the bad side of either metric (MA lost, ASR high), blue for MA above the reference
BAD_HUE, GOOD_HUE = 4, 212


def _reference_cell(matrix: TrustMatrix) -> Optional[tuple[str, str]]:
    """The no-attack row's first no-defense (``mean``) cell that ran, or None."""
    plain = [c for c in matrix.columns if c == "mean" or c.startswith("mean (")]
    return next(((NO_ATTACK, c) for c in plain if matrix.cell(NO_ATTACK, c, "ma") is not None), None)


def ma_reference(matrix: TrustMatrix) -> Optional[tuple[str, float]]:
    """(description, MA %) the MA colours are measured from: the no-attack row's no-defense (``mean``) cell of
    the same grid when it ran, else the best MA cell of the matrix (then every cell is at or below 0)."""
    cell = _reference_cell(matrix)
    if cell is not None:
        return f"the no-attack, no-defense cell ({cell[0]} × {cell[1]})", matrix.cell(*cell, "ma")[0]
    valued = [v[0] for v in (matrix.cell(r, c, "ma") for r in matrix.rows for c in matrix.columns) if v]
    return ("the best MA cell of this matrix (no no-attack × mean cell ran)", max(valued)) if valued else None


def heat(value: float, metric: str, reference: Optional[float] = None) -> str:
    """Background colour of a cell. ASR on its absolute 0–100 scale, white at 0 (good) to saturated red at 100.
    MA relative to ``reference`` (diverging, white at 0): red as it falls below, blue as it rises above,
    saturated at ±MA_SPAN points, so 62 against 82 (with a reference near 84) is deep red against near white
    where a 0–100 scale made both mid-green."""
    if metric == "asr":
        share, hue = min(max(value / 100.0, 0.0), 1.0), BAD_HUE
    else:
        delta = value - (reference if reference is not None else value)
        share, hue = min(abs(delta) / MA_SPAN, 1.0), (BAD_HUE if delta < 0 else GOOD_HUE)
    return f"hsl({hue}, 70%, {round(97 - 45 * share)}%)"


def _style(value: float, metric: str, reference: Optional[float]) -> str:
    """Background from ``heat``, and white text on the darkest third so saturated cells stay readable."""
    colour = heat(value, metric, reference)
    dark = int(colour.rsplit(",", 1)[1].strip(" %)")) < 67
    return f"background:{colour}" + (";color:#fff" if dark else "")


def scale_note(matrix: TrustMatrix, metric: str) -> str:
    """The colour scale in words, for the caption under each heatmap."""
    if metric == "asr":
        return "Colour: ASR on its absolute 0–100% scale, white at 0% (the backdoor fails) to red at 100%."
    reference = ma_reference(matrix)
    if reference is None:
        return ""
    what, value = reference
    return (f"Colour: MA minus {what}, {value:.2f}% (small number under each value, in points); red below it, "
            f"blue above it, white at 0, full colour at ±{MA_SPAN:.0f} points or more.")


def _legend(matrix: TrustMatrix, metric: str) -> str:
    """A row of swatches with their values, so a colour can be read back as a number."""
    reference = ma_reference(matrix)
    if metric == "ma" and reference is None:
        return ""
    stops = [(v, f"{v:g}") for v in (0, 25, 50, 75, 100)] if metric == "asr" else \
        [(reference[1] + d, f"{d:+g}" if d else "0") for d in (-MA_SPAN, -10, -5, -2, 0, 2, 5, 10)]
    level = reference[1] if reference else None
    swatches = "".join(f'<span style="{_style(v, metric, level)};display:inline-block;min-width:3.2em;'
                       f'text-align:center;border:1px solid #d8dee6">{html.escape(t)}</span>' for v, t in stops)
    unit = "ASR %" if metric == "asr" else "MA − reference, points"
    return f'<p class="settings">{html.escape(scale_note(matrix, metric))} {swatches} ({unit})</p>'


def _cell_html(matrix: TrustMatrix, row: str, column: str, metric: str, best: Optional[str]) -> str:
    value = matrix.cell(row, column, metric)
    text = html.escape(_text(matrix, row, column, metric))
    if value is None:
        return f"<td>{text}</td>"
    reference = ma_reference(matrix) if metric == "ma" else None
    level = reference[1] if reference else None
    if level is not None:  # the reference cell itself says so rather than "+0.0"
        delta = "reference" if (row, column) == _reference_cell(matrix) else f"{value[0] - level:+.1f}"
        text += f"<br><small>{delta}</small>"
    diverged = diverged_text(matrix.diverged.get((row, column), []), len(matrix.values[(row, column)]))
    if diverged:
        text += f"<br><small>{diverged}</small>"
    bold = ' class="best"' if column == best else ""
    return f'<td style="{_style(value[0], metric, level)}"{bold}>{text}</td>'


def html_tables(matrix: TrustMatrix) -> str:
    parts = [f'<p class="settings">{html.escape(describe(matrix))}</p>']
    for metric in ("ma", "asr"):
        head = "<th>attack \\ defense</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in matrix.columns)
        body = []
        for row in matrix.rows:
            best = _best(matrix, row, metric)
            cells = "".join(_cell_html(matrix, row, column, metric, best) for column in matrix.columns)
            body.append(f"<tr><td>{html.escape(row)}</td>{cells}</tr>")
        parts.append(f"<h3>{html.escape(TITLES[metric])}</h3><div class=\"scroll\"><table class=\"heat\"><thead>"
                     f"<tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{_legend(matrix, metric)}")
    return "".join(parts)


def asr_figure(matrix: TrustMatrix, title: str) -> Optional[dict[str, bytes]]:
    """Per-round ASR: one panel per attack row that has ASR, one line per defense (mean over seeds)."""
    from matplotlib.ticker import MaxNLocator

    from fedloom.bench.plots import DOUBLE, SINGLE, line_style, marker_rounds, plt, render

    rows = [r for r in matrix.rows if any((r, c) in matrix.asr_curves for c in matrix.columns)]
    if not rows:
        return None

    def draw() -> "plt.Figure":
        cols = min(len(rows), 2)
        lines = -(-len(rows) // cols)
        fig, axes = plt.subplots(lines, cols, figsize=(DOUBLE if cols > 1 else SINGLE * 1.4,
                                                       2.2 * lines + 0.16 * -(-len(matrix.columns) // 3) + 0.4),
                                 squeeze=False)
        for ax, row in zip(axes.flat, rows):
            for index, column in enumerate(matrix.columns):
                if (row, column) not in matrix.asr_curves:
                    continue
                rounds, mean = matrix.asr_curves[(row, column)]
                ax.plot(rounds, mean, label=column, markevery=marker_rounds(index, len(matrix.columns),
                                                                             len(rounds)), **line_style(index))
            ax.set_title(f"{title}: {row}")
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("ASR (%)")
            ax.set_ylim(-3, 103)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(rows):]:
            ax.set_visible(False)
        handles, labels = {}, []
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                if label not in handles:
                    handles[label] = handle
                    labels.append(label)
        fig.legend([handles[label] for label in labels], labels, loc="lower center", ncol=3, frameon=False)
        fig.tight_layout(rect=(0, min(0.5, (0.1 + 0.16 * -(-len(labels) // 3)) / fig.get_size_inches()[1]),
                               1, 1))
        return fig

    return render(draw)
