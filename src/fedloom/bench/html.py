"""The self-contained HTML page of a report: inline CSS, figures as base64 PNG data URIs, no scripts, no
external assets (it opens from a mail attachment or an air-gapped machine). Each figure is shown at
CSS_PX_PER_INCH times its print size (never scaled down to fit a column), with links to its PDF and SVG in
plots/ next to the page."""

from __future__ import annotations

import base64
import html
import re
import struct
from typing import TYPE_CHECKING

from fedloom.bench.plots import PNG_DPI
from fedloom.bench.report_trust import html_tables

if TYPE_CHECKING:
    from fedloom.bench.report import GroupReport

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1200px;
       color: #1d232b; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 2px solid #d8dee6; }
ul.meta { color: #4a5563; font-size: 0.9em; } nav a { margin-right: 14px; }
table { border-collapse: collapse; font-size: 0.85em; margin: 10px 0 16px; }
th, td { border: 1px solid #d8dee6; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #eef2f6; white-space: normal; vertical-align: bottom; min-width: 4.5em; }
td:first-child, th:first-child, td:nth-child(2), th:nth-child(2) { text-align: left; }
td:nth-child(2) { white-space: normal; max-width: 16em; } .scroll { overflow-x: auto; max-width: 100%; }
tr:nth-child(even) td { background: #f8fafc; } tr.top td { font-weight: 600; }
.settings { color: #4a5563; font-size: 0.9em; }
.figs { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.figs figure { margin: 0; } .figs img { max-width: 100%; height: auto; border: 1px solid #e3e8ee; }
figcaption { font-size: 0.8em; color: #4a5563; max-width: 780px; } figcaption a { margin-left: 6px; }
.neg { color: #b42318; } .pos { color: #067647; }
table.heat td { text-align: center; } table.heat td:first-child { text-align: left; } table.heat td.best { font-weight: 700; } h3 { font-size: 1em; }
"""

CAPTIONS = {"curves": "Learning curves: mean test accuracy over seeds, band = ± std",
            "cost": "Accuracy against cumulative bytes sent (up + down) and against wall-clock seconds (training + "
                    "evaluation, timings.jsonl), mean over seeds",
            "clients": "Final per-client test accuracy (box = quartiles, whiskers 1.5 IQR, triangle = mean)",
            "asr": "Attack success rate per round: one panel per attack, one line per defense, mean over seeds"}
#: CSS pixels per inch of print size: 7 pt text shows at ~10.7 px, a two-column figure (7 in) at 770 px
CSS_PX_PER_INCH = 110


def _inline(text: str) -> str:
    """Escape, then render `code` spans (the only markup the meta lines use)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _cell(value: str, column: str) -> str:
    css = ""
    if column.startswith("Δ") and value not in ("—", ""):
        css = ' class="neg"' if value.startswith("-") else ' class="pos"'
    return f"<td{css}>{html.escape(value)}</td>"


def _table(rep: "GroupReport") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in rep.header)
    top = ' class="top"'  # the leader's row is bold
    body = "".join(f"<tr{top if i == 0 else ''}>" + "".join(_cell(v, h) for v, h in zip(row, rep.header))
                   + "</tr>" for i, row in enumerate(rep.cells))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def png_width(png: bytes) -> int:
    """Pixel width from the PNG header (IHDR is the first chunk: width at bytes 16-19, big-endian)."""
    return struct.unpack(">I", png[16:20])[0]


def _figure(slug: str, stem: str, files: dict[str, bytes]) -> str:
    png = files["png"]
    data = base64.b64encode(png).decode()
    width = round(png_width(png) / PNG_DPI * CSS_PX_PER_INCH)
    caption = CAPTIONS.get(stem, "Partition: per-client label counts, log colour scale, grey = no sample (same "
                                 "for every seed)")
    links = "".join(f'<a href="plots/{slug}-{stem}.{fmt}">{fmt.upper()}</a>' for fmt in ("pdf", "svg"))
    return (f'<figure><img alt="{html.escape(stem)}" width="{width}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}{links}</figcaption></figure>")


def _section(rep: "GroupReport") -> str:
    figures = "".join(_figure(rep.slug, stem, files) for stem, files in rep.figures.items())
    runs = _table(rep)
    if rep.trust is not None:  # a matrix: its heatmaps first, the one row per run (hundreds) folded away
        runs = (f"<h3>Attacks × defenses</h3>{html_tables(rep.trust)}<details><summary>Every run "
                f"({len(rep.rows)})</summary>{runs}</details>")
    return (f'<section id="{rep.slug}"><h2>{html.escape(rep.group.title)}</h2>'
            f'<p class="settings">Settings: {html.escape(rep.settings)}. Target for rounds-to-target: '
            f"{100 * rep.target:.1f}% accuracy.</p>{runs}<div class=\"figs\">{figures}</div></section>")


def render_html(reports: list["GroupReport"], title: str, meta: list[str]) -> str:
    nav = "".join(f'<a href="#{r.slug}">{html.escape(r.group.title)}</a>' for r in reports)
    items = "".join(f"<li>{_inline(m)}</li>" for m in meta)
    sections = "".join(_section(r) for r in reports)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><ul class=\"meta\">{items}</ul>"
            f"<nav>{nav}</nav>{sections}</body></html>\n")
