"""The charts of `tilescope report` (AUROC per label, ROC curves, score histograms), drawn in Python as inline SVG,
so the page needs no JavaScript, no fonts and no network. Heatmap overlays are overlays.py; the primitives and
the palette svg.py.

Hand-written SVG rather than matplotlib's SVG backend: a plot here is 2-6 KB of plain elements with classes
that tests find (legend, colour bar, boxes), the same bytes for the same input, and costs nothing to draw;
matplotlib's SVG of one small ROC plot with a legend is ~30 KB of glyph paths and clip ids, and a page draws
29 plots plus one more per heatmap. The colours are module constants: tests find the plots in a screenshot by
them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

import numpy as np

from xray.report.svg import (
    BASELINE_COLOUR,
    DELTA_COLOUR,
    GRID,
    MIN_FONT_PX,
    NEGATIVE_COLOUR,
    POSITIVE_COLOUR,
    ROC_COLOUR,
    SVG_NS,
    THRESHOLD_COLOUR,
    Box,
    num,
    svg_line,
    svg_text,
)


def format_metric(v: float | None, digits: int = 3) -> str:
    """A metric for a caption or a sentence: `digits` decimals, or 'n/a' when undefined (None or NaN)."""
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def format_interval(v: float, low: float, high: float, digits: int = 3) -> str:
    """'0.812 [0.790, 0.833]', '0.812' without an interval, 'n/a' without a value."""
    if v is None or math.isnan(v):
        return "n/a"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return format_metric(v, digits)
    return f"{v:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _legend(items: list[tuple[str, str, str]], right: float, bottom: float, size: float = MIN_FONT_PX) -> str:
    """A boxed legend whose bottom-right corner is at (right, bottom); items are (mark, colour, text) with mark
    one of line, dashed, dot, bar, whisker."""
    row, sample = size + 5, 18
    width = 12 + sample + max(len(t) for _, _, t in items) * size * 0.56
    height = 6 + row * len(items)
    x0, y0 = right - width, bottom - height
    parts = [f'<g class="legend"><rect x="{num(x0)}" y="{num(y0)}" width="{num(width)}" height="{num(height)}" '
             'fill="white" fill-opacity="0.9" stroke="#bbb"/>']
    for i, (mark, colour, text) in enumerate(items):
        cy = y0 + 3 + row * i + row / 2
        sx = x0 + 6
        if mark in ("line", "dashed"):
            dash = ' stroke-dasharray="5 3"' if mark == "dashed" else ""
            parts.append(svg_line(sx, cy, sx + sample, cy, colour, 2.5 if mark == "line" else 2, dash))
        elif mark == "dot":
            parts.append(f'<circle cx="{num(sx + sample / 2)}" cy="{num(cy)}" r="4" fill="{colour}"/>')
        elif mark == "bar":
            parts.append(f'<rect x="{num(sx + 3)}" y="{num(cy - 4)}" width="{sample - 6}" height="8" '
                         f'fill="{colour}"/>')
        else:  # whisker: an interval
            parts.append(svg_line(sx, cy, sx + sample, cy, colour, 2))
            parts += [svg_line(x, cy - 3, x, cy + 3, colour, 1.5) for x in (sx, sx + sample)]
        parts.append(svg_text(sx + sample + 5, cy + size * 0.35, text, size, extra='class="legend-text"'))
    parts.append("</g>")
    return "".join(parts)


def tick_text(value: float) -> str:
    """A tick label: at most three significant digits."""
    return f"{value:.3g}"


def _axes(box: Box, ticks: list[float], xlabel: str, ylabel: str,
          y_ticks: list[tuple[float, str]] | None = None,
          x_text: Callable[[float], str] = tick_text) -> list[str]:
    """Grid lines, tick labels and axis titles of a unit box: x ticks in [0, 1]; y ticks (position in [0, 1],
    text), the x ticks when None."""
    parts = []
    for t in ticks:
        parts.append(svg_line(box.x(t), box.top, box.x(t), box.bottom, GRID))
        parts.append(svg_text(box.x(t), box.bottom + 13, x_text(t), 11, "middle"))
    for t, text in y_ticks if y_ticks is not None else [(t, tick_text(t)) for t in ticks]:
        parts.append(svg_line(box.left, box.y(t), box.right, box.y(t), GRID))
        parts.append(svg_text(box.left - 3, box.y(t) + 4, text, 11, "end", 'class="y-tick"'))
    parts.append(svg_text(box.x(0.5), box.bottom + 27, xlabel, 11, "middle"))
    cy = box.y(0.5)
    parts.append(svg_text(11, cy, ylabel, 9, "middle", f'transform="rotate(-90 11 {num(cy)})"'))
    return parts


def roc_svg(label: str, fpr: np.ndarray, tpr: np.ndarray, auroc: float, low: float, high: float,
            baseline: tuple[np.ndarray, np.ndarray] | None = None, baseline_auroc: float = math.nan,
            operating_point: tuple[float, float] | None = None, size: int = 300) -> str:
    """One label's ROC curve (fpr, tpr (K,)), the baseline run's dashed when given, the threshold's operating
    point, and a legend."""
    box = Box(48, 22, size - 58, size - 72)
    parts = [f'<svg class="roc" data-label="{escape(label)}" width="{size}" height="{size}" '
             f'viewBox="0 0 {size} {size}" {SVG_NS} role="img">',
             svg_text(size / 2, 14, label, 12, "middle", 'font-weight="bold"')]
    parts += _axes(box, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], "1 - specificity", "sensitivity")
    parts.append(svg_line(box.x(0), box.y(0), box.x(1), box.y(1), "#bbb", 1, 'stroke-dasharray="3 3"'))
    parts.append(box.frame())
    legend = []
    if baseline is not None and baseline[0].size:
        parts.append(f'<polyline class="roc-baseline" points="{box.points(*baseline)}" fill="none" '
                     f'stroke="{BASELINE_COLOUR}" stroke-width="2" stroke-dasharray="5 3"/>')
    if fpr.size:
        parts.append(f'<polyline class="roc-curve" points="{box.points(fpr, tpr)}" fill="none" '
                     f'stroke="{ROC_COLOUR}" stroke-width="2.5"/>')
        legend.append(("line", ROC_COLOUR, f"run {format_metric(auroc)}"))
    if baseline is not None and baseline[0].size:
        legend.append(("dashed", BASELINE_COLOUR, f"baseline {format_metric(baseline_auroc)}"))
    if operating_point is not None and fpr.size and not any(math.isnan(v) for v in operating_point):
        x, y = box.x(operating_point[0]), box.y(operating_point[1])
        parts.append(f'<circle class="operating-point" cx="{num(x)}" cy="{num(y)}" r="4" fill="{THRESHOLD_COLOUR}" '
                     'stroke="white"/>')
        legend.append(("dot", THRESHOLD_COLOUR, "threshold"))
    if legend:
        parts.append(_legend(legend, box.right - 3, box.bottom - 3))
    caption = (f"AUROC {format_interval(auroc, low, high)}" if fpr.size else "one class only: no curve")
    parts.append(svg_text(size / 2, size - 4, caption, 10, "middle"))
    parts.append("</svg>")
    return "".join(parts)


def _nice_top(value: float) -> tuple[float, int]:
    """(top, steps): the smallest of 1, 2, 2.5, 5 x 10^k at or above value (> 0), and the tick count that cuts
    it into round steps."""
    exp = 10.0 ** math.floor(math.log10(value))
    mantissa, steps = next((m, k) for m, k in ((1, 5), (2, 4), (2.5, 5), (5, 5), (10, 5)) if m * exp >= value - 1e-12)
    return mantissa * exp, steps


def histogram_svg(label: str, edges: np.ndarray, positives: np.ndarray, negatives: np.ndarray,
                  threshold: float, size: tuple[int, int] = (300, 250)) -> str:
    """Score histograms of one label: each class as a share of its own images per bin (B bins, edges (B+1,)),
    side by side, with a y axis in percent, a legend and the fitted threshold as a vertical line. The x axis
    spans the edges (the scores' own range, xray.evaluation.intervals.class_histogram), not always [0, 1]."""
    width, height = size
    lo_edge, hi_edge = float(edges[0]), float(edges[-1])
    span = (hi_edge - lo_edge) or 1.0
    box = Box(48, 20, width - 58, height - 104)
    shares = [c / c.sum() if c.sum() else np.zeros_like(c, dtype=float) for c in (negatives, positives)]
    peak = float(max(s.max(initial=0.0) for s in shares))
    top, steps = _nice_top(peak) if peak > 0 else (1.0, 5)
    parts = [f'<svg class="histogram" data-label="{escape(label)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" {SVG_NS} role="img">',
             svg_text(width / 2, 13, label, 12, "middle", 'font-weight="bold"')]
    parts += _axes(box, [0.0, 0.25, 0.5, 0.75, 1.0], "probability", "% of class",
                   [(k / steps, f"{100 * top * k / steps:g}") for k in range(steps + 1)],
                   x_text=lambda u: tick_text(lo_edge + u * span))
    for share, colour, offset, cls in ((shares[0], NEGATIVE_COLOUR, 0.0, "neg"),
                                       (shares[1], POSITIVE_COLOUR, 0.5, "pos")):
        for b, value in enumerate(share):
            if value <= 0:
                continue
            lo, hi = (edges[b] - lo_edge) / span, (edges[b + 1] - lo_edge) / span
            x0, y0, bar_w = box.x(lo + (hi - lo) * offset), box.y(value / top), box.width * (hi - lo) / 2
            parts.append(f'<rect class="bar-{cls}" x="{num(x0)}" y="{num(y0)}" width="{num(bar_w)}" '
                         f'height="{num(box.bottom - y0)}" fill="{colour}"/>')
    parts.append(box.frame())
    if not math.isnan(threshold):
        tx = box.x(min(max((threshold - lo_edge) / span, 0.0), 1.0))
        parts.append(f'<line class="threshold" x1="{num(tx)}" y1="{num(box.top)}" x2="{num(tx)}" '
                     f'y2="{num(box.bottom)}" stroke="{THRESHOLD_COLOUR}" stroke-width="2" stroke-dasharray="4 2"/>')
    # Below the axes, where it hides no bar.
    parts.append(_legend_row([("bar", POSITIVE_COLOUR, f"with finding (n={int(positives.sum())})"),
                              ("bar", NEGATIVE_COLOUR, f"without (n={int(negatives.sum())})")],
                             box.left - 40, box.bottom + 44, 11))
    if not math.isnan(threshold):
        parts.append(_legend_row([("dashed", THRESHOLD_COLOUR, f"threshold {threshold:.3g} (fit split)")],
                                 box.left - 40, box.bottom + 62, 11))
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class Estimates:
    """Per chart row (K,): a point and its interval; nan where undefined."""

    value: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, value, low, high) -> Estimates:
        return cls(*(np.asarray(a, dtype=np.float64) for a in (value, low, high)))


def auroc_chart_svg(rows: list[str], run: Estimates, names: tuple[str, str] = ("run", "baseline"),
                    baseline: Estimates | None = None, delta: Estimates | None = None, summary_rows: int = 0,
                    level: float = 0.95) -> str:
    """AUROC per row as points with their interval as whiskers (the baseline's below the run's), and with a
    delta, a second panel of run minus baseline with its interval. The last `summary_rows` rows (the mean) are
    set apart by a rule. The AUROC axis runs from 0.5 (chance) to 1, or from the lowest value shown rounded
    down to a tenth; the delta axis is symmetric about 0."""
    row_h, left, legend_h = 22, 150, 26
    panel = 330  # with the delta panel the chart is 746 px wide: it fits an 800 px window unscaled
    delta_panel = 220 if delta is not None else 0
    width = left + panel + (delta_panel + 30 if delta is not None else 0) + 16
    height = legend_h + row_h * len(rows) + 40
    box = Box(left, legend_h, panel, row_h * len(rows))
    shown = np.concatenate([a.ravel() for e in (run, baseline) if e is not None for a in (e.value, e.low, e.high)])
    shown = shown[~np.isnan(shown)]
    start = min(0.5, math.floor(float(shown.min()) * 10) / 10) if shown.size else 0.5

    def ax(v: float) -> float:
        return box.x((v - start) / (1.0 - start))

    parts = [f'<svg class="auroc-chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'{SVG_NS} role="img">']
    for t in np.arange(start, 1.0001, 0.1):
        parts.append(svg_line(ax(t), box.top, ax(t), box.bottom, "#aaa" if abs(t - 0.5) < 1e-9 else GRID))
        parts.append(svg_text(ax(t), box.bottom + 12, f"{t:.1f}", 9, "middle"))
    parts.append(svg_text(box.x(0.5), box.bottom + 27, "AUROC", 10, "middle"))
    off = 4 if baseline is not None else 0
    for i, name in enumerate(rows):
        cy = box.top + row_h * i + row_h / 2
        bold = 'font-weight="bold"' if i >= len(rows) - summary_rows else ""
        parts.append(svg_text(left - 6, cy + 4, name, 11, "end", bold))
        parts += _estimate(run, i, ax, cy - off, ROC_COLOUR, "auroc-point", 5 if bold else 4)
        if baseline is not None:
            parts += _estimate(baseline, i, ax, cy + off, BASELINE_COLOUR, "auroc-baseline", 4 if bold else 3.5)
    if summary_rows:
        y = box.top + row_h * (len(rows) - summary_rows)
        parts.append(svg_line(8, y, width - 8, y, "#888", 1))
    parts.append(box.frame())
    legend = [("dot", ROC_COLOUR, _short(names[0]))]
    if baseline is not None:
        legend.append(("dot", BASELINE_COLOUR, _short(names[1])))
    legend.append(("whisker", "#555", f"{level:.0%} CI"))
    if delta is not None:
        legend.append(("dot", DELTA_COLOUR, "run - baseline"))
        parts += _delta_panel(rows, delta, Box(left + panel + 30, legend_h, delta_panel, row_h * len(rows)), row_h)
    parts.append(_legend_row(legend, left, 16))
    parts.append("</svg>")
    return "".join(parts)


def _short(name: str, limit: int = 44) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def _estimate(e: Estimates, i: int, ax, cy: float, colour: str, cls: str, r: float) -> list[str]:
    parts = []
    if not math.isnan(e.low[i]) and not math.isnan(e.high[i]):
        parts.append(svg_line(ax(e.low[i]), cy, ax(e.high[i]), cy, colour, 2, f'class="{cls}-ci"'))
    if not math.isnan(e.value[i]):
        parts.append(f'<circle class="{cls}" cx="{num(ax(e.value[i]))}" cy="{num(cy)}" r="{r:g}" fill="{colour}"/>')
    return parts


def _delta_panel(rows: list[str], delta: Estimates, box: Box, row_h: int) -> list[str]:
    values = np.concatenate([delta.value, delta.low, delta.high])
    values = values[~np.isnan(values)]
    largest = max(0.05, float(np.abs(values).max(initial=0.0)))
    step, _ = _nice_top(largest / 3)  # round steps, 2 to 4 ticks each side of 0
    reach = math.ceil(largest / step - 1e-9) * step

    def ax(v: float) -> float:
        return box.x((v + reach) / (2 * reach))

    parts = []
    for t in np.arange(-reach, reach + step / 2, step):
        parts.append(svg_line(ax(t), box.top, ax(t), box.bottom, "#aaa" if abs(t) < 1e-12 else GRID))
        parts.append(svg_text(ax(t), box.bottom + 12, f"{t:+g}" if abs(t) > 1e-12 else "0", 9, "middle"))
    parts.append(svg_text(box.x(0.5), box.bottom + 27, "AUROC difference", 10, "middle"))
    for i in range(len(rows)):
        parts += _estimate(delta, i, ax, box.top + row_h * i + row_h / 2, DELTA_COLOUR, "delta-point", 4)
    parts.append(box.frame())
    return parts


def _legend_row(items: list[tuple[str, str, str]], x: float, cy: float, size: float = 10) -> str:
    """A legend laid out in one row starting at x, centred on cy."""
    parts = ['<g class="legend">']
    for mark, colour, text in items:
        if mark == "dot":
            parts.append(f'<circle cx="{num(x + 5)}" cy="{num(cy)}" r="4.5" fill="{colour}"/>')
        elif mark == "bar":
            parts.append(f'<rect x="{num(x + 1)}" y="{num(cy - 4)}" width="12" height="8" fill="{colour}"/>')
        elif mark == "dashed":
            parts.append(svg_line(x, cy, x + 14, cy, colour, 2, 'stroke-dasharray="4 2"'))
        else:
            parts.append(svg_line(x, cy, x + 14, cy, colour, 2))
            parts += [svg_line(v, cy - 3, v, cy + 3, colour, 1.5) for v in (x, x + 14)]
        parts.append(svg_text(x + 18, cy + 3.5, text, size, extra='class="legend-text"'))
        x += 18 + len(text) * size * 0.56 + 16
    parts.append("</g>")
    return "".join(parts)


TRIAGE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
ANY_COLOUR = "#000000"


def triage_svg(title: str, curves: list[tuple[str, np.ndarray, np.ndarray]], targets: tuple[float, ...],
               low: float = 0.5, width: int = 460, height: int = 320) -> str:
    """Share of the worklist cleared (y) against the sensitivity kept (x, from `low` to 1) for each (name,
    sensitivity, cleared) curve; the last is drawn black and thick ("any finding"); dashed verticals at the
    target sensitivities."""
    box = Box(48, 24, width - 60, height - 76)

    def unit_x(sens: np.ndarray) -> np.ndarray:
        return (np.asarray(sens, dtype=np.float64) - low) / (1.0 - low)

    parts = [f'<svg class="triage" width="{width}" height="{height}" viewBox="0 0 {width} {height}" {SVG_NS} '
             'role="img">', svg_text(width / 2, 15, title, 12, "middle", 'font-weight="bold"')]
    x_ticks = [i / 5 for i in range(6)]
    parts += _axes(box, x_ticks, "sensitivity kept (share of positives still flagged)", "share of images cleared",
                   y_ticks=[(t, f"{t:.0%}") for t in x_ticks], x_text=lambda u: f"{low + u * (1 - low):.2f}")
    for t in targets:
        if low <= t <= 1:
            parts.append(svg_line(box.x(unit_x(t)), box.top, box.x(unit_x(t)), box.bottom, THRESHOLD_COLOUR, 1,
                                  'stroke-dasharray="4 3" class="triage-target"'))
    parts.append(box.frame())
    legend = []
    for i, (name, sens, cleared) in enumerate(curves):
        last = i == len(curves) - 1
        colour = ANY_COLOUR if last else TRIAGE_COLOURS[i % len(TRIAGE_COLOURS)]
        keep = np.asarray(sens) >= low
        if keep.any():
            parts.append(f'<polyline class="triage-curve" data-label="{escape(name)}" points="'
                         f'{box.points(unit_x(np.asarray(sens)[keep]), np.asarray(cleared)[keep])}" fill="none" '
                         f'stroke="{colour}" stroke-width="{3 if last else 2}"/>')
            legend.append(("line", colour, _short(name, 28)))
    if legend:
        parts.append(_legend(legend, box.right - 3, box.top + 6 + (MIN_FONT_PX + 5) * len(legend) + 6))
    parts.append(svg_text(width / 2, height - 6, "dashed green: target sensitivities "
                          + ", ".join(f"{t:g}" for t in targets), 11, "middle"))
    parts.append("</svg>")
    return "".join(parts)
