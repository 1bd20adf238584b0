"""The report's attack × defense matrix (issue 19): values against hand-computed means over seeds, the row and
column placement, the best-of-last-k pick, and (slow) a tiny real grid through `fedloom bench` and `fedloom report`
with both heatmap tables and the ASR curves."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedloom.bench.collect import Group, RunData, Variant, label_variants
from fedloom.bench.report_trust import (MA_SPAN, NO_ATTACK, heat, html_tables, ma_reference, markdown_tables, pick,
                                       trust_matrix)
from fedloom.config import build_config


def fake_run(attack: str | None, aggregator: str, seed: int, rows: list[tuple[float, float | None]],
             fraction: float = 0.2) -> RunData:
    raw: dict = {"dataset": "digits", "aggregator": aggregator, "seed": seed}
    if attack:
        raw.update(attack=attack, options={"attack": {"fraction": fraction, "sampling": "exact"}})
    records = [{"round": 0, "accuracy": 0.1}]
    for index, (ma, asr) in enumerate(rows, start=1):
        records.append({"round": index, "accuracy": ma, **({} if asr is None else {"asr": asr})})
    return RunData(Path(f"/nowhere/{attack}-{aggregator}-{seed}"), build_config(raw), {}, records, [])


def group_of(runs: list[RunData]) -> Group:
    variants: dict[str, list[RunData]] = {}
    for run in runs:
        variants.setdefault(run.variant_key, []).append(run)
    group = Group("digits", "iid", [Variant(k, v) for k, v in variants.items()])
    label_variants(group.variants)
    return group


@pytest.fixture
def matrix_group() -> Group:
    return group_of([
        fake_run("badnets", "mean", 1, [(0.70, 0.50), (0.80, 0.90)]),
        fake_run("badnets", "mean", 2, [(0.75, 0.40), (0.90, 0.70)]),
        fake_run("badnets", "median", 1, [(0.60, 0.20), (0.50, 0.10)]),
        fake_run("badnets", "median", 2, [(0.70, 0.10), (0.60, 0.30)]),
        fake_run("signflip", "mean", 1, [(0.40, None), (0.30, None)]),
        fake_run("signflip", "median", 1, [(0.50, None), (0.55, None)]),
        fake_run("badnets", "mean", 1, [(0.85, 0.02), (0.95, 0.01)], fraction=0.0),  # the no-attack baseline
    ])


def test_matrix_places_and_averages_over_seeds(matrix_group: Group) -> None:
    m = trust_matrix(matrix_group)
    assert m is not None
    assert m.rows == [NO_ATTACK, "badnets", "signflip"] and m.columns == ["mean", "median"]
    ma_mean, ma_std, seeds = m.cell("badnets", "mean", "ma")  # final round: 0.80 and 0.90
    assert (seeds, round(ma_mean, 6), round(ma_std, 6)) == (2, 85.0, 5.0)
    asr_mean, asr_std, _ = m.cell("badnets", "median", "asr")  # 0.10 and 0.30
    assert (round(asr_mean, 6), round(asr_std, 6)) == (20.0, 10.0)
    assert m.cell("signflip", "mean", "asr") is None  # untargeted: no ASR
    assert m.cell("signflip", "median", "ma")[0] == pytest.approx(55.0)
    assert m.cell(NO_ATTACK, "median", "ma") is None  # never run
    rounds, curve = m.asr_curves[("badnets", "mean")]
    assert list(rounds) == [1, 2] and curve == pytest.approx([45.0, 80.0])


def test_best_of_last_k_takes_both_metrics_from_the_best_ma_round() -> None:
    run = fake_run("badnets", "mean", 1, [(0.6, 0.1), (0.9, 0.8), (0.7, 0.3)])
    assert pick(run, 1) == (0.7, 0.3)
    assert pick(run, 2) == (0.9, 0.8)
    assert pick(run, 3) == (0.9, 0.8)
    assert pick(run, 50) == (0.9, 0.8)  # round 0 (the untrained model) is never picked


def test_no_attack_means_no_matrix() -> None:
    assert trust_matrix(group_of([fake_run(None, "mean", 1, [(0.5, None)])])) is None


def test_markdown_and_html_tables(matrix_group: Group) -> None:
    m = trust_matrix(matrix_group)
    text = "\n".join(markdown_tables(m))
    assert "| attack \\ defense | mean | median |" in text
    assert "| badnets | **85.00 ± 5.00** | 55.00 ± 5.00 |" in text  # MA: higher is best
    assert "| badnets | 80.00 ± 10.00 | **20.00 ± 10.00** |" in text  # ASR: lower is best
    assert "| signflip | — | — |" in text
    page = html_tables(m)
    assert page.count('<table class="heat">') == 2
    assert f'style="background:{heat(20.0, "asr")}" class="best">20.00 ± 10.00' in page
    assert heat(100, "asr") != heat(0, "asr") and heat(90, "ma", 80) != heat(90, "asr")
    # MA is coloured relative to the no-attack x mean cell (95.00): 85.00 is 10 points below it
    assert f'style="background:{heat(85.0, "ma", 95.0)}" class="best">85.00 ± 5.00<br><small>-10.0</small>' in page
    assert '>95.00<br><small>reference</small>' in page
    assert f'style="background:{heat(80.0, "asr")};color:#fff">80.00 ± 10.00' in page  # dark cell, white text
    assert "MA minus the no-attack, no-defense cell (no attack × mean), 95.00%" in page
    assert "ASR on its absolute 0–100% scale" in page


def lightness(colour: str) -> int:
    return int(colour.rsplit(",", 1)[1].strip(" %)"))


def test_ma_colour_is_the_difference_from_the_reference_on_a_diverging_scale() -> None:
    # hand-computed: lightness 97 - 45 * min(|MA - reference| / 20, 1); red (hue 4) below, blue (212) above
    assert heat(84.0, "ma", 84.0) == "hsl(212, 70%, 97%)"  # white at 0 (either hue)
    assert heat(80.0, "ma", 84.0) == "hsl(4, 70%, 88%)"
    assert heat(88.0, "ma", 84.0) == "hsl(212, 70%, 88%)"
    assert heat(84.0 - MA_SPAN, "ma", 84.0) == heat(20.0, "ma", 84.0) == "hsl(4, 70%, 52%)"  # saturated
    # the case: 62 and 82 against a no-attack 84 must look different at a glance (on the old 0-100
    # scale their lightness differed by 9 points; here by over 35)
    assert lightness(heat(82.0, "ma", 84.0)) - lightness(heat(62.0, "ma", 84.0)) >= 35
    # ASR stays absolute: 0 white, 100 saturated red, whatever the MA reference
    assert heat(0.0, "asr") == "hsl(4, 70%, 97%)" and heat(100.0, "asr", 50.0) == "hsl(4, 70%, 52%)"


def test_ma_reference_is_no_attack_mean_else_the_best_cell(matrix_group: Group) -> None:
    what, value = ma_reference(trust_matrix(matrix_group))
    assert value == pytest.approx(95.0) and "no attack × mean" in what
    attacked_only = group_of([fake_run("badnets", "mean", 1, [(0.70, 0.9)]),
                              fake_run("badnets", "median", 1, [(0.80, 0.1)])])
    what, value = ma_reference(trust_matrix(attacked_only))
    assert value == pytest.approx(80.0) and "best MA cell" in what


def test_extra_differences_join_the_row_label() -> None:
    a = fake_run("badnets", "mean", 1, [(0.5, 0.5)])
    b = fake_run("badnets", "mean", 1, [(0.6, 0.4)])
    b.config.options["badnets"] = {"pdr": 0.5}
    m = trust_matrix(group_of([a, b]))
    assert len(m.rows) == 2 and any("badnets.pdr=0.5" in r for r in m.rows)


TINY_GRID = """
[grid]
name = "trust-tiny"
out = "{out}"
seeds = [1, 2]
workers = 1

[base]
dataset = "digits"
model = "mlp"
clients = 6
rounds = 2
batch_size = 32
lr = 0.05
partition = "iid"
device = "cpu"

[base.attack]
name = "badnets"
sampling = "exact"

[axes]
threat = [{{attack = "badnets", "attack.fraction" = 0.0}}, {{attack = "badnets", "attack.fraction" = 0.34}},
          {{attack = "signflip", "attack.fraction" = 0.34}}]
aggregator = ["mean", "median"]
"""


@pytest.mark.slow
def test_tiny_grid_through_bench_and_report(tmp_path: Path) -> None:
    from fedloom.cli import main

    grid = tmp_path / "grid.toml"
    grid.write_text(TINY_GRID.format(out=tmp_path / "runs"))
    assert main(["bench", str(grid)]) == 0
    doc = tmp_path / "results.md"
    doc.write_text("prose\n<!-- tables:start -->\n<!-- tables:end -->\nmore prose\n")
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--trust-last", "2",
                 "--into", str(doc)]) == 0
    assert "### iid: attacks × defenses" in doc.read_text() and doc.read_text().endswith("more prose\n")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "### Attacks × defenses" in text and "| attack \\ defense | mean | median |" in text
    for row in (NO_ATTACK, "badnets", "signflip"):
        assert text.count(f"| {row} |") == 2  # one row in each table
    ma_rows = [line for line in text.splitlines() if line.startswith("| badnets |")]
    values = [float(v.strip(" *").split(" ± ")[0]) for v in ma_rows[0].split("|")[2:4]]
    assert all(0 <= v <= 100 and not math.isnan(v) for v in values)
    assert "± " in ma_rows[0]  # two seeds
    assert (tmp_path / "report" / "plots" / "digits-iid-asr.png").is_file()
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count('<table class="heat">') == 2
    # the heatmaps come first; the one row per run is folded under them
    assert page.index('<table class="heat">') < page.index("<details><summary>Every run (")
