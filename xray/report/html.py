"""The self-contained HTML page of `tilescope report`: inline CSS, inline SVG plots, PNG overlays as data: URIs.

Nothing on the page refers to anything outside it (no scripts, stylesheets, fonts or images to fetch), so
it opens the same from a laptop, an S3 console download or an air-gapped cluster. Every value that comes
from data (image ids, error messages, labels) is HTML-escaped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

from xray.report.overlays import overlay_svg

_CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1240px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.table-wrap { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; white-space: normal; } td.text, th.text { text-align: left; }
td.text { white-space: normal; overflow-wrap: anywhere; max-width: 26em; }
td.text:first-child { white-space: nowrap; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
.note { color: #555; font-size: 13px; max-width: 1100px; }
figure { margin: 0; font-size: 11px; max-width: 260px; } figure svg { display: block; }
figcaption { margin-top: 3px; line-height: 1.35; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; font-size: 13px; }
dt { color: #555; } dd { margin: 0; overflow-wrap: anywhere; }
svg { max-width: 100%; height: auto; }
.summary-box { border: 2px solid #2b6cb0; background: #f0f6ff; padding: 6px 18px 10px; margin: 12px 0 18px; }
.summary-box h2 { border: none; margin: 6px 0; } .summary-box li { margin: 4px 0; font-size: 15px; }
.data-note { font-size: 13px; color: #333; }
.badge { display: inline-block; background: #fde68a; color: #7c2d12; border: 1px solid #d97706;
         border-radius: 3px; padding: 0 5px; margin: 1px 3px 1px 0; font-size: 12px; white-space: nowrap; }
@media (max-width: 900px) { body { margin: 10px; } }
"""
BADGE_COLUMN = "read with care"
"""A table column whose cells are badges, `; `-separated."""


@dataclass(frozen=True)
class TableView:
    """A table as shown on the page: column names and rows of plain values (str, int, float, None)."""

    columns: tuple[str, ...]
    rows: list[tuple]
    text_columns: frozenset[str] = frozenset()  # left-aligned columns that may wrap


@dataclass(frozen=True)
class Overlay:
    """One flagged image with the heatmap of one label over it (PNG, width x height pixels) and the BBox_List
    boxes of the image in those pixels: (label, x, y, w, h)."""

    image_id: str
    label: str
    prob: float
    threshold: float
    findings: str
    png: bytes
    width: int
    height: int
    boxes: tuple[tuple[str, float, float, float, float], ...] = ()
    scale: tuple[float, float] = (0.0, 1.0)
    """The heatmap's colour range on this image: scale[0] is viridis' dark end, scale[1] its yellow end."""


@dataclass(frozen=True)
class GroundTruthView:
    """One --ground-truth source's section: what the labels are, then three tables (each with its caption) and
    the triage curve."""

    title: str
    intro: tuple[str, ...]
    side: TableView
    side_caption: str
    agreement: TableView
    agreement_caption: str
    triage: TableView
    triage_caption: str
    curve: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportPage:
    """Everything the page shows, already computed; render_page only lays it out."""

    title: str
    facts: list[tuple[str, str]]
    auroc_chart: str
    auroc: TableView
    auroc_caption: str
    roc_plots: list[str]
    roc_caption: str
    histograms: list[str]
    thresholds: TableView
    thresholds_caption: str
    screening: TableView
    screening_caption: str
    errors: TableView
    conclusions: tuple[str, ...] = ()
    """The summary box: the page's conclusions, each worded from its interval."""
    data_note: str = ""
    """What the data are and what the page is for."""
    overlays: list[Overlay] = field(default_factory=list)
    overlay_note: str = ""
    overlay_caption: str = ""
    colour_bar: str = ""
    notes: list[str] = field(default_factory=list)
    triage: TableView | None = None
    """Triage against NIH's labels (any finding), when thresholds could be fit."""
    triage_caption: str = ""
    triage_curve: str = ""
    ground_truth: list[GroundTruthView] = field(default_factory=list)
    """One section per --ground-truth source, after the thresholds."""


def format_probability(p: float) -> str:
    """3 decimals, or 5 near 1 (where a saturated model would read 1.000 on every image)."""
    if p is None or math.isnan(p):
        return "n/a"
    return f"{p:.5f}" if p >= 0.999 else f"{p:.3f}"


def format_value(v: object) -> str:
    """A cell: floats to 4 decimals, NaN/None as an en dash, anything else as text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "\u2013"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def render_table(table: TableView, css_class: str) -> str:
    def cell(tag: str, name: str, body: str) -> str:
        cls = ' class="text"' if name in table.text_columns or name == BADGE_COLUMN else ""
        if tag == "td" and name == BADGE_COLUMN:
            marks = [m for m in body.split("; ") if m and m != "\u2013"]
            return f"<td{cls}>" + "".join(f'<span class="badge">{escape(m)}</span>' for m in marks) + "</td>"
        return f"<{tag}{cls}>{escape(body)}</{tag}>"

    head = "".join(cell("th", c, c) for c in table.columns)
    rows = "".join("<tr>" + "".join(cell("td", c, format_value(v)) for c, v in zip(table.columns, row, strict=True))
                   + "</tr>" for row in table.rows)
    return (f'<div class="table-wrap"><table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>'
            "</table></div>")


def _overlays(page: ReportPage) -> str:
    note = f'<p class="note">{escape(page.overlay_note)}</p>' if page.overlay_note else ""
    if not page.overlays:
        return note
    figures = []
    for o in page.overlays:
        boxes = sorted({b[0] for b in o.boxes})
        box_text = f"boxes: {', '.join(boxes)}" if boxes else "no BBox_List box"
        figures.append(f'<figure class="overlay">{overlay_svg(o.png, o.width, o.height, o.boxes, o.label)}'
                       f"<figcaption><b>{escape(o.image_id)}</b><br>{escape(o.label)} "
                       f"{format_probability(o.prob)} (threshold {format_probability(o.threshold)})<br>"
                       f"truth: {escape(o.findings or 'not listed')}; {escape(box_text)}<br>"
                       f"colour: {o.scale[0]:.3g} (dark) to {o.scale[1]:.3g} (yellow)</figcaption></figure>")
    caption = f'<p class="note">{escape(page.overlay_caption)}</p>' if page.overlay_caption else ""
    return caption + page.colour_bar + note + '<div class="grid">' + "".join(figures) + "</div>"


def _summary_box(page: ReportPage) -> str:
    if not page.conclusions and not page.data_note:
        return ""
    items = "".join(f"<li>{escape(c)}</li>" for c in page.conclusions)
    note = f'<p class="data-note">{escape(page.data_note)}</p>' if page.data_note else ""
    return f'<section id="conclusions" class="summary-box"><h2>Summary</h2><ul>{items}</ul>{note}</section>'


def _ground_truth(view: GroundTruthView, i: int) -> str:
    paragraphs = "".join(f'<p class="note">{escape(t)}</p>' for t in view.intro)
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in view.notes)
    return "".join([
        f'<section id="ground-truth-{i}" class="ground-truth"><h2>{escape(view.title)}</h2>{paragraphs}',
        f'<h3>AUROC against the expert reads and against NIH\'s labels</h3><p class="note">'
        f'{escape(view.side_caption)}</p>', render_table(view.side, "gt-auroc"),
        f'<h3>NIH\'s labels against the expert reads</h3><p class="note">{escape(view.agreement_caption)}</p>',
        render_table(view.agreement, "gt-agreement"),
        f'<h3>Triage: how much of the worklist a threshold clears</h3><p class="note">{escape(view.triage_caption)}'
        "</p>", render_table(view.triage, "gt-triage") if view.triage.rows else "", view.curve, notes, "</section>",
    ])


def render_page(page: ReportPage) -> str:
    """The whole HTML document as a string."""
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in page.facts)
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in page.notes)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(page.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(page.title)}</h1>",
        _summary_box(page),
        f'<section id="summary"><dl>{facts}</dl>{notes}</section>',
        '<section id="auroc"><h2>AUROC per label</h2>',
        f'<p class="note">{escape(page.auroc_caption)}</p>',
        page.auroc_chart,
        render_table(page.auroc, "auroc"),
        "</section>",
        f'<section id="roc"><h2>ROC curves</h2><p class="note">{escape(page.roc_caption)}</p>'
        '<div class="grid">' + "".join(page.roc_plots) + "</div></section>",
        '<section id="histograms"><h2>Score histograms</h2>'
        '<p class="note">Share of each class per bin of probability (the y axis is percent of that class\'s '
        "images): red with the finding, grey without it; the green line is the label's threshold.</p>"
        '<div class="grid">' + "".join(page.histograms) + "</div></section>",
        '<section id="thresholds"><h2>Thresholds and flags</h2>'
        f'<p class="note">{escape(page.thresholds_caption)}</p>',
        render_table(page.thresholds, "thresholds"),
        "</section>",
        (f'<section id="triage"><h2>Triage against NIH\'s labels</h2><p class="note">{escape(page.triage_caption)}'
         f"</p>{render_table(page.triage, 'triage')}{page.triage_curve}</section>" if page.triage is not None
         else ""),
        *[_ground_truth(view, i) for i, view in enumerate(page.ground_truth, 1)],
        f'<section id="screening"><h2>Screening view</h2><p class="note">{escape(page.screening_caption)}</p>',
        render_table(page.screening, "screening"),
        "</section>",
        '<section id="heatmaps"><h2>Heatmaps of flagged images, one label at a time</h2>',
        _overlays(page),
        "</section>",
        '<section id="errors"><h2>Errors</h2>',
        render_table(page.errors, "errors") if page.errors.rows else '<p class="note">No error rows.</p>',
        "</section>",
        "</body></html>",
    ])
