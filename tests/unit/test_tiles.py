"""Tiling round trips and invariants (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from xray.tiles.grid import TileGrid, stitch_scores, tile, tile_at, untile


@pytest.mark.parametrize(
    ("size", "t", "s"),
    [(64, 64, 64), (64, 32, 32), (64, 32, 16), (65, 32, 32), (67, 32, 20), (31, 7, 3), (100, 33, 33), (9, 4, 1)],
)
def test_untile_inverts_tile_exactly(size, t, s):
    grid = TileGrid(size, t, s)
    rng = np.random.default_rng(size * 1000 + t * 10 + s)
    x = rng.integers(0, 256, size=(3, 2, size, size), dtype=np.uint8)
    tiles = tile(x, grid)
    assert tiles.shape == (3, grid.n_positions, 2, t, t)
    np.testing.assert_array_equal(untile(tiles, grid), x)
    # float data, too
    xf = rng.standard_normal((1, 1, size, size)).astype(np.float32)
    np.testing.assert_array_equal(untile(tile(xf, grid), grid), xf)


def test_grid_geometry_row_major_and_padding():
    grid = TileGrid(100, 40, 30)
    assert grid.steps == 3 and grid.shape == (3, 3) and grid.n_positions == 9
    assert grid.padded_size == 40 + 30 * 2 == 100
    assert [grid.origin(p) for p in range(4)] == [(0, 0), (0, 30), (0, 60), (30, 0)]
    odd = TileGrid(101, 40, 30)  # one pixel too many: a fourth step, zero-padded to 130
    assert odd.steps == 4 and odd.padded_size == 130
    x = np.ones((1, 1, 101, 101), np.uint8)
    last = tile_at(x, odd, odd.n_positions - 1)
    assert last.shape == (1, 1, 40, 40)
    assert last[0, 0, 0, 0] == 1 and last[0, 0, -1, -1] == 0  # the padding is zeros
    with pytest.raises(ValueError, match="position 16 outside a 4x4 grid"):
        odd.origin(16)


def test_tile_at_matches_tile():
    grid = TileGrid(50, 20, 15)
    x = np.arange(2 * 50 * 50, dtype=np.int32).reshape(2, 1, 50, 50)
    all_tiles = tile(x, grid)
    for p in range(grid.n_positions):
        np.testing.assert_array_equal(tile_at(x, grid, p), all_tiles[:, p])


def test_one_by_one_grid_is_the_whole_image():
    grid = TileGrid(48, 48, 48)
    x = np.random.default_rng(0).integers(0, 255, (2, 1, 48, 48), dtype=np.uint8)
    assert grid.n_positions == 1
    np.testing.assert_array_equal(tile(x, grid)[:, 0], x)
    np.testing.assert_array_equal(tile_at(x, grid, 0), x)


def test_invalid_grids_name_the_problem():
    with pytest.raises(ValueError, match="tile_size 80 exceeds image_size 64"):
        TileGrid(64, 80, 40)
    with pytest.raises(ValueError, match="stride 40 exceeds tile_size 32"):
        TileGrid(64, 32, 40)
    with pytest.raises(ValueError, match="grid expects 64x64"):
        tile(np.zeros((1, 1, 60, 60)), TileGrid(64, 32, 32))


def test_stitch_scores_averages_overlaps():
    grid = TileGrid(6, 4, 2)  # 2x2 positions, overlapping in the middle two rows/columns
    scores = np.array([[[1.0], [2.0], [3.0], [4.0]]])  # (N=1, T=4, L=1)
    heat = stitch_scores(scores, grid)[0, 0]
    assert heat.shape == (6, 6)
    assert heat[0, 0] == 1.0 and heat[0, 5] == 2.0 and heat[5, 0] == 3.0 and heat[5, 5] == 4.0
    assert heat[2, 2] == pytest.approx(2.5)  # covered by all four tiles
    assert heat[0, 2] == pytest.approx(1.5)  # covered by positions 0 and 1
    # constant scores stitch to a constant map, whatever the overlap and padding
    odd = TileGrid(23, 8, 5)
    flat = stitch_scores(np.full((2, odd.n_positions, 3), 0.25), odd)
    assert flat.shape == (2, 3, 23, 23)
    np.testing.assert_allclose(flat, 0.25)
