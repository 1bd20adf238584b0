"""The paper-grade report: PNG/PDF/SVG figures at print size, distinct overlapping curves, hyperparameters in the
legend and table, fairness columns, cost figure, LaTeX booktabs table, figures shown unshrunk in the HTML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fedloom.bench.collect import Variant, legend_label
from fedloom.bench.html import CSS_PX_PER_INCH, png_width
from fedloom.bench.plots import DOUBLE, PAPER_STYLE, PNG_DPI, SINGLE, line_style, marker_rounds
from fedloom.bench.report import write_report
from fedloom.bench.report_latex import escape
from fedloom.cli import main

RUN = ["--dataset", "digits", "--model", "logreg", "--clients", "4", "--rounds", "3", "--lr", "0.05", "--quiet",
       "--device", "cpu"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    cache = str(root / "cache")
    # FedProx with a tiny mu draws (almost) FedAvg's curve: the overlapping pair the styles must keep apart
    for name, extra in (("fedavg", []), ("fedprox", ["--fedprox.mu", "0.0001"])):
        assert main(["run", *RUN, "--algorithm", name, *extra, "--out", str(root / "runs" / name),
                     "--cache-dir", cache]) == 0
    out = root / "report"
    write_report(root / "runs", out)
    return out


def test_every_figure_in_three_formats_at_print_size(report: Path) -> None:
    stems = {p.stem for p in (report / "plots").iterdir()}
    assert {s.rsplit("-", 1)[-1] for s in stems} >= {"curves", "cost", "clients"}
    assert any("-partition-" in s for s in stems)
    for stem in stems:
        png = (report / "plots" / f"{stem}.png").read_bytes()
        assert (report / "plots" / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
        assert b"<svg" in (report / "plots" / f"{stem}.svg").read_bytes()[:2000]
        inches = png_width(png) / PNG_DPI
        assert inches == pytest.approx(DOUBLE if stem.endswith(("curves", "cost")) else inches)
        assert inches <= DOUBLE + 0.01 and inches >= SINGLE - 0.01
    assert min(v for k, v in PAPER_STYLE.items() if k.endswith("size") and "marker" not in k) >= 7  # points


def test_html_shows_figures_at_their_print_size_never_shrunk(report: Path) -> None:
    html = (report / "report.html").read_text()
    widths = [int(w) for w in re.findall(r'<img alt="[^"]*curves" width="(\d+)"', html)]
    assert widths == [round(DOUBLE * CSS_PX_PER_INCH)]  # 770 px: legend text ~10.7 px, not 6
    assert "max-width: 580px" not in html
    assert 'href="plots/' in html and ".pdf" in html and ".svg" in html


def test_hyperparameters_in_legend_and_table_and_fairness_columns(report: Path) -> None:
    svg = next((report / "plots").glob("*-curves.svg")).read_text()
    assert "fedprox [mu=0.0001]" in svg  # svg.fonttype none keeps legend text as text
    md = (report / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| algorithm"))
    assert "hyperparameters" in header and "client p10 (%)" in header and "client std (pts)" in header
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = next(line for line in md.splitlines() if line.startswith("| fedprox"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[columns.index("hyperparameters")] == "mu=0.0001"
    last = json.loads((report.parent / "runs" / "fedprox" / "metrics.jsonl").read_text().splitlines()[-1])
    assert cells[columns.index("client p10 (%)")] == f"{100 * last['client_accuracy_p10']:.2f}"
    assert cells[columns.index("client std (pts)")] == f"{100 * last['client_accuracy_std']:.2f}"


def test_latex_table_uses_booktabs_and_escapes(report: Path) -> None:
    tex = (report / "report.tex").read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{ll"):
        assert rule in tex
    assert r"best acc. (\%)" in tex and r"\textbf{" in tex and "mu=0.0001" in tex
    assert escape("a_b 50% ± 1 — x") == r"a\_b 50\% $\pm$ 1 -- x"


def test_overlapping_curves_get_distinct_styles_and_staggered_markers() -> None:
    for i in range(39):
        a, b = line_style(i), line_style(i + 1)
        assert a["color"] != b["color"] and a["linestyle"] != b["linestyle"] and a["marker"] != b["marker"]
    assert len({(line_style(i)["color"], line_style(i)["linestyle"]) for i in range(40)}) == 40
    # 16 rounds, 2 curves: markers every 2 rounds, the second curve's one round later
    assert marker_rounds(0, 2, 16) == (0, 2) and marker_rounds(1, 2, 16) == (1, 2)
    assert marker_rounds(1, 5, 80) == (2, 10) and marker_rounds(4, 5, 80) == (8, 10)
    # 4 curves over 8 rounds (2 offsets): FedAvg and FedProx with a tiny mu, drawn one after the other, must not
    # put their markers on the same rounds
    assert [marker_rounds(i, 4, 8)[0] for i in range(4)] == [0, 1, 0, 1]


def test_legend_adds_the_algorithms_options_not_already_in_the_label() -> None:
    key = json.dumps({"algorithm": "fedprox", "options": {"fedprox": {"mu": 0.01}}})
    variant = Variant(key, [], label="fedprox", hyper="mu=0.01")
    variant.runs = [type("R", (), {"config": type("C", (), {"algorithm": "fedprox"})()})()]  # type: ignore[list-item]
    assert legend_label(variant) == "fedprox [mu=0.01]"
    variant.label = "fedprox (fedprox.mu=0.01)"
    assert legend_label(variant) == "fedprox (fedprox.mu=0.01)"
    variant.label, variant.hyper = "pfedme", "a=1, b=2, compat=False, c=3, d=4, mode=x"
    variant.runs[0].config.algorithm = "pfedme"
    assert legend_label(variant) == "pfedme [a=1, b=2, c=3, …]"  # numbers only, three at most
    variant.label = "pfedme (" + "x" * 60 + ")"
    assert len(legend_label(variant)) == 48 and legend_label(variant).endswith("…")
    assert np.isfinite(PNG_DPI)


def test_settings_line_names_the_model_family_not_a_missing_model() -> None:
    """A family run has no --model: the settings line says its family instead of 'model None'."""
    from types import SimpleNamespace

    from fedloom.bench.report import common_settings
    from fedloom.config import RunConfig

    runs = [SimpleNamespace(config=RunConfig(model=None, model_family="HCNNs8", algorithm=a)) for a in ("fd", "fml")]
    line = common_settings(SimpleNamespace(variants=[SimpleNamespace(runs=runs)]))
    assert "model family HCNNs8" in line and "None" not in line
    plain = [SimpleNamespace(config=RunConfig(model="cnn"))]
    assert common_settings(SimpleNamespace(variants=[SimpleNamespace(runs=plain)])).startswith("model cnn, clients")


def test_settings_line_names_a_learning_rate_decay_only_when_there_is_one() -> None:
    from types import SimpleNamespace

    from fedloom.bench.report import common_settings
    from fedloom.config import RunConfig

    def line(**fields: object) -> str:
        return common_settings(SimpleNamespace(variants=[SimpleNamespace(runs=[SimpleNamespace(
            config=RunConfig(model="cnn", **fields))])]))

    assert "lr decay 0.99" in line(lr_decay=0.99)
    assert "decay" not in line()
