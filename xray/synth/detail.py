"""Small findings drawn at full resolution, with their evidence in detail that a whole-image downscale loses.

xray/synth/images.py draws anatomy and findings at most at 256 px and upscales: a 1024 px synthetic image then holds no
more about its findings than a 256 px one, so no model can gain from full resolution. With
`FindingDetail.FINE`, the findings in FINE_FINDINGS are drawn instead on a full-resolution layer, the way
small findings look on a real radiograph:

- sizes as in the clinic: nodules 0.8-3% of the image width across (about 3-13 mm on a 43 cm film), masses
  4-7%, plate-like atelectasis 4-8% long and ~0.15% thick;
- a body whose mean contrast is near the noise and well below the lung texture around it (a few grey levels);
- clutter that looks like them once downscaled: every fine image carries 25-50 vessels seen end-on, smooth
  round opacities of a nodule's size and mean contrast in the lungs (`paint_vessel_dots`). A 224 px model sees
  a nodule and a vessel as the same small bump; only full resolution shows which one has specks. This is the
  clinical reason small nodules are missed (and why they are confused with vessels), which a generator
  without clutter lacks: area averaging keeps a finding's integrated contrast, so without look-alikes a
  downscaled model would find every bump;
- the evidence in fine structure: calcification-like specks 0.12-0.2% of the width across inside a nodule,
  spiculated margins (thin radial lines) around a mass, a thin dense line for plate atelectasis. A 4.6x
  area-averaging downscale (1024 -> 224 px) divides a speck's contrast by ~20 while the lung texture it sits in
  is kept, which is why full-resolution tiles can see what a 224 px whole-image model cannot.

Sizes are fractions of the image side, so an archive written at 512 px carries the same findings at half the
pixel detail. Same determinism rule as xray/synth/images.py: only +, *, sqrt, clip and smoothsteps on arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import numpy as np

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the image side


class FindingDetail(StrEnum):
    """How findings are drawn: coarse (every finding at <= 256 px, upscaled: the original generator) or fine
    (FINE_FINDINGS at full resolution with detail a downscale loses)."""

    COARSE = "coarse"
    FINE = "fine"


FINE_FINDINGS = ("Atelectasis", "Mass", "Nodule")
# Contrasts, as fractions of full scale (255 grey levels): the faint bodies are 1-2 grey levels, the fine
# structure ~25, against uniform pixel noise of 3.3 levels peak to peak and lung texture of ~5 levels.
BODY_CONTRAST = 0.006
DETAIL_CONTRAST = 0.1  # dense, like calcification: ~25 grey levels
MIN_DOT_PX = 0.75  # a speck narrower than this is spread over this radius with its integrated contrast kept


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class _Window:
    """Pixel-centre coordinates (fractions of the side) of the part of a (size, size) layer around a finding."""

    def __init__(self, size: int, cy: float, cx: float, reach: float) -> None:
        lo_y, hi_y = max(0, int((cy - reach) * size)), min(size, int((cy + reach) * size) + 2)
        lo_x, hi_x = max(0, int((cx - reach) * size)), min(size, int((cx + reach) * size) + 2)
        self.rows, self.cols = slice(lo_y, hi_y), slice(lo_x, hi_x)
        self.y = ((np.arange(lo_y, hi_y, dtype=np.float32) + 0.5) / size)[:, None]
        self.x = ((np.arange(lo_x, hi_x, dtype=np.float32) + 0.5) / size)[None, :]
        self.size = size

    def add(self, layer: np.ndarray, values: np.ndarray) -> None:
        layer[self.rows, self.cols] += values


def _disc(w: _Window, cy: float, cx: float, rad: float, edge: float) -> np.ndarray:
    d = np.sqrt((w.y - cy) ** 2 + (w.x - cx) ** 2) / rad
    return _smoothstep((1.0 - d) / edge)


def _dot(w: _Window, cy: float, cx: float, rad: float, contrast: float) -> np.ndarray:
    """A speck of radius `rad` (fraction of the side), its contrast kept in total when below MIN_DOT_PX."""
    r_px = rad * w.size
    spread = max(r_px, MIN_DOT_PX)
    gain = contrast * (r_px / spread) ** 2
    d = np.sqrt((w.y - cy) ** 2 + (w.x - cx) ** 2) * w.size / spread
    return gain * _smoothstep(1.5 * (1.0 - d))


def _segment(w: _Window, y0: float, x0: float, y1: float, x1: float, half_width: float,
             contrast: float) -> np.ndarray:
    """A thin line from (y0, x0) to (y1, x1), `half_width` a fraction of the side (kept in total below a pixel)."""
    dy, dx = y1 - y0, x1 - x0
    length2 = dy * dy + dx * dx
    t = np.clip(((w.y - y0) * dy + (w.x - x0) * dx) / length2, 0.0, 1.0)
    dist_px = np.sqrt((w.y - y0 - t * dy) ** 2 + (w.x - x0 - t * dx) ** 2) * w.size
    hw_px = half_width * w.size
    spread = max(hw_px, MIN_DOT_PX)
    return contrast * (hw_px / spread) * _smoothstep(1.5 * (1.0 - dist_px / spread))


def _unit(rng: np.random.Generator) -> tuple[float, float]:
    """A uniformly random direction (dy, dx), without trigonometry."""
    while True:
        dy, dx = rng.uniform(-1.0, 1.0, size=2)
        n2 = dy * dy + dx * dx
        if 0.01 < n2 <= 1.0:
            n = float(np.sqrt(n2))
            return float(dy) / n, float(dx) / n


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return lo * (hi / lo) ** float(rng.random())  # small ones more common, as in screening series


def paint_nodule(layer: np.ndarray, cy: float, cx: float, scale: float, rng: np.random.Generator) -> Box:
    """A faint round opacity 0.8-3% of the width across holding 6-14 calcification-like specks."""
    rad = _log_uniform(rng, 0.004, 0.015) * scale
    w = _Window(layer.shape[0], cy, cx, 1.3 * rad)
    values = BODY_CONTRAST * _disc(w, cy, cx, rad, edge=0.3)
    for _ in range(int(rng.integers(6, 15))):
        u, v = rng.uniform(-1.0, 1.0, size=2)
        while u * u + v * v > 0.6:
            u, v = rng.uniform(-1.0, 1.0, size=2)
        values = values + _dot(w, cy + v * rad, cx + u * rad, rng.uniform(0.0006, 0.001), DETAIL_CONTRAST)
    w.add(layer, values)
    return cx - 1.2 * rad, cy - 1.2 * rad, cx + 1.2 * rad, cy + 1.2 * rad


def paint_mass(layer: np.ndarray, cy: float, cx: float, scale: float, rng: np.random.Generator) -> Box:
    """A faint opacity 4-7% of the width across with 8-14 thin spicules radiating from its margin."""
    rad = rng.uniform(0.02, 0.035) * scale
    reach = 1.7 * rad
    w = _Window(layer.shape[0], cy, cx, reach)
    values = BODY_CONTRAST * _disc(w, cy, cx, rad, edge=0.25)
    for _ in range(int(rng.integers(8, 15))):
        dy, dx = _unit(rng)
        start, end = rad * rng.uniform(0.7, 0.9), rad * rng.uniform(1.25, 1.6)
        values = values + _segment(w, cy + start * dy, cx + start * dx, cy + end * dy, cx + end * dx,
                                   rng.uniform(0.0005, 0.0008), DETAIL_CONTRAST)
    w.add(layer, values)
    return cx - reach, cy - reach, cx + reach, cy + reach


def paint_atelectasis(layer: np.ndarray, cy: float, cx: float, scale: float, rng: np.random.Generator) -> Box:
    """Plate-like atelectasis: a thin dense line 4-8% of the width long in a faint band of volume loss."""
    half_len = rng.uniform(0.02, 0.04) * scale
    tilt = rng.uniform(-0.25, 0.25)
    norm = float(np.sqrt(1.0 + tilt * tilt))
    dy, dx = tilt / norm, 1.0 / norm
    w = _Window(layer.shape[0], cy, cx, half_len + 0.01)
    values = _segment(w, cy - half_len * dy, cx - half_len * dx, cy + half_len * dy, cx + half_len * dx,
                      rng.uniform(0.0006, 0.0009), DETAIL_CONTRAST)
    values = values + _segment(w, cy - half_len * dy, cx - half_len * dx, cy + half_len * dy, cx + half_len * dx,
                               0.006, BODY_CONTRAST)
    w.add(layer, values)
    ry = abs(tilt) * half_len + 0.008
    return cx - half_len, cy - ry, cx + half_len, cy + ry


VESSEL_DOTS = (25, 51)
"""Vessels seen end-on per image (drawn at random from this half-open range)."""


def paint_vessel_dots(layer: np.ndarray, centres: list[tuple[float, float]], rng: np.random.Generator) -> None:
    """Smooth round opacities (vessels seen end-on) at `centres`: a nodule's size distribution and its mean
    contrast once downscaled (body plus specks averaged: ~2-4 grey levels), but no specks and no rim."""
    for cy, cx in centres:
        rad = _log_uniform(rng, 0.004, 0.015)
        w = _Window(layer.shape[0], cy, cx, 1.3 * rad)
        w.add(layer, rng.uniform(0.008, 0.016) * _disc(w, cy, cx, rad, edge=0.6))


FinePainter = Callable[[np.ndarray, float, float, float, np.random.Generator], Box]
FINE_PAINTERS: dict[str, FinePainter] = {
    "Atelectasis": paint_atelectasis, "Mass": paint_mass, "Nodule": paint_nodule,
}
