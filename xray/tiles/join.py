"""Joining per-position outputs of a tile ensemble into image-level probabilities, thresholds and heatmaps.

Shapes: position probabilities P are (N, T, L) — N images, T grid positions (row-major), L labels.
Combiners map P to (N, L):
- mean: the average over positions (Anomalib's tiled ensemble joins this way);
- max: the highest position;
- stacked: per label, a logistic regression on the T position logits, fit on the validation split
  (ridge-regularised Newton steps; a label without both classes in validation falls back to the mean
  of position logits).
Thresholds are fit after the join, on validation, never on test.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from xray.tiles.grid import TileGrid, stitch_scores

_EPS = 1e-6


class Combiner(enum.StrEnum):
    MEAN = "mean"
    MAX = "max"
    STACKED = "stacked"


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(q / (1.0 - q))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class StackedWeights:
    """Per label: weights (L, T) on position logits, bias (L,), and whether the label was fit (L,)."""

    weights: np.ndarray
    bias: np.ndarray
    fitted: np.ndarray

    def to_json(self) -> dict:
        return {"weights": self.weights.tolist(), "bias": self.bias.tolist(), "fitted": self.fitted.tolist()}

    @classmethod
    def from_json(cls, body: dict) -> StackedWeights:
        return cls(np.asarray(body["weights"], np.float64), np.asarray(body["bias"], np.float64),
                   np.asarray(body["fitted"], bool))


def _fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float, iters: int = 50) -> np.ndarray:
    """(N, F) features, (N,) 0/1 targets -> (F + 1,) weights with the bias last (Newton / IRLS).

    The weights are shrunk towards the prior 1/F each (the mean of the features), not towards 0: a strong
    ridge then falls back to the mean join, recalibrated by the bias, instead of to a constant score.
    """
    xb = np.hstack([x, np.ones((x.shape[0], 1))])
    prior = np.append(np.full(x.shape[1], 1.0 / x.shape[1]), 0.0)
    w = prior.copy()
    penalty = np.full(xb.shape[1], ridge)
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(iters):
        p = _sigmoid(xb @ w)
        grad = xb.T @ (p - y) + penalty * (w - prior)
        hess = (xb * (p * (1.0 - p))[:, None]).T @ xb + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


RIDGES = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)


def _log_loss(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(_sigmoid(x @ w[:-1] + w[-1]), _EPS, 1.0 - _EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def choose_ridge(x: np.ndarray, y: np.ndarray, ridges: tuple[float, ...] = RIDGES, folds: int = 5) -> float:
    """The ridge with the lowest cross-validated log loss on (x, y): validation sets are small (tens of
    positives), and an unregularised T-weight fit over-trusts one position; the largest ridges are
    close to the mean join."""
    n = len(y)
    order = np.random.default_rng(0).permutation(n)
    parts = [order[k::folds] for k in range(folds)]
    best, best_loss = ridges[-1], np.inf
    for ridge in ridges:
        losses = []
        for part in parts:
            train = np.setdiff1d(order, part)
            if len(part) == 0 or not 0 < y[train].sum() < len(train):
                continue
            losses.append(_log_loss(x[part], y[part], _fit_logistic(x[train], y[train], ridge)))
        if losses and np.mean(losses) < best_loss:
            best, best_loss = ridge, float(np.mean(losses))
    return best


def fit_stacked(val_probs: np.ndarray, val_labels: np.ndarray, ridge: float | None = None) -> StackedWeights:
    """(N, T, L) validation position probabilities + (N, L) labels -> stacked combiner weights.

    ridge=None chooses it per label by 5-fold cross-validation on the validation split itself.
    """
    n, t, n_labels = val_probs.shape
    weights = np.full((n_labels, t), 1.0 / t)
    bias = np.zeros(n_labels)
    fitted = np.zeros(n_labels, dtype=bool)
    z = logit(val_probs)
    for j in range(n_labels):
        y = val_labels[:, j].astype(np.float64)
        if 0 < y.sum() < n:
            lam = ridge if ridge is not None else choose_ridge(z[:, :, j], y)
            w = _fit_logistic(z[:, :, j], y, lam)
            weights[j], bias[j], fitted[j] = w[:-1], w[-1], True
    return StackedWeights(weights, bias, fitted)


def combine(probs: np.ndarray, combiner: Combiner | str, stacked: StackedWeights | None = None) -> np.ndarray:
    """(N, T, L) position probabilities -> (N, L) image probabilities (float32)."""
    combiner = Combiner(combiner)
    if probs.ndim != 3:
        raise ValueError(f"position probabilities must be (N, T, L), got shape {probs.shape}")
    if combiner is Combiner.MEAN:
        out = probs.mean(axis=1)
    elif combiner is Combiner.MAX:
        out = probs.max(axis=1)
    else:
        if stacked is None:
            raise ValueError("the stacked combiner needs weights fit on validation (fit_stacked)")
        if stacked.weights.shape != (probs.shape[2], probs.shape[1]):
            raise ValueError(f"stacked weights {stacked.weights.shape} do not fit {probs.shape[1]} positions x "
                             f"{probs.shape[2]} labels")
        z = np.einsum("ntl,lt->nl", logit(probs), stacked.weights) + stacked.bias
        out = _sigmoid(z)
    return out.astype(np.float32)


def youden_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, L) probabilities + labels -> (L,) thresholds maximising sensitivity + specificity - 1.

    A sample is flagged when prob >= threshold. Labels without both classes get NaN.
    """
    out = np.full(probs.shape[1], math.nan)
    for j in range(probs.shape[1]):
        y = labels[:, j] > 0.5
        pos, neg = int(y.sum()), int((~y).sum())
        if pos == 0 or neg == 0:
            continue
        order = np.argsort(-probs[:, j], kind="stable")
        scores, hits = probs[order, j], y[order]
        tpr = np.cumsum(hits) / pos
        fpr = np.cumsum(~hits) / neg
        # Only cut between distinct scores: a threshold cannot separate tied samples.
        cut = np.r_[scores[1:] != scores[:-1], True]
        j_stat = np.where(cut, tpr - fpr, -np.inf)
        out[j] = float(scores[int(np.argmax(j_stat))])
    return out


def coarse_heatmap(probs: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(N, T, L) position probabilities -> (N, L, C, C) heatmap, C = ceil(image_size / cell).

    cell = gcd(tile_size, stride): the coarsest cells that overlapping tiles never split, each the
    average of the tiles covering it (the pixel-level stitch of xray.tiles.grid.stitch_scores, pooled).
    """
    cell = math.gcd(grid.tile_size, grid.stride)
    coarse = TileGrid(-(-grid.image_size // cell), grid.tile_size // cell, grid.stride // cell)
    assert coarse.n_positions == grid.n_positions, "cell grid must have the same positions"
    return stitch_scores(probs, coarse)


def heatmap_cell(grid: TileGrid) -> int:
    """Pixels per side of one heatmap cell."""
    return math.gcd(grid.tile_size, grid.stride)


def peak_in_box(heatmap: np.ndarray, box: tuple[float, float, float, float], cell: int) -> bool:
    """(C, C) heatmap for one label, box (x, y, w, h) in image pixels -> does the peak cell overlap the box?"""
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    x, y, w, h = box
    top, left = row * cell, col * cell
    return left < x + w and x < left + cell and top < y + h and y < top + cell


def box_cell_fraction(shape: tuple[int, int], box: tuple[float, float, float, float], cell: int) -> float:
    """Share of heatmap cells that overlap the box: the hit rate of a peak chosen at random."""
    rows, cols = shape
    x, y, w, h = box
    hits = sum(1 for r in range(rows) for c in range(cols)
               if c * cell < x + w and x < (c + 1) * cell and r * cell < y + h and y < (r + 1) * cell)
    return hits / (rows * cols)
