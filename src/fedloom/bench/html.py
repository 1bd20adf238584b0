"""The self-contained HTML page of a report: inline CSS, figures as base64 PNG data URIs, no scripts, no
external assets (it opens from a mail attachment or an air-gapped machine)."""

from __future__ import annotations

import base64
import html
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedloom.bench.report import GroupReport

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1200px;
       color: #1d232b; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 2px solid #d8dee6; }
ul.meta { color: #4a5563; font-size: 0.9em; } nav a { margin-right: 14px; }
table { border-collapse: collapse; font-size: 0.9em; margin: 10px 0 16px; }
th, td { border: 1px solid #d8dee6; padding: 4px 10px; text-align: right; white-space: nowrap; }
th { background: #eef2f6; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #f8fafc; } tr.top td { font-weight: 600; }
.settings { color: #4a5563; font-size: 0.9em; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.figs figure { margin: 0; } .figs img { max-width: 580px; width: 100%; border: 1px solid #e3e8ee; }
figcaption { font-size: 0.8em; color: #4a5563; }
.neg { color: #b42318; } .pos { color: #067647; }
"""

CAPTIONS = {"curves": "Learning curves: mean test accuracy over seeds, band = ± std",
            "clients": "Final per-client test accuracy (box = quartiles, whiskers 1.5 IQR, triangle = mean)"}


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
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(stem: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    caption = CAPTIONS.get(stem, "Partition: per-client label counts (same for every seed)")
    return (f'<figure><img alt="{html.escape(stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _section(rep: "GroupReport") -> str:
    figures = "".join(_figure(stem, png) for stem, png in rep.figures.items())
    return (f'<section id="{rep.slug}"><h2>{html.escape(rep.group.title)}</h2>'
            f'<p class="settings">Settings: {html.escape(rep.settings)}. Target for rounds-to-target: '
            f"{100 * rep.target:.1f}% accuracy.</p>{_table(rep)}<div class=\"figs\">{figures}</div></section>")


def render_html(reports: list["GroupReport"], title: str, meta: list[str]) -> str:
    nav = "".join(f'<a href="#{r.slug}">{html.escape(r.group.title)}</a>' for r in reports)
    items = "".join(f"<li>{_inline(m)}</li>" for m in meta)
    sections = "".join(_section(r) for r in reports)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><ul class=\"meta\">{items}</ul>"
            f"<nav>{nav}</nav>{sections}</body></html>\n")
