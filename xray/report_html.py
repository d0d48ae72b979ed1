"""The self-contained HTML page of `tilescope report`: inline CSS, inline SVG plots, PNG overlays as data: URIs.

Nothing on the page refers to anything outside it (no scripts, stylesheets, fonts or images to fetch), so
it opens the same from a laptop, an S3 console download or an air-gapped cluster. Every value that comes
from data (image ids, error messages, labels) is HTML-escaped.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from html import escape

_CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1280px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
.note { color: #666; font-size: 13px; }
figure { margin: 0; font-size: 11px; } figure img { display: block; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; font-size: 13px; }
dt { color: #555; } dd { margin: 0; }
"""


@dataclass(frozen=True)
class TableView:
    """A table as shown on the page: column names and rows of plain values (str, int, float, None)."""

    columns: tuple[str, ...]
    rows: list[tuple]
    text_columns: frozenset[str] = frozenset()  # left-aligned columns


@dataclass(frozen=True)
class Overlay:
    """One top-flagged image with the heatmap of its top label over it (PNG bytes)."""

    image_id: str
    label: str
    prob: float
    png: bytes


@dataclass(frozen=True)
class ReportPage:
    """Everything the page shows, already computed; render_page only lays it out."""

    title: str
    facts: list[tuple[str, str]]
    auroc_chart: str
    auroc: TableView
    roc_plots: list[str]
    histograms: list[str]
    thresholds: TableView
    thresholds_caption: str
    screening: TableView
    screening_caption: str
    errors: TableView
    overlays: list[Overlay] = field(default_factory=list)
    overlay_note: str = ""
    notes: list[str] = field(default_factory=list)


def format_value(v: object) -> str:
    """A cell: floats to 4 decimals, NaN/None as an en dash, anything else as text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "\u2013"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def render_table(table: TableView, css_class: str) -> str:
    def cell(tag: str, name: str, body: str) -> str:
        cls = ' class="text"' if name in table.text_columns else ""
        return f"<{tag}{cls}>{escape(body)}</{tag}>"

    head = "".join(cell("th", c, c) for c in table.columns)
    rows = "".join("<tr>" + "".join(cell("td", c, format_value(v)) for c, v in zip(table.columns, row, strict=True))
                   + "</tr>" for row in table.rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _overlays(page: ReportPage) -> str:
    if not page.overlays:
        return f'<p class="note">{escape(page.overlay_note)}</p>'
    figures = []
    for o in page.overlays:
        data = base64.b64encode(o.png).decode("ascii")
        figures.append(f'<figure class="overlay"><img alt="{escape(o.image_id)} {escape(o.label)}" '
                       f'src="data:image/png;base64,{data}"/><figcaption>{escape(o.image_id)}: '
                       f'{escape(o.label)} {o.prob:.3f}</figcaption></figure>')
    note = f'<p class="note">{escape(page.overlay_note)}</p>' if page.overlay_note else ""
    return note + '<div class="grid">' + "".join(figures) + "</div>"


def render_page(page: ReportPage) -> str:
    """The whole HTML document as a string."""
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in page.facts)
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in page.notes)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(page.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(page.title)}</h1>",
        f'<section id="summary"><dl>{facts}</dl>{notes}</section>',
        '<section id="auroc"><h2>AUROC per label</h2>',
        page.auroc_chart,
        render_table(page.auroc, "auroc"),
        "</section>",
        '<section id="roc"><h2>ROC curves</h2><div class="grid">' + "".join(page.roc_plots) + "</div></section>",
        '<section id="histograms"><h2>Score histograms</h2>'
        '<p class="note">Share of each class per bin: grey without the finding, red with it; the green line '
        "is the label's threshold.</p>"
        '<div class="grid">' + "".join(page.histograms) + "</div></section>",
        '<section id="thresholds"><h2>Thresholds and flags</h2>'
        f'<p class="note">{escape(page.thresholds_caption)}</p>',
        render_table(page.thresholds, "thresholds"),
        "</section>",
        f'<section id="screening"><h2>Screening view</h2><p class="note">{escape(page.screening_caption)}</p>',
        render_table(page.screening, "screening"),
        "</section>",
        '<section id="heatmaps"><h2>Heatmaps of the top-flagged images</h2>',
        _overlays(page),
        "</section>",
        '<section id="errors"><h2>Errors</h2>',
        render_table(page.errors, "errors") if page.errors.rows else '<p class="note">No error rows.</p>',
        "</section>",
        "</body></html>",
    ])
