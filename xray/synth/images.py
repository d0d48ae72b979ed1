"""Deterministic synthetic chest-X-ray-like images with learnable, localized findings, and NIH-style metadata
records (rendered to the NIH files by xray/synth/nih_files.py).

`synth_case(index, seed, size)` depends only on its arguments: the same triple always gives the same
pixels, findings, boxes and patient. Patients own consecutive indices: every block of 12 indices holds
4 patients with 1..9 images each, so n images hold about n/3 patients.

Why no np.sin / np.exp here: numpy dispatches float transcendental functions to SIMD kernels whose
last-ulp results differ between CPUs, which would make PNG bytes machine dependent. Shapes are built
from +, *, sqrt (correctly rounded), clip and polynomial smoothsteps only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial

import numpy as np
from PIL import Image

from xray.codec.png_encode import REAL_FILTER_MIX, encode_png  # noqa: F401  (synth's PNG writer; its public name here)
from xray.metadata.labels import LABELS
from xray.synth.detail import FINE_FINDINGS, FINE_PAINTERS, VESSEL_DOTS, FindingDetail, paint_vessel_dots
from xray.synth.nih_files import CaseRecord

P_NO_FINDING = 0.40
# P(1..4 findings | abnormal): mean 2.3 findings over 14 labels -> each label in ~10% of images.
N_FINDINGS_P = (0.25, 0.35, 0.25, 0.15)
IMAGES_PER_BLOCK, PATIENTS_PER_BLOCK = 12, 4
WORK_RES = 256  # anatomy and findings are drawn at most at this resolution, then upscaled
MIN_SIZE = 32
# Findings whose box covers well under 5% of the image: what a whole-image downscale tends to lose.
SMALL_FINDINGS = ("Atelectasis", "Mass", "Nodule", "Pneumothorax", "Pleural_Thickening", "Hernia")
# Focal findings whose size `finding_scale` changes (the diffuse ones keep theirs: an enlarged heart or a
# hyperlucent lung has no "small" version). The same random draws are made at any scale.
SCALED_FINDINGS = ("Atelectasis", "Mass", "Nodule", "Infiltration", "Pneumonia", "Consolidation", "Hernia")
_REAL_SPACINGS_MM = (0.139, 0.143, 0.168, 0.171)  # at the original ~2500 px width
# Width of the uniform per-pixel noise, as a fraction of full scale: 0.013 gives ~410 KB PNGs at 1024 px, the
# size of NIH's (0.06, before issue 16, gave ~620 KB: more noise than a real radiograph carries).
NOISE_AMPLITUDE = 0.013

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the image side


@dataclass(frozen=True, eq=False)
class SynthCase(CaseRecord):
    """A CaseRecord with its pixels: image is uint8 (size, size), 0 = black (air)."""

    image: np.ndarray

    def record(self) -> CaseRecord:
        """The metadata alone, to keep after the image is encoded."""
        return CaseRecord(**{f.name: getattr(self, f.name) for f in fields(CaseRecord)})


@dataclass(frozen=True)
class _Anatomy:
    """Per-patient geometry, fractions of the image side; lung 0 is on the image left."""

    lung_cx: tuple[float, float]
    lung_cy: float
    lung_rx: float
    lung_ry: float
    heart_cx: float
    heart_cy: float
    heart_rx: float
    heart_ry: float


@dataclass(frozen=True)
class _Grid:
    """Pixel-centre coordinates in [0, 1]: y is (r, 1), x is (1, r)."""

    y: np.ndarray
    x: np.ndarray
    r: int
    finding_scale: float = 1.0
    """Size factor for the focal findings (SCALED_FINDINGS); 1.0 draws them at their usual size."""


def patient_of(index: int, seed: int) -> tuple[int, int]:
    """index -> (patient_id >= 1, follow_up >= 0); a block of 12 indices is cut into 4 patients."""
    block, pos = divmod(index, IMAGES_PER_BLOCK)
    cut_rng = np.random.default_rng([seed, 1, block])
    cuts = np.sort(cut_rng.choice(np.arange(1, IMAGES_PER_BLOCK), size=PATIENTS_PER_BLOCK - 1, replace=False))
    j = int(np.searchsorted(cuts, pos, side="right"))
    start = 0 if j == 0 else int(cuts[j - 1])
    return block * PATIENTS_PER_BLOCK + j + 1, pos - start


def draw_findings(rng: np.random.Generator) -> tuple[str, ...]:
    """~40% no finding; otherwise 1..4 distinct labels, uniformly chosen, in LABELS order."""
    if rng.random() < P_NO_FINDING:
        return ()
    k = int(rng.choice(len(N_FINDINGS_P), p=N_FINDINGS_P)) + 1
    chosen = rng.choice(len(LABELS), size=k, replace=False)
    return tuple(LABELS[i] for i in sorted(chosen.tolist()))


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _ellipse(g: _Grid, cy: float, cx: float, ry: float, rx: float, edge: float = 0.15) -> np.ndarray:
    """Soft (r, r) mask: 1 inside the ellipse, falling to 0 over `edge` of its radius."""
    d = np.sqrt(((g.y - cy) / ry) ** 2 + ((g.x - cx) / rx) ** 2)
    return _smoothstep((1.0 - d) / edge)


def _lerp(img: np.ndarray, value: float, mask: np.ndarray) -> None:
    img += (value - img) * mask


def _smooth_noise(rng: np.random.Generator, r: int, cells: int) -> np.ndarray:
    """(r, r) float32 noise in [0, 1] that varies over about r / cells pixels."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    return np.asarray(Image.fromarray(coarse).resize((r, r), Image.Resampling.BILINEAR))


def _triangle(v: np.ndarray) -> np.ndarray:
    """Period-1 triangle wave in [0, 1], peaking at integers."""
    return np.abs(2.0 * (v - np.floor(v)) - 1.0)


def _anatomy(rng: np.random.Generator) -> _Anatomy:
    spread = rng.uniform(0.17, 0.20)
    return _Anatomy(
        lung_cx=(0.5 - spread, 0.5 + spread), lung_cy=rng.uniform(0.44, 0.48),
        lung_rx=rng.uniform(0.14, 0.16), lung_ry=rng.uniform(0.28, 0.32),
        heart_cx=rng.uniform(0.54, 0.57), heart_cy=rng.uniform(0.64, 0.67),
        heart_rx=rng.uniform(0.12, 0.14), heart_ry=rng.uniform(0.09, 0.11),
    )


def _lung_mask(g: _Grid, a: _Anatomy, side: int) -> np.ndarray:
    return _ellipse(g, a.lung_cy, a.lung_cx[side], a.lung_ry, a.lung_rx, edge=0.08)


def _background(g: _Grid, a: _Anatomy, rng: np.random.Generator, view: str) -> np.ndarray:
    """(r, r) float32 in ~[0, 1]: body, lung fields with ribs, mediastinum, spine, heart, clavicles."""
    img = np.full((g.r, g.r), 0.05, dtype=np.float32)
    _lerp(img, 0.55, _ellipse(g, 0.64, 0.5, 0.72, 0.47, edge=0.04))
    lungs = np.maximum(_lung_mask(g, a, 0), _lung_mask(g, a, 1))
    texture = _smooth_noise(rng, g.r, max(4, g.r // 12))
    _lerp(img, 0.2, lungs * (0.9 + 0.1 * texture))
    side = np.abs(g.x - 0.5)
    ribs = _smoothstep((_triangle(9.0 * g.y - 6.0 * side * side) - 0.7) / 0.25)
    img += 0.12 * ribs * lungs
    heart_scale = 1.08 if view == "AP" else 1.0  # AP projection magnifies the heart
    _lerp(img, 0.7, _ellipse(g, a.heart_cy, a.heart_cx, a.heart_ry * heart_scale, a.heart_rx * heart_scale))
    _lerp(img, 0.7, _ellipse(g, 0.45, 0.5, 0.42, 0.06, edge=0.3))
    vertebrae = 0.7 + 0.3 * _smoothstep((_triangle(25.0 * g.y) - 0.2) / 0.3)
    img += 0.12 * vertebrae * _ellipse(g, 0.5, 0.5, 0.5, 0.03, edge=0.3)
    clavicle_y = 0.15 + 0.25 * side * side
    clavicles = _smoothstep((0.014 - np.abs(g.y - clavicle_y)) / 0.01) * _smoothstep((0.3 - side) / 0.05)
    img += 0.18 * clavicles * _smoothstep((side - 0.04) / 0.03)
    return img


def _lung_point(rng: np.random.Generator, a: _Anatomy, side: int, y_lo: float = -0.7,
                y_hi: float = 0.7) -> tuple[float, float]:
    """A (cy, cx) well inside lung `side`; y_lo..y_hi bound the vertical position in lung radii."""
    while True:
        u, v = rng.uniform(-0.65, 0.65), rng.uniform(y_lo, y_hi)
        if u * u + v * v < 0.45:
            return a.lung_cy + v * a.lung_ry, a.lung_cx[side] + u * a.lung_rx


def _box(cy: float, cx: float, ry: float, rx: float) -> Box:
    return cx - rx, cy - ry, cx + rx, cy + ry


def _paint_nodule(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator) -> Box:
    cy, cx = _lung_point(rng, a, int(rng.integers(2)))
    rad = rng.uniform(0.010, 0.014) * g.finding_scale
    img += 0.32 * _ellipse(g, cy, cx, rad, rad, edge=0.4)
    return _box(cy, cx, 1.3 * rad, 1.3 * rad)


def _paint_mass(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator) -> Box:
    cy, cx = _lung_point(rng, a, int(rng.integers(2)))
    rad = rng.uniform(0.04, 0.055) * g.finding_scale
    lobes = np.zeros_like(img)
    for dy, dx in rng.uniform(-0.35, 0.35, size=(3, 2)):  # lobulated: a union of offset discs
        lobes = np.maximum(lobes, _ellipse(g, cy + dy * rad, cx + dx * rad, 0.75 * rad, 0.75 * rad, 0.3))
    img += 0.3 * lobes
    return _box(cy, cx, 1.15 * rad, 1.15 * rad)


def _paint_atelectasis(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator) -> Box:
    cy, cx = _lung_point(rng, a, int(rng.integers(2)), 0.2, 0.65)
    half_len, half_th, tilt = rng.uniform(0.06, 0.09), rng.uniform(0.007, 0.011), rng.uniform(-0.25, 0.25)
    half_len, half_th = half_len * g.finding_scale, half_th * g.finding_scale
    band_y = cy + tilt * (g.x - cx)
    img += 0.3 * _smoothstep((half_th - np.abs(g.y - band_y)) / half_th) \
        * _smoothstep((half_len - np.abs(g.x - cx)) / 0.02)
    img += 0.06 * _ellipse(g, cy, cx, 3 * half_th, half_len, edge=0.5)  # volume loss haze
    return _box(cy, cx, 3 * half_th + abs(tilt) * half_len, half_len)


def _paint_cardiomegaly(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator) -> Box:
    rx, ry = a.heart_rx * rng.uniform(1.45, 1.65), a.heart_ry * rng.uniform(1.15, 1.3)
    cx = a.heart_cx + 0.3 * (rx - a.heart_rx)
    _lerp(img, 0.72, _ellipse(g, a.heart_cy, cx, ry, rx))
    return _box(a.heart_cy, cx, ry, rx)


def _paint_effusion(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator) -> Box:
    side = int(rng.integers(2))
    outward = 1.0 if side else -1.0
    lateral, medial = a.lung_cx[side] + outward * a.lung_rx, a.lung_cx[side] - outward * a.lung_rx
    depth, bottom = a.lung_ry * rng.uniform(0.4, 0.6), a.lung_cy + a.lung_ry
    reach = np.clip(np.abs(g.x - medial) / (2 * a.lung_rx), 0.0, 1.0)
    surface = bottom - depth * (0.3 + 0.7 * reach * reach)  # meniscus: rises toward the chest wall
    _lerp(img, 0.62, _lung_mask(g, a, side) * _smoothstep((g.y - surface) / 0.015))
    return min(lateral, medial), bottom - depth, max(lateral, medial), bottom


def _patch(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator, *, grain: int, gain: float,
           threshold: float, size: tuple[float, float]) -> Box:
    """Infiltration (fine grain) and pneumonia (coarse, confluent): a hazy region with noisy blotches."""
    cy, cx = _lung_point(rng, a, int(rng.integers(2)))
    ry, rx = rng.uniform(*size) * g.finding_scale, rng.uniform(*size) * 0.8 * g.finding_scale
    region = _ellipse(g, cy, cx, ry, rx, edge=0.5)
    blotches = _smoothstep((_smooth_noise(rng, g.r, max(3, g.r // grain)) - threshold) / 0.25)
    img += gain * region * (0.35 + 0.65 * blotches)  # a faint core even where the noise is low
    return _box(cy, cx, ry, rx)


def _paint_consolidation(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator) -> Box:
    cy, cx = _lung_point(rng, a, int(rng.integers(2)), 0.0, 0.6)
    ry, rx = rng.uniform(0.06, 0.08) * g.finding_scale, rng.uniform(0.05, 0.07) * g.finding_scale
    region = _ellipse(g, cy, cx, ry, rx, edge=0.2)
    bronchi = _smoothstep((_triangle(40.0 * (g.x - cx) + 8.0 * (g.y - cy)) - 0.85) / 0.1)  # air bronchograms
    _lerp(img, 0.66, region * (1.0 - 0.5 * bronchi))
    return _box(cy, cx, ry, rx)


def _paint_pneumothorax(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator) -> Box:
    side = int(rng.integers(2))
    outward = 1.0 if side else -1.0
    width, top, height = rng.uniform(0.03, 0.05), a.lung_cy - a.lung_ry, a.lung_ry * rng.uniform(0.45, 0.65)
    v = np.clip((g.y - a.lung_cy) / a.lung_ry, -1.0, 1.0)
    edge_x = a.lung_cx[side] + outward * a.lung_rx * np.sqrt(1.0 - v * v)  # lateral lung contour
    t = np.clip((g.y - top) / height, 0.0, 1.0)
    line_x = edge_x - outward * width * (1.0 - t * t)  # visceral pleural line, meeting the wall below
    above = _smoothstep((top + height - g.y) / 0.02)
    lung = _lung_mask(g, a, side)
    region = _smoothstep(outward * (g.x - line_x) / 0.006) * above * lung
    _lerp(img, 0.1, region)  # air only: no lung markings
    pleura = _smoothstep((0.004 - np.abs(g.x - line_x)) / 0.003) * above * lung
    img += 0.25 * pleura
    v_low = height / a.lung_ry - 1.0  # the lung contour is widest at the region's lower end
    x_wall = a.lung_cx[side] + outward * a.lung_rx * float(np.sqrt(1.0 - v_low * v_low))
    x0, x1 = sorted((a.lung_cx[side] - outward * (width + 0.005), x_wall))
    return x0, top, x1, top + height


def _paint_edema(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator) -> Box:
    cy, spread = a.lung_cy + rng.uniform(0.0, 0.06), rng.uniform(0.1, 0.13)
    for cx in (0.5 - spread, 0.5 + spread):  # bilateral perihilar "bat wing" haze
        img += 0.14 * _ellipse(g, cy, cx, 0.14, 0.08, edge=0.8)
    kerley = _smoothstep((_triangle(60.0 * g.y) - 0.85) / 0.1) * (np.abs(g.x - 0.5) > spread + 0.05)
    img += 0.08 * kerley * _ellipse(g, cy + 0.12, 0.5, 0.08, spread + 0.14, edge=0.3)
    return 0.5 - spread - 0.1, cy - 0.16, 0.5 + spread + 0.1, cy + 0.2


def _paint_emphysema(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator) -> Box:
    lungs = np.maximum(_lung_mask(g, a, 0), _lung_mask(g, a, 1))
    img -= 0.1 * lungs  # hyperlucent lungs
    for _ in range(int(rng.integers(2, 5))):  # bullae
        cy, cx = _lung_point(rng, a, int(rng.integers(2)), -0.7, 0.0)
        rad = rng.uniform(0.015, 0.03)
        _lerp(img, 0.08, 0.8 * _ellipse(g, cy, cx, rad, rad, edge=0.3))
    return (a.lung_cx[0] - a.lung_rx, a.lung_cy - a.lung_ry, a.lung_cx[1] + a.lung_rx, a.lung_cy + a.lung_ry)


def _paint_fibrosis(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator) -> Box:
    period = rng.uniform(45.0, 60.0)
    mesh = np.maximum(_triangle(period * g.x), _triangle(period * (g.y + 0.3 * g.x)))
    reticular = _smoothstep((mesh - 0.8) / 0.15)
    y0 = a.lung_cy + 0.1 * a.lung_ry  # lower zones only
    lungs = np.maximum(_lung_mask(g, a, 0), _lung_mask(g, a, 1))
    img += 0.14 * reticular * _smoothstep((g.y - y0) / 0.05) * lungs
    return a.lung_cx[0] - a.lung_rx, y0, a.lung_cx[1] + a.lung_rx, a.lung_cy + a.lung_ry


def _paint_pleural_thickening(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator) -> Box:
    side = int(rng.integers(2))
    cx, cy = a.lung_cx[side], a.lung_cy
    d = np.sqrt(((g.y - cy) / a.lung_ry) ** 2 + ((g.x - cx) / a.lung_rx) ** 2)
    thickness = rng.uniform(0.06, 0.1)
    rim = _smoothstep((thickness - np.abs(d - 1.0 + thickness)) / (0.5 * thickness))
    apex = _smoothstep((cy - 0.55 * a.lung_ry - g.y) / 0.02)  # an apical cap
    img += 0.3 * rim * apex
    return _box(cy - 0.78 * a.lung_ry, cx, 0.23 * a.lung_ry, a.lung_rx * 0.85)


def _paint_hernia(img: np.ndarray, g: _Grid, a: _Anatomy, rng: np.random.Generator) -> Box:
    cy, cx = a.heart_cy + a.heart_ry * rng.uniform(0.5, 0.8), 0.5 + rng.uniform(-0.02, 0.03)
    rad = rng.uniform(0.035, 0.05) * g.finding_scale
    sac = _ellipse(g, cy, cx, rad, rad * 1.2, edge=0.2)
    air = _smoothstep((cy - 0.2 * rad - g.y) / 0.004)  # gas above an air-fluid level
    img += 0.2 * sac * (1.0 - air)
    _lerp(img, 0.15, sac * air)
    return _box(cy, cx, rad * 1.1, rad * 1.3)


Painter = Callable[[np.ndarray, _Grid, _Anatomy, np.random.Generator], Box]
PAINTERS: dict[str, Painter] = {
    "Atelectasis": _paint_atelectasis, "Cardiomegaly": _paint_cardiomegaly, "Effusion": _paint_effusion,
    "Infiltration": partial(_patch, grain=10, gain=0.28, threshold=0.3, size=(0.08, 0.12)),
    "Mass": _paint_mass, "Nodule": _paint_nodule,
    "Pneumonia": partial(_patch, grain=40, gain=0.3, threshold=0.1, size=(0.07, 0.1)),
    "Pneumothorax": _paint_pneumothorax, "Consolidation": _paint_consolidation, "Edema": _paint_edema,
    "Emphysema": _paint_emphysema, "Fibrosis": _paint_fibrosis,
    "Pleural_Thickening": _paint_pleural_thickening, "Hernia": _paint_hernia,
}


# Where a FINE finding sits: the same lung region its coarse painter draws from (y range in lung radii).
_FINE_SITES = {"Atelectasis": (0.2, 0.65), "Mass": (-0.7, 0.7), "Nodule": (-0.7, 0.7)}


def synth_case(index: int, seed: int, size: int, finding_scale: float = 1.0,
               detail: FindingDetail = FindingDetail.COARSE) -> SynthCase:
    """One deterministic synthetic case; image uint8 (size, size), boxes in its pixel coordinates.

    finding_scale shrinks (< 1) or grows the focal findings (SCALED_FINDINGS) about their centres. detail FINE
    draws FINE_FINDINGS at full resolution with evidence a downscale loses (xray/synth/detail.py); COARSE (the
    default, and every archive before it) draws every finding at <= WORK_RES px.
    """
    if index < 0 or size < MIN_SIZE:
        raise ValueError(f"need index >= 0 and size >= {MIN_SIZE}, got index={index}, size={size}")
    if not 0.1 <= finding_scale <= 2.0:
        raise ValueError(f"finding_scale must be within [0.1, 2.0], got {finding_scale}")
    patient_id, follow_up = patient_of(index, seed)
    patient_rng = np.random.default_rng([seed, 2, patient_id])
    gender = "M" if patient_rng.random() < 0.56 else "F"
    age = min(int(patient_rng.integers(18, 86)) + follow_up // 3, 95)
    anatomy = _anatomy(patient_rng)
    rng = np.random.default_rng([seed, 3, index])
    view = "AP" if rng.random() < 0.4 else "PA"
    spacing = round(float(rng.choice(_REAL_SPACINGS_MM)) * 2500 / size, 6)
    findings = draw_findings(rng)
    r = min(size, WORK_RES)
    centres = (np.arange(r, dtype=np.float32) + 0.5) / r
    grid = _Grid(y=centres[:, None], x=centres[None, :], r=r, finding_scale=finding_scale)
    img = _background(grid, anatomy, rng, view)
    fine = None
    if detail == FindingDetail.FINE:
        fine = np.zeros((size, size), np.float32)
        clutter_rng = np.random.default_rng([seed, 5, index])  # its own stream: findings draw what they did
        dots = [_lung_point(clutter_rng, anatomy, int(clutter_rng.integers(2)), -0.9, 0.9)
                for _ in range(int(clutter_rng.integers(*VESSEL_DOTS)))]
        paint_vessel_dots(fine, dots, clutter_rng)
    boxes = []
    for label in findings:  # each finding draws from its own stream: adding one moves no other
        label_rng = np.random.default_rng([seed, 4, index, LABELS.index(label)])
        if fine is not None and label in FINE_FINDINGS:
            cy, cx = _lung_point(label_rng, anatomy, int(label_rng.integers(2)), *_FINE_SITES[label])
            x0, y0, x1, y1 = FINE_PAINTERS[label](fine, cy, cx, finding_scale, label_rng)
        else:
            x0, y0, x1, y1 = PAINTERS[label](img, grid, anatomy, label_rng)
        x0, y0, x1, y1 = (float(min(max(v, 0.0), 1.0)) * size for v in (x0, y0, x1, y1))
        boxes.append((label, round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)))
    if r != size:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
    if fine is not None:
        img = img + fine
    img = img + (rng.random((size, size), dtype=np.float32) - 0.5) * np.float32(NOISE_AMPLITUDE)  # quantum noise
    pixels = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return SynthCase(image_index=f"{patient_id:08d}_{follow_up:03d}.png", findings=findings,
                     bboxes=tuple(boxes), patient_id=patient_id, follow_up=follow_up, gender=gender,
                     age=age, view=view, size=size, spacing=spacing, image=pixels)
