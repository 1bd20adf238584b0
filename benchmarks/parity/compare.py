"""Compare fedloom's and PFLlib's curves (Zhang et al., "PFLlib", JMLR 2025) method by method.

Criterion, per evaluated round r: d_r = mean over seeds of fedloom's accuracy − the same mean for PFLlib;
spread_r = the larger of the two implementations' seed ranges (max − min over seeds) at round r. The round is
within the criterion when |d_r| ≤ spread_r: the implementations differ by no more than either differs from
itself under another seed. Round r is PFLlib's evaluation r (the top of iteration r, after r aggregations)
and fedloom's round r.

The criterion flags rounds by chance too: with n seeds a side drawn from one normal distribution (the same
implementation twice), |d_r| exceeds the larger range with probability ``chance_rate(n, n)`` (4.9% at 3 seeds a
side, 0.05% at 6; Monte Carlo). The report gives the number of flagged rounds expected by chance beside the
number observed, over the methods it compares.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

IMPLS = ("fedloom", "pfllib")


def load_curves(folder: Path, method: str) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """{impl: {seed: curve rows}} for every curve file of the method."""
    out: dict[str, dict[int, list]] = {impl: {} for impl in IMPLS}
    for impl in IMPLS:
        for path in sorted(folder.glob(f"{impl}-{method}-s*.json")):
            data = json.loads(path.read_text())
            out[impl][int(data["seed"])] = data["curve"]
    return out


def matrix(curves: dict[int, list], key: str, rounds: int) -> np.ndarray:
    """[seeds, rounds+1] of a metric, NaN where a seed has not reached the round."""
    m = np.full((len(curves), rounds + 1), np.nan)
    for i, rows in enumerate(curves.values()):
        for row in rows:
            if row["round"] <= rounds and row.get(key) is not None:
                m[i, row["round"]] = row[key]
    return m


def round_stats(curves: dict[str, dict[int, list]], rounds: int, key: str = "accuracy") -> list[dict[str, Any]]:
    """Per round: both means, spreads, d and the verdict (only rounds every seed of both sides reached)."""
    rows = []
    mats = {impl: matrix(curves[impl], key, rounds) for impl in IMPLS}
    for r in range(rounds + 1):
        cols = {impl: mats[impl][:, r] for impl in IMPLS}
        if any(c.size == 0 or np.isnan(c).any() for c in cols.values()):
            continue
        mean = {impl: float(c.mean()) for impl, c in cols.items()}
        rng = {impl: float(c.max() - c.min()) for impl, c in cols.items()}
        diff, spread = mean["fedloom"] - mean["pfllib"], max(rng.values())
        rows.append({"round": r, "fedloom": mean["fedloom"], "pfllib": mean["pfllib"], "diff": diff,
                     "range_fedloom": rng["fedloom"], "range_pfllib": rng["pfllib"], "spread": spread,
                     "within": abs(diff) <= spread, "seeds": min(len(c) for c in cols.values())})
    return rows


def client_gap(curves: dict[str, dict[int, list]], round_: int) -> float | None:
    """Mean over clients of |fedloom − PFLlib| per-client accuracy (each averaged over seeds) at a round."""
    means = {}
    for impl in IMPLS:
        per_seed = [row["client_accuracy"] for rows in curves[impl].values() for row in rows
                    if row["round"] == round_ and row.get("client_accuracy")]
        if not per_seed:
            return None
        means[impl] = np.mean(np.array(per_seed, dtype=float), axis=0)
    return float(np.mean(np.abs(means["fedloom"] - means["pfllib"])))


def figure(method: str, curves: dict[str, dict[int, list]], rounds: int, path: Path) -> None:
    """Accuracy, train loss (thin: seeds; thick: mean) and per-client accuracy at the last common round."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    colors = {"fedloom": "tab:blue", "pfllib": "tab:orange"}
    for ax, key, label in ((axes[0], "accuracy", "test accuracy"), (axes[1], "train_loss", "train loss")):
        for impl in IMPLS:
            m = matrix(curves[impl], key, rounds)
            for row in m:
                ax.plot(range(rounds + 1), row, color=colors[impl], alpha=0.3, lw=0.8)
            if len(m):
                reached = ~np.isnan(m).any(axis=0)  # the mean only where every seed got
                ax.plot(np.arange(rounds + 1)[reached], m[:, reached].mean(axis=0), color=colors[impl], lw=2,
                        label=impl)
        ax.set_xlabel("round (PFLlib: evaluation index)"), ax.set_ylabel(label), ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].set_yscale("log")
    stats = round_stats(curves, rounds)
    last = stats[-1]["round"] if stats else None
    if last is not None:
        per = {impl: np.mean([row["client_accuracy"] for rows in curves[impl].values() for row in rows
                              if row["round"] == last], axis=0) for impl in IMPLS}
        axes[2].scatter(per["pfllib"], per["fedloom"], s=14)
        axes[2].plot([0, 1], [0, 1], color="grey", lw=0.8)
        axes[2].set_xlabel(f"PFLlib per-client accuracy (round {last})"), axes[2].set_ylabel("fedloom")
    fig.suptitle(f"{method}: fedloom vs PFLlib, same clients (thin: seeds, thick: mean)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(folder: Path, methods: list[str], rounds: int, out: Path) -> list[dict[str, Any]]:
    """Write rounds.csv (every round of every method), parity.md (rounds 1, 5, 10, last) and the figures."""
    out.mkdir(parents=True, exist_ok=True)
    summary, all_rows = [], []
    for method in methods:
        curves = load_curves(folder, method)
        if not curves["fedloom"] or not curves["pfllib"]:
            continue
        stats = round_stats(curves, rounds)
        if not stats:
            continue
        all_rows += [{"method": method, **s} for s in stats]
        figure(method, curves, rounds, out / f"{method}.png")
        by_round = {s["round"]: s for s in stats}
        last = stats[-1]["round"]
        summary.append({"method": method, "seeds": stats[-1]["seeds"], "last": last, "by_round": by_round,
                        "outside": [s["round"] for s in stats if s["round"] > 0 and not s["within"]],
                        "client_gap": client_gap(curves, last)})
    if all_rows:
        with open(out / "rounds.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(all_rows[0]))
            w.writeheader(), w.writerows(all_rows)
    (out / "parity.md").write_text(markdown(summary))
    return summary


def chance_rate(n_a: int, n_b: int, trials: int = 400_000) -> float:
    """P(|mean(a) − mean(b)| > max(range(a), range(b))) for n_a and n_b draws of one normal distribution: how
    often the criterion flags a round when the two implementations do not differ (seeded Monte Carlo)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((trials, n_a)), rng.standard_normal((trials, n_b))
    diff = np.abs(a.mean(1) - b.mean(1))
    return float((diff > np.maximum(np.ptp(a, 1), np.ptp(b, 1))).mean())


def chance_line(summary: list[dict[str, Any]]) -> str:
    """Flagged rounds observed against those expected if no method differed (rounds ≥ 1 of every method)."""
    expected, observed, compared = 0.0, 0, 0
    rates: dict[int, float] = {}
    for s in summary:
        rounds = [r for r in s["by_round"] if r > 0]
        rate = rates.setdefault(s["seeds"], chance_rate(s["seeds"], s["seeds"]))
        expected, compared = expected + rate * len(rounds), compared + len(rounds)
        observed += len(s["outside"])
    return (f"Flagged rounds: {observed} of {compared} compared; expected by chance if no method differed: "
            f"{expected:.1f} (the criterion's false-flag rate, `chance_rate`).\n")


def _cell(s: dict[str, Any] | None) -> str:
    if s is None:
        return "—"
    mark = "" if s["within"] else " ✗"
    return f"{100 * s['diff']:+.2f} (±{100 * s['spread']:.2f}){mark}"


def markdown(summary: list[dict[str, Any]]) -> str:
    head = ("| method | seeds | rounds | r1 | r5 | r10 | last | fedloom / PFLlib at last (%) | rounds outside | "
            "per-client gap at last (pts) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for s in summary:
        gap = "—" if s["client_gap"] is None else f"{100 * s['client_gap']:.2f}"
        br, last = s["by_round"], s["last"]
        lines.append(f"| {s['method']} | {s['seeds']} | {last} | {_cell(br.get(1))} | {_cell(br.get(5))} | "
                     f"{_cell(br.get(10))} | {_cell(br.get(last))} | {100 * br[last]['fedloom']:.2f} / "
                     f"{100 * br[last]['pfllib']:.2f} | {', '.join(map(str, s['outside'])) or 'none'} | "
                     f"{gap} |")
    return head + "\n".join(lines) + "\n\n" + chance_line(summary)
