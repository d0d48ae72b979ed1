"""Combiners, thresholds and heatmaps of the tile ensemble (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from xray.evaluation.metrics import auroc
from xray.tiles.grid import TileGrid
from xray.tiles.join import (
    Combiner,
    StackedWeights,
    box_cell_fraction,
    coarse_heatmap,
    combine,
    fit_stacked,
    heatmap_cell,
    peak_in_box,
    youden_thresholds,
)


def test_mean_and_max():
    p = np.array([[[0.1, 0.9], [0.3, 0.5], [0.2, 0.1]]])  # N=1, T=3, L=2
    np.testing.assert_allclose(combine(p, "mean"), [[0.2, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(combine(p, Combiner.MAX), [[0.3, 0.9]], rtol=1e-6)
    assert combine(p, "mean").dtype == np.float32


def _finding_in_one_position(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A finding visible only to position 2 of 4; the other positions output noise."""
    y = (rng.random(n) < 0.3).astype(np.float32)
    probs = rng.uniform(0.2, 0.8, size=(n, 4, 1))
    probs[:, 2, 0] = np.clip(0.5 + 0.35 * (2 * y - 1) + rng.normal(0, 0.15, n), 0.01, 0.99)
    return probs, y[:, None]


def test_stacked_combiner_learns_the_informative_position():
    rng = np.random.default_rng(0)
    val_p, val_y = _finding_in_one_position(400, rng)
    test_p, test_y = _finding_in_one_position(400, rng)
    w = fit_stacked(val_p, val_y)
    assert w.fitted.tolist() == [True]
    assert int(np.argmax(np.abs(w.weights[0]))) == 2
    stacked = auroc(test_y[:, 0], combine(test_p, "stacked", w)[:, 0])
    mean = auroc(test_y[:, 0], combine(test_p, "mean")[:, 0])
    assert stacked > mean + 0.02
    assert stacked > 0.9
    # round trip through the manifest's JSON
    again = StackedWeights.from_json(w.to_json())
    np.testing.assert_array_equal(combine(test_p, "stacked", again), combine(test_p, "stacked", w))


def test_stacked_falls_back_without_both_classes():
    p = np.random.default_rng(1).uniform(0.1, 0.9, size=(20, 3, 2))
    y = np.zeros((20, 2), np.float32)
    y[:5, 0] = 1  # label 0 has both classes; label 1 has no positives
    w = fit_stacked(p, y)
    assert w.fitted.tolist() == [True, False]
    np.testing.assert_allclose(w.weights[1], [1 / 3] * 3)
    with pytest.raises(ValueError, match="stacked combiner needs weights"):
        combine(p, "stacked")
    with pytest.raises(ValueError, match="do not fit 4 positions"):
        combine(np.full((2, 4, 2), 0.5), "stacked", w)


def test_youden_threshold_separates_perfectly_separable_scores():
    probs = np.array([[0.1], [0.2], [0.35], [0.6], [0.7], [0.9]])
    labels = np.array([[0], [0], [0], [1], [1], [1]], np.float32)
    thr = youden_thresholds(probs, labels)
    assert thr[0] == pytest.approx(0.6)
    flagged = probs[:, 0] >= thr[0]
    assert flagged.tolist() == [False, False, False, True, True, True]
    assert np.isnan(youden_thresholds(probs, np.zeros_like(labels))[0])


def test_youden_never_cuts_between_ties():
    probs = np.array([[0.5], [0.5], [0.5], [0.1]])
    labels = np.array([[1], [0], [1], [0]], np.float32)
    assert youden_thresholds(probs, labels)[0] == pytest.approx(0.5)


def test_coarse_heatmap_cells_and_overlap_average():
    grid = TileGrid(64, 32, 16)  # 3x3 positions, cell = 16 px -> 4x4 cells
    assert heatmap_cell(grid) == 16
    probs = np.zeros((1, grid.n_positions, 1))
    probs[0, 4, 0] = 1.0  # the centre position covers the centre 2x2 cells, shared with 3 others each
    heat = coarse_heatmap(probs, grid)
    assert heat.shape == (1, 1, 4, 4)
    np.testing.assert_allclose(heat[0, 0, 1:3, 1:3], 0.25)
    assert heat[0, 0, 0, 0] == 0.0
    non_overlap = TileGrid(64, 32, 32)
    p = np.arange(4, dtype=np.float64).reshape(1, 4, 1)
    np.testing.assert_array_equal(coarse_heatmap(p, non_overlap)[0, 0], [[0, 1], [2, 3]])


def test_peak_in_box_and_chance_rate():
    heat = np.zeros((4, 4))
    heat[2, 1] = 1.0  # cell rows 32..48, cols 16..32 for 16 px cells
    assert peak_in_box(heat, (20, 40, 10, 5), cell=16)
    assert not peak_in_box(heat, (40, 40, 10, 10), cell=16)
    assert box_cell_fraction((4, 4), (0, 0, 64, 64), 16) == 1.0
    assert box_cell_fraction((4, 4), (1, 1, 4, 4), 16) == 1 / 16


def test_cross_validated_ridge_shrinks_when_validation_is_pure_noise():
    from xray.tiles.join import RIDGES, choose_ridge

    rng = np.random.default_rng(5)
    noise_x, noise_y = rng.normal(size=(60, 4)), (rng.random(60) < 0.3).astype(float)
    assert choose_ridge(noise_x, noise_y) >= 10.0  # nothing to learn: strong shrinkage wins
    signal_x = rng.normal(size=(400, 4))
    signal_y = (signal_x[:, 2] * 3 + rng.normal(0, 0.5, 400) > 0).astype(float)
    assert choose_ridge(signal_x, signal_y) == RIDGES[0]  # a clear signal: the weakest ridge fits best


def test_strong_ridge_falls_back_to_the_mean_join():
    # Four equally informative positions: the mean is the right join, and shrinkage must lead to it (a ridge
    # towards 0 would instead flatten every score to the bias).
    rng = np.random.default_rng(7)
    z = rng.normal(size=(400, 1))
    y = (z[:, 0] > 0.8).astype(float)
    probs = 1.0 / (1.0 + np.exp(-(z + rng.normal(0, 2.0, size=(400, 4)))))[:, :, None]  # (N, T=4, L=1)
    w = fit_stacked(probs, y[:, None], ridge=1e6)
    np.testing.assert_allclose(w.weights, 0.25, atol=1e-3)
    stacked = combine(probs, "stacked", w)[:, 0]
    mean_logit = np.log(probs / (1 - probs)).mean(axis=1)[:, 0]
    assert auroc(y, stacked) == pytest.approx(auroc(y, mean_logit), abs=1e-9)
    assert auroc(y, combine(probs, "stacked", fit_stacked(probs, y[:, None]))[:, 0]) > auroc(y, probs[:, 0, 0]) + 0.05
