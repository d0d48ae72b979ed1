"""Procedural calibration images: iterated-function-system (IFS) fractals rendered as grey pictures.

An IFS is a few contractive affine maps of the plane, w_k(x) = A_k x + b_k; its attractor is the one set
that the maps together send onto itself. The chaos game draws it: start anywhere, apply a map chosen at
random (with probability p_k) again and again, and after a short burn-in every point lies on the attractor.
FractalDB (Kataoka et al., "Pre-training without Natural Images", 2020) pre-trains image models on such
renders; the OpenVINO study this project follows calibrated INT8 models on them. Here they are a calibration
set that holds no patient data and nothing chest-like: the far end of "images that are not the user's".

Each image: an IFS of 2-4 maps with random A_k scaled to a random contraction (largest singular value 0.35-
0.8), p_k proportional to |det A_k| (Barnsley's rule: each part gets ink by its area); the chaos game on a
batch of walkers; the point density on an S x S grid, fitted to the frame with a margin, tone-mapped by a
fourth root (sparse arms stay visible beside dense cores); then grey levels (a dark or light background, the
fractal the other way), a 3x3 box blur and light noise, so that the picture has the full range of greys a
network sees, not only two. An IFS whose render covers too little of the frame (a near-degenerate one that
collapses onto a line or a point) is redrawn, as FractalDB filters by filling rate.

Deterministic: image i of seed s depends on (s, i) alone, so the first k images of n are those of k. Only
+, *, sqrt, comparisons and integer counting touch the pixels (no np.sin / np.exp, whose SIMD kernels differ
in the last ulp between CPUs; see xray/synth/images.py), so the bytes should match across x86 CPUs too. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_MAPS, MAX_MAPS = 2, 4
CONTRACTION = (0.35, 0.8)
"""Range of each map's largest singular value: < 1 makes the IFS contractive, so the chaos game converges."""
BURN_IN = 40
"""Steps before a walker's points count: 0.8 ** 40 < 1e-3 of the frame, below a pixel at 1024 px."""
MIN_COVERAGE = 0.15
"""Share of the PREVIEW x PREVIEW grid the density must touch for an IFS to be kept (FractalDB's filling-rate
filter)."""
PREVIEW = 64
"""Side of the cheap render an IFS's coverage is judged on (coverage depends on the grid: one size for all)."""
MAX_DRAWS = 32
"""IFS draws per image before the best-covering one is kept whatever its coverage."""
MARGIN = 0.06
"""Empty border on each side of the fitted attractor, as a share of the frame."""
NOISE_LEVELS = 6.0
"""Width in grey levels of the uniform noise added last (a render without it has large flat areas)."""
_STREAM = 0x1F5  # keeps this generator's random streams apart from any other user of (seed, index)


@dataclass(frozen=True)
class Ifs:
    """K affine maps x -> a[k] @ x + b[k] of the plane, applied with probabilities p: a (K, 2, 2), b (K, 2),
    p (K,) summing to 1."""

    a: np.ndarray
    b: np.ndarray
    p: np.ndarray


def largest_singular_values(a: np.ndarray) -> np.ndarray:
    """(K, 2, 2) -> (K,) largest singular value of each matrix, in closed form (sqrt of the largest eigenvalue
    of A^T A), so only sqrt is used."""
    p = a[:, 0, 0] ** 2 + a[:, 1, 0] ** 2
    r = a[:, 0, 1] ** 2 + a[:, 1, 1] ** 2
    q = a[:, 0, 0] * a[:, 0, 1] + a[:, 1, 0] * a[:, 1, 1]
    half = (p - r) / 2
    return np.sqrt((p + r) / 2 + np.sqrt(half * half + q * q))


def random_ifs(rng: np.random.Generator) -> Ifs:
    """A contractive IFS of MIN_MAPS..MAX_MAPS maps: entries of A_k uniform in [-1, 1], rescaled so that A_k's
    largest singular value is drawn from CONTRACTION; b_k uniform in [-1, 1]; p_k proportional to |det A_k|."""
    k = int(rng.integers(MIN_MAPS, MAX_MAPS + 1))
    a = rng.uniform(-1.0, 1.0, size=(k, 2, 2))
    target = rng.uniform(*CONTRACTION, size=k)
    a *= (target / np.maximum(largest_singular_values(a), 1e-12))[:, None, None]
    b = rng.uniform(-1.0, 1.0, size=(k, 2))
    det = np.abs(a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0])
    weight = det + 0.02 * det.max() + 1e-12  # a nearly flat map still gets some ink
    return Ifs(a, b, weight / weight.sum())


def chaos_game(ifs: Ifs, rng: np.random.Generator, n_points: int, walkers: int = 2048) -> np.ndarray:
    """About n_points points (P, 2) on the attractor: `walkers` chaos games side by side, each after BURN_IN
    steps, as (x, y)."""
    x, y = rng.uniform(-1.0, 1.0, size=(2, walkers))
    steps = BURN_IN + max(1, -(-n_points // walkers))
    cumulative = np.cumsum(ifs.p)
    cumulative[-1] = 1.0
    a00, a01, a10, a11 = (ifs.a[:, i, j] for i in (0, 1) for j in (0, 1))
    b0, b1 = ifs.b[:, 0], ifs.b[:, 1]
    xs, ys = [], []
    for step in range(steps):
        k = np.searchsorted(cumulative, rng.random(walkers), side="right")
        x, y = a00[k] * x + a01[k] * y + b0[k], a10[k] * x + a11[k] * y + b1[k]
        if step >= BURN_IN:
            xs.append(x)
            ys.append(y)
    return np.stack([np.concatenate(xs), np.concatenate(ys)], axis=1)


def density(points: np.ndarray, size: int) -> np.ndarray:
    """Points (P, 2) -> (size, size) counts per pixel, the points' bounding box fitted into the frame (aspect kept,
    centred, MARGIN on each side). Row 0 is the top (largest y). All zeros when the points span no area."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = float((hi - lo).max())
    counts = np.zeros(size * size, np.int64)
    if not span > 0:
        return counts.reshape(size, size)
    scale = size * (1 - 2 * MARGIN) / span
    centre = (lo + hi) / 2
    col = np.floor((points[:, 0] - centre[0]) * scale + size / 2).astype(np.int64)
    row = np.floor((centre[1] - points[:, 1]) * scale + size / 2).astype(np.int64)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    counts += np.bincount(row[inside] * size + col[inside], minlength=size * size)
    return counts.reshape(size, size)


def tone(counts: np.ndarray) -> np.ndarray:
    """Counts -> [0, 1] brightness: the fourth root of counts / max (sparse arms stay visible)."""
    peak = counts.max()
    return np.sqrt(np.sqrt(counts / peak)) if peak > 0 else np.zeros(counts.shape)


def _box_blur(img: np.ndarray) -> np.ndarray:
    """3x3 mean with edge replication (a render point is one pixel; real images are never that sharp)."""
    p = np.pad(img, 1, mode="edge")
    h, w = img.shape
    return sum(p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0


def fractal_density(seed: int, index: int, size: int) -> np.ndarray:
    """(size, size) tone in [0, 1] of image `index`: the first IFS whose preview (at PREVIEW px) covers
    MIN_COVERAGE of the frame, else the best of MAX_DRAWS, rendered with 4 points per pixel."""
    rng = np.random.default_rng([_STREAM, seed, index])
    best, best_cover = None, -1.0
    for _ in range(MAX_DRAWS):
        ifs = random_ifs(rng)
        counts = density(chaos_game(ifs, rng, 4 * PREVIEW * PREVIEW, walkers=512), PREVIEW)
        cover = float(np.count_nonzero(counts)) / counts.size
        if cover > best_cover:
            best, best_cover = ifs, cover
        if cover >= MIN_COVERAGE:
            break
    render = np.random.default_rng([_STREAM, seed, index, 2])
    return tone(density(chaos_game(best, render, 4 * size * size), size))


def fractal_image(seed: int, index: int, size: int) -> np.ndarray:
    """(size, size) uint8 grey image `index` of the set `seed` (see the module docstring)."""
    if size < 8 or index < 0:
        raise ValueError(f"need size >= 8 and index >= 0, got size={size}, index={index}")
    t = fractal_density(seed, index, size)
    rng = np.random.default_rng([_STREAM, seed, index, 1])
    dark, light = rng.uniform(0.0, 100.0), rng.uniform(150.0, 255.0)
    background, ink = (dark, light) if rng.random() < 0.5 else (light, dark)
    img = _box_blur(background + (ink - background) * t)
    img = img + (rng.random((size, size)) - 0.5) * NOISE_LEVELS
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def fractal_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size) uint8: images 0..n-1 of the set `seed`."""
    if n < 0:
        raise ValueError(f"need n >= 0, got {n}")
    return np.stack([fractal_image(seed, i, size) for i in range(n)]) if n else np.zeros((0, size, size), np.uint8)
