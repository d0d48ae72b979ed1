"""SVG primitives of the report's drawings: the palette (tests find plots in screenshots by these colours), text
that is never under MIN_FONT_PX, lines, and the box that maps unit coordinates into a plot area.

Imports nothing else from tilescope; plots.py (charts) and overlays.py (heatmaps over X-rays) build on it.
"""

from __future__ import annotations

from html import escape

import numpy as np

ROC_COLOUR = "#1f77b4"  # the run: ROC curves, AUROC points
BASELINE_COLOUR = "#ff7f0e"  # the baseline run (second --results)
DELTA_COLOUR = "#6a3d9a"  # run minus baseline
POSITIVE_COLOUR = "#d62728"  # histogram bars of images with the finding
NEGATIVE_COLOUR = "#8c8c8c"  # histogram bars of images without it
THRESHOLD_COLOUR = "#2ca02c"  # the fitted threshold and its operating point
BOX_COLOUR = "#ff00ff"  # BBox_List ground-truth boxes (a colour the heatmap's colormap never takes)
GRID = "#e6e6e6"
SVG_NS = 'xmlns="http://www.w3.org/2000/svg"'

def num(v: float) -> str:
    return f"{v:.1f}"


MIN_FONT_PX = 11
"""No text on the page is smaller (the plots are drawn at 1:1, so SVG units are CSS pixels)."""


def svg_text(x: float, y: float, body: str, size: float = 11, anchor: str = "start", extra: str = "") -> str:
    size = max(size, MIN_FONT_PX)
    return (f'<text x="{num(x)}" y="{num(y)}" font-size="{size:g}" text-anchor="{anchor}" '
            f'font-family="sans-serif" {extra}>{escape(body)}</text>')


def svg_line(x1: float, y1: float, x2: float, y2: float, colour: str, width: float = 1, extra: str = "") -> str:
    return (f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" stroke="{colour}" '
            f'stroke-width="{width:g}" {extra}/>')


class Box:
    """Maps unit coordinates ([0, 1] x [0, 1], y up) into a plot area of an SVG."""

    def __init__(self, left: float, top: float, width: float, height: float) -> None:
        self.left, self.top, self.width, self.height = left, top, width, height

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def right(self) -> float:
        return self.left + self.width

    def x(self, u: float) -> float:
        return self.left + u * self.width

    def y(self, v: float) -> float:
        return self.top + (1.0 - v) * self.height

    def points(self, us: np.ndarray, vs: np.ndarray) -> str:
        return " ".join(f"{num(self.x(u))},{num(self.y(v))}" for u, v in zip(us, vs, strict=True))

    def frame(self) -> str:
        return (f'<rect x="{num(self.left)}" y="{num(self.top)}" width="{num(self.width)}" '
                f'height="{num(self.height)}" fill="none" stroke="#444" stroke-width="1"/>')
