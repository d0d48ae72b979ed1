"""Heatmaps drawn over X-rays for the report: viridis, each map's colour range, the blended PNG, the SVG that
places it with the ground-truth boxes, and the colour bar that states the scale.

Built on xray/report/svg.py; never imports plots.py.
"""

from __future__ import annotations

import base64
import io
from html import escape

import numpy as np
from PIL import Image

from xray.report.svg import BOX_COLOUR, SVG_NS, Box, num, svg_line, svg_text

# matplotlib's viridis (perceptually uniform, readable in grey and by colour-blind readers) at 17 even steps;
# linear interpolation between them stays within 2/255 of the full 256-entry table.
VIRIDIS = np.array([
    (68, 1, 84), (72, 24, 106), (71, 45, 123), (66, 64, 134), (59, 82, 139), (51, 99, 141), (44, 114, 142),
    (38, 130, 142), (33, 145, 140), (31, 160, 136), (40, 174, 128), (63, 188, 115), (94, 201, 98),
    (132, 212, 75), (173, 220, 48), (216, 226, 25), (253, 231, 37)], dtype=np.float64)
HEAT_OPACITY = 0.45  # of the heatmap colour over the X-ray, the same for every value


def colormap(values: np.ndarray) -> np.ndarray:
    """(...) values in [0, 1] (clipped) -> (..., 3) float RGB on viridis."""
    pos = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0) * (len(VIRIDIS) - 1)
    i = np.minimum(pos.astype(int), len(VIRIDIS) - 2)
    frac = (pos - i)[..., None]
    return VIRIDIS[i] * (1.0 - frac) + VIRIDIS[i + 1] * frac


def colour_bar_svg(caption: str, width: int = 340,
                   ticks: tuple[str, ...] = ("0", "0.25", "0.5", "0.75", "1")) -> str:
    """The heatmaps' colour scale: viridis from its dark to its yellow end with evenly spaced tick labels (values,
    or words such as 'lowest' / 'highest' when every image has its own range), as a horizontal bar."""
    stops = "".join(f'<stop offset="{k / (len(VIRIDIS) - 1):.4f}" stop-color="rgb({r:.0f},{g:.0f},{b:.0f})"/>'
                    for k, (r, g, b) in enumerate(VIRIDIS))
    box = Box(10, 20, width - 20, 16)
    parts = [f'<svg class="colour-bar" width="{width}" height="58" viewBox="0 0 {width} 58" {SVG_NS} role="img">',
             f'<defs><linearGradient id="viridis" x1="0" x2="1" y1="0" y2="0">{stops}</linearGradient></defs>',
             svg_text(box.left, 13, caption, 10),
             f'<rect class="colour-bar-scale" x="{num(box.left)}" y="{num(box.top)}" width="{num(box.width)}" '
             f'height="{num(box.height)}" fill="url(#viridis)" stroke="#444"/>']
    for k, text in enumerate(ticks):
        t = k / max(len(ticks) - 1, 1)
        parts.append(svg_line(box.x(t), box.bottom, box.x(t), box.bottom + 4, "#444"))
        anchor = "start" if k == 0 else "end" if k == len(ticks) - 1 else "middle"
        parts.append(svg_text(box.x(t), box.bottom + 15, text, 11, anchor))
    parts.append("</svg>")
    return "".join(parts)


def heatmap_scale(heat: np.ndarray) -> tuple[float, float]:
    """The range a heatmap is coloured over so its structure shows: its own lowest and highest cell (a map
    whose cells are all alike gets [0, 1], where it reads as the flat value it is)."""
    h = np.nan_to_num(np.asarray(heat, dtype=np.float64))
    if h.size == 0:
        return 0.0, 1.0
    lo, hi = float(h.min()), float(h.max())
    return (lo, hi) if hi - lo > 1e-6 else (0.0, 1.0)


def heatmap_overlay_png(gray: np.ndarray, heat: np.ndarray, size: int = 256, opacity: float = HEAT_OPACITY,
                        scale: tuple[float, float] = (0.0, 1.0)) -> tuple[bytes, int, int]:
    """(H, W) uint8 image and (gh, gw) heatmap of one label (probabilities) -> (PNG bytes, width, height): the
    image with its longest side `size`, and the heatmap stretched over it on viridis from scale[0] (dark) to
    scale[1] (yellow), blended at `opacity`; the default (0, 1) is one absolute scale for every image."""
    lo, hi = scale
    img = Image.fromarray(np.asarray(gray, dtype=np.uint8))
    zoom = size / max(img.size)
    img = img.resize((max(1, round(img.width * zoom)), max(1, round(img.height * zoom))),
                     Image.Resampling.BILINEAR)
    heat = np.clip((np.nan_to_num(np.asarray(heat, dtype=np.float32)) - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    heat = heat.astype(np.float32)
    up = np.asarray(Image.fromarray(heat).resize(img.size, Image.Resampling.BILINEAR), dtype=np.float64)
    base = np.repeat(np.asarray(img, dtype=np.float64)[..., None], 3, axis=2)
    rgb = base * (1.0 - opacity) + colormap(up) * opacity
    out = io.BytesIO()
    Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue(), img.width, img.height


def overlay_svg(png: bytes, width: int, height: int, boxes: tuple[tuple[str, float, float, float, float], ...],
                label: str) -> str:
    """The overlay image with ground-truth boxes (label, x, y, w, h in its pixels): the shown label's solid,
    other labels' dashed, each named."""
    data = base64.b64encode(png).decode("ascii")
    parts = [f'<svg class="overlay-image" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'{SVG_NS} role="img"><image href="data:image/png;base64,{data}" x="0" y="0" width="{width}" '
             f'height="{height}"/>']
    for name, x, y, w, h in boxes:
        dash = "" if name == label else ' stroke-dasharray="5 3"'
        parts.append(f'<rect class="gt-box" data-label="{escape(name)}" x="{num(x)}" y="{num(y)}" '
                     f'width="{num(w)}" height="{num(h)}" fill="none" stroke="{BOX_COLOUR}" stroke-width="2"{dash}/>')
        ty = y - 3 if y > 12 else min(y + h + 11, height - 2)
        parts.append(svg_text(x, ty, name, 10, "start", f'fill="{BOX_COLOUR}" stroke="black" stroke-width="2.5" '
                                                     'paint-order="stroke" font-weight="bold"'))
    parts.append("</svg>")
    return "".join(parts)
