"""The plots of `tilescope report`, drawn in Python as inline SVG (and one PNG kind), so the page needs no
JavaScript, no fonts and no network.

Every function returns a complete `<svg>` element (a string) or PNG bytes. The colours are module
constants: tests find the rendered plots in a screenshot by them.
"""

from __future__ import annotations

import io
import math
from html import escape

import numpy as np
from PIL import Image

ROC_COLOUR = "#1f77b4"  # the run's ROC curves and AUROC points
BASELINE_COLOUR = "#ff7f0e"  # the baseline run (second --results)
POSITIVE_COLOUR = "#d62728"  # histogram bars of images with the finding
NEGATIVE_COLOUR = "#8c8c8c"  # histogram bars of images without it
THRESHOLD_COLOUR = "#2ca02c"  # the fitted threshold
_FRAME = 'fill="none" stroke="#444" stroke-width="1"'
_SVG_NS = 'xmlns="http://www.w3.org/2000/svg"'


def _num(v: float) -> str:
    return f"{v:.1f}"


def _text(x: float, y: float, body: str, size: int = 11, anchor: str = "start", extra: str = "") -> str:
    return (f'<text x="{_num(x)}" y="{_num(y)}" font-size="{size}" text-anchor="{anchor}" '
            f'font-family="sans-serif" {extra}>{escape(body)}</text>')


def format_metric(v: float | None, digits: int = 3) -> str:
    """A metric for a caption or a sentence: `digits` decimals, or 'n/a' when undefined (None or NaN)."""
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"


class _Box:
    """Maps unit coordinates ([0, 1] x [0, 1], y up) into a plot area of an SVG."""

    def __init__(self, left: float, top: float, width: float, height: float) -> None:
        self.left, self.top, self.width, self.height = left, top, width, height

    def x(self, u: float) -> float:
        return self.left + u * self.width

    def y(self, v: float) -> float:
        return self.top + (1.0 - v) * self.height

    def points(self, us: np.ndarray, vs: np.ndarray) -> str:
        return " ".join(f"{_num(self.x(u))},{_num(self.y(v))}" for u, v in zip(us, vs, strict=True))

    def frame(self) -> str:
        return f'<rect x="{_num(self.left)}" y="{_num(self.top)}" width="{_num(self.width)}" ' \
               f'height="{_num(self.height)}" {_FRAME}/>'


def roc_svg(label: str, fpr: np.ndarray, tpr: np.ndarray, auroc: float, low: float, high: float,
            baseline: tuple[np.ndarray, np.ndarray] | None = None, size: int = 240) -> str:
    """One label's ROC curve (fpr, tpr (K,)), with the baseline run's curve dashed when given."""
    box = _Box(40, 22, size - 50, size - 66)
    parts = [f'<svg class="roc" data-label="{escape(label)}" width="{size}" height="{size}" '
             f'viewBox="0 0 {size} {size}" {_SVG_NS} role="img">',
             _text(size / 2, 14, label, 12, "middle", 'font-weight="bold"'), box.frame(),
             f'<line x1="{_num(box.x(0))}" y1="{_num(box.y(0))}" x2="{_num(box.x(1))}" y2="{_num(box.y(1))}" '
             'stroke="#bbb" stroke-dasharray="4 3"/>']
    for t in (0.0, 0.5, 1.0):
        parts.append(_text(box.x(t), box.y(0) + 12, f"{t:g}", 9, "middle"))
        parts.append(_text(box.left - 4, box.y(t) + 3, f"{t:g}", 9, "end"))
    parts.append(_text(box.x(0.5), size - 18, "false positive rate", 9, "middle"))
    parts.append(_text(10, box.y(0.5), "true positive rate", 9, "middle",
                       f'transform="rotate(-90 10 {_num(box.y(0.5))})"'))
    if baseline is not None and baseline[0].size:
        parts.append(f'<polyline class="roc-baseline" points="{box.points(*baseline)}" fill="none" '
                     f'stroke="{BASELINE_COLOUR}" stroke-width="2" stroke-dasharray="5 3"/>')
    if fpr.size:
        parts.append(f'<polyline class="roc-curve" points="{box.points(fpr, tpr)}" fill="none" '
                     f'stroke="{ROC_COLOUR}" stroke-width="2.5"/>')
        caption = f"AUROC {format_metric(auroc)} [{format_metric(low)}, {format_metric(high)}]"
    else:
        caption = "one class only: no curve"
    parts.append(_text(size / 2, size - 4, caption, 10, "middle"))
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(label: str, edges: np.ndarray, positives: np.ndarray, negatives: np.ndarray,
                  threshold: float, size: tuple[int, int] = (240, 160)) -> str:
    """Score histograms of one label: each class as a share of its own images per bin (B bins, edges (B+1,)),
    side by side, with the fitted threshold as a vertical line."""
    width, height = size
    box = _Box(8, 20, width - 16, height - 44)
    shares = [c / c.sum() if c.sum() else np.zeros_like(c, dtype=float) for c in (negatives, positives)]
    top = max(float(max(s.max(initial=0.0) for s in shares)), 1e-9)
    parts = [f'<svg class="histogram" data-label="{escape(label)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" {_SVG_NS} role="img">',
             _text(width / 2, 13, label, 12, "middle", 'font-weight="bold"'), box.frame()]
    for share, colour, offset, cls in ((shares[0], NEGATIVE_COLOUR, 0.0, "neg"),
                                       (shares[1], POSITIVE_COLOUR, 0.5, "pos")):
        for b, value in enumerate(share):
            if value <= 0:
                continue
            lo, hi = edges[b], edges[b + 1]
            x0 = box.x(lo + (hi - lo) * offset)
            bar_w = box.width * (hi - lo) / 2
            y0 = box.y(value / top)
            parts.append(f'<rect class="bar-{cls}" x="{_num(x0)}" y="{_num(y0)}" width="{_num(bar_w)}" '
                         f'height="{_num(box.y(0) - y0)}" fill="{colour}"/>')
    if not math.isnan(threshold):
        tx = box.x(min(max(threshold, 0.0), 1.0))
        parts.append(f'<line class="threshold" x1="{_num(tx)}" y1="{_num(box.top)}" x2="{_num(tx)}" '
                     f'y2="{_num(box.y(0))}" stroke="{THRESHOLD_COLOUR}" stroke-width="2" stroke-dasharray="4 2"/>')
    parts.append(_text(box.x(0), height - 10, "0", 9, "middle"))
    parts.append(_text(box.x(1), height - 10, "1", 9, "middle"))
    parts.append(_text(width / 2, height - 10, f"n+ {int(positives.sum())}  n- {int(negatives.sum())}", 9, "middle"))
    parts.append("</svg>")
    return "".join(parts)


def auroc_chart_svg(labels: list[str], auroc: np.ndarray, low: np.ndarray, high: np.ndarray,
                    baseline: np.ndarray | None = None, width: int = 560) -> str:
    """Per-label AUROC (L,) as points with their interval as whiskers, the baseline's AUROC as a second point.

    The axis runs from 0.5 (chance) to 1, or from the lowest value shown rounded down to a tenth.
    """
    row_h, left = 20, 150
    height = 30 + row_h * len(labels) + 20
    box = _Box(left, 20, width - left - 16, row_h * len(labels))
    shown = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in (auroc, low, high)
                            + ((baseline,) if baseline is not None else ())])
    shown = shown[~np.isnan(shown)]
    start = min(0.5, math.floor(float(shown.min()) * 10) / 10) if shown.size else 0.5

    def ax(v: float) -> float:  # start..1 -> plot x
        return box.x((v - start) / (1.0 - start))

    parts = [f'<svg class="auroc-chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'{_SVG_NS} role="img">', box.frame()]
    for t in np.arange(start, 1.0001, 0.1):
        parts.append(f'<line x1="{_num(ax(t))}" y1="{_num(box.top)}" x2="{_num(ax(t))}" '
                     f'y2="{_num(box.top + box.height)}" stroke="{"#aaa" if abs(t - 0.5) < 1e-9 else "#e3e3e3"}"/>')
        parts.append(_text(ax(t), box.top + box.height + 13, f"{t:.1f}", 9, "middle"))
    for i, label in enumerate(labels):
        cy = box.top + row_h * i + row_h / 2
        parts.append(_text(left - 6, cy + 4, label, 11, "end"))
        if not math.isnan(low[i]):
            parts.append(f'<line x1="{_num(ax(low[i]))}" y1="{_num(cy)}" x2="{_num(ax(high[i]))}" y2="{_num(cy)}" '
                         f'stroke="{ROC_COLOUR}" stroke-width="2"/>')
        if baseline is not None and not math.isnan(baseline[i]):
            parts.append(f'<circle class="auroc-baseline" cx="{_num(ax(baseline[i]))}" cy="{_num(cy)}" r="4" '
                         f'fill="{BASELINE_COLOUR}"/>')
        if not math.isnan(auroc[i]):
            parts.append(f'<circle class="auroc-point" cx="{_num(ax(auroc[i]))}" cy="{_num(cy)}" r="5" '
                         f'fill="{ROC_COLOUR}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _heat_colours(v: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) float RGB: blue -> cyan -> yellow -> red."""
    stops = np.array([[0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]], dtype=np.float64)
    pos = np.clip(v, 0.0, 1.0) * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    frac = (pos - i)[..., None]
    return stops[i] * (1.0 - frac) + stops[i + 1] * frac


def heatmap_overlay_png(gray: np.ndarray, heat: np.ndarray, size: int = 256, opacity: float = 0.55) -> bytes:
    """(H, W) uint8 image and (gh, gw) heatmap of one label -> PNG bytes of the image, longest side `size`,
    with the heatmap (scaled to its own maximum) blended over it: hotter cells redder and more opaque."""
    img = Image.fromarray(np.asarray(gray, dtype=np.uint8))
    scale = size / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                     Image.Resampling.BILINEAR)
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32))
    peak = float(heat.max())
    norm = heat / peak if peak > 0 else np.zeros_like(heat)
    up = np.asarray(Image.fromarray(norm).resize(img.size, Image.Resampling.BILINEAR), dtype=np.float64)
    base = np.repeat(np.asarray(img, dtype=np.float64)[..., None], 3, axis=2)
    alpha = (opacity * np.clip(up, 0.0, 1.0))[..., None]
    rgb = base * (1.0 - alpha) + _heat_colours(up) * alpha
    out = io.BytesIO()
    Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()
