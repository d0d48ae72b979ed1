"""Tiling of square images into a grid of positions, and back.

A grid is (image_size, tile_size, stride). Positions are enumerated row-major. When the tiles do not fit
exactly, the image is zero-padded at the bottom/right to `padded_size = tile + stride * (steps - 1)`.
`untile(tile(x)) == x` exactly (any dtype, odd sizes, overlaps): untile copies each pixel from the first
tile that covers it. Score maps are stitched separately, averaging where tiles overlap.
A 1x1 grid (tile_size == image_size) is the whole-image model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    image_size: int
    tile_size: int
    stride: int

    def __post_init__(self) -> None:
        problems = []
        if self.tile_size < 1 or self.stride < 1:
            problems.append("tile_size and stride must be positive")
        if self.tile_size > self.image_size:
            problems.append(f"tile_size {self.tile_size} exceeds image_size {self.image_size}")
        if self.stride > self.tile_size:
            problems.append(f"stride {self.stride} exceeds tile_size {self.tile_size}: pixels would be skipped")
        if problems:
            raise ValueError("invalid tile grid: " + "; ".join(problems))

    @property
    def steps(self) -> int:
        """Tiles per side."""
        return 1 + math.ceil((self.image_size - self.tile_size) / self.stride)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.steps, self.steps)

    @property
    def n_positions(self) -> int:
        return self.steps * self.steps

    @property
    def padded_size(self) -> int:
        return self.tile_size + self.stride * (self.steps - 1)

    def origin(self, position: int) -> tuple[int, int]:
        """(top, left) pixel of a position in the padded image."""
        if not 0 <= position < self.n_positions:
            raise ValueError(f"position {position} outside a {self.steps}x{self.steps} grid")
        row, col = divmod(position, self.steps)
        return row * self.stride, col * self.stride


def _pad(x: np.ndarray, grid: TileGrid) -> np.ndarray:
    extra = grid.padded_size - grid.image_size
    if extra == 0:
        return x
    pad = [(0, 0)] * (x.ndim - 2) + [(0, extra), (0, extra)]
    return np.pad(x, pad)


def tile_at(x: np.ndarray, grid: TileGrid, position: int) -> np.ndarray:
    """(..., H, W) -> (..., t, t): one position's tiles (padding applied as needed)."""
    _check(x, grid)
    top, left = grid.origin(position)
    t = grid.tile_size
    if top + t <= grid.image_size and left + t <= grid.image_size:
        return x[..., top : top + t, left : left + t]
    return _pad(x, grid)[..., top : top + t, left : left + t]


def tile(x: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(N, C, H, W) -> (N, T, C, t, t) with T = grid.n_positions, row-major."""
    _check(x, grid)
    padded = _pad(x, grid)
    t = grid.tile_size
    out = [padded[..., top : top + t, left : left + t]
           for top, left in (grid.origin(p) for p in range(grid.n_positions))]
    return np.stack(out, axis=1)


def untile(tiles: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(N, T, C, t, t) -> (N, C, H, W); inverse of tile() exactly (first covering tile wins)."""
    n, positions, c, t, _ = tiles.shape
    if positions != grid.n_positions or t != grid.tile_size:
        raise ValueError(f"tiles {tiles.shape} do not match a {grid.steps}x{grid.steps} grid of {grid.tile_size}px")
    size = grid.padded_size
    out = np.zeros((n, c, size, size), dtype=tiles.dtype)
    filled = np.zeros((size, size), dtype=bool)
    for p in range(positions):
        top, left = grid.origin(p)
        window = (slice(top, top + t), slice(left, left + t))
        fresh = ~filled[window]
        out[:, :, window[0], window[1]][..., fresh] = tiles[:, p][..., fresh]
        filled[window] = True
    return out[:, :, : grid.image_size, : grid.image_size]


def stitch_scores(scores: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(N, T, L) per-position scores -> (N, L, H, W) pixel map, averaging where tiles overlap.

    Padding pixels are dropped; every image pixel is covered by at least one tile.
    """
    n, positions, labels = scores.shape
    if positions != grid.n_positions:
        raise ValueError(f"{positions} position scores for a grid of {grid.n_positions}")
    size, t = grid.padded_size, grid.tile_size
    total = np.zeros((n, labels, size, size), dtype=np.float64)
    count = np.zeros((size, size), dtype=np.float64)
    for p in range(positions):
        top, left = grid.origin(p)
        total[:, :, top : top + t, left : left + t] += scores[:, p, :, None, None]
        count[top : top + t, left : left + t] += 1.0
    out = total / count
    return out[:, :, : grid.image_size, : grid.image_size].astype(np.float32)


def _check(x: np.ndarray, grid: TileGrid) -> None:
    if x.shape[-2:] != (grid.image_size, grid.image_size):
        raise ValueError(f"image of {x.shape[-2:]} pixels, grid expects {grid.image_size}x{grid.image_size}")
