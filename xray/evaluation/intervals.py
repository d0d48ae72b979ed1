"""How well a scored run ranks the ground truth: AUROC confidence intervals, paired deltas, ROC curves, histograms.

All functions take one label at a time: y (N,) of {0, 1} (or bool) and scores s (N,). Point AUROCs come
from xray.evaluation.metrics.auroc (Mann-Whitney, ties count one half, equal to sklearn's roc_auc_score).

Confidence intervals of one AUROC: a stratified bootstrap (positives and negatives resampled separately,
pROC's default), percentile interval. It is computed exactly but without materialising resamples of the
larger class: only the counts of resampled large-class scores between consecutive small-class scores
matter, and those counts are one multinomial draw over at most 2m + 1 intervals (m = size of the smaller
class). The cost is O(resamples * m), so 100k images x 14 labels x 1000 resamples take seconds.

Confidence intervals of a paired difference (two models, same images): DeLong's variance of correlated
AUROCs (DeLong, DeLong & Clarke-Pearson 1988), normal approximation.

Confidence intervals of the mean AUROC over labels, and of the mean paired difference: the labels are scored
on the same images, so their AUROCs are correlated. Each image's DeLong structural components, summed over
the labels, give the variance of the mean (for one label this is exactly DeLong's variance), normal
approximation.

Confidence intervals of a proportion (sensitivity, specificity, PPV at a fixed threshold): Wilson's score
interval, which stays inside [0, 1] and behaves for rare labels where the normal interval does not.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from xray.evaluation.metrics import auroc

# Elements per bootstrap batch (resamples x class size): bounds memory at a few tens of MB.
_BATCH_ELEMENTS = 2_000_000


def _classes(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) labels and scores -> (positive scores, negative scores) as float64."""
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but score has {s.size}")
    return s[y], s[~y]


def bootstrap_auroc(y: np.ndarray, s: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) labels and scores -> (resamples,) AUROCs of a stratified bootstrap; all nan if a class is empty.

    Equal in distribution to drawing n_pos positives and n_neg negatives with replacement and computing
    the AUROC of each draw. Deterministic given the generator's state.
    """
    pos, neg = _classes(y, s)
    if pos.size == 0 or neg.size == 0 or resamples < 1:
        return np.full(max(resamples, 0), math.nan)
    # The smaller class is resampled element by element; the larger one only through interval counts.
    swap = pos.size > neg.size
    small, large = (neg, pos) if swap else (pos, neg)
    m, n = small.size, large.size
    large_sorted = np.sort(large)
    lo = np.searchsorted(large_sorted, small, side="left")  # large scores strictly below each small score
    hi = np.searchsorted(large_sorted, small, side="right")  # ... below or tied
    edges = np.unique(np.concatenate(([0, n], lo, hi)))  # (K + 1,) interval boundaries over sorted large
    p_interval = np.diff(edges) / n  # (K,)
    # Small scores in the same gap of the large class win the same: one group per (lo, hi) pair, G <= m.
    pairs, group_of = np.unique(np.stack([np.searchsorted(edges, lo), np.searchsorted(edges, hi)]), axis=1,
                                return_inverse=True)
    g_lo, g_hi, group_of = pairs[0], pairs[1], group_of.ravel().astype(np.int64)
    ties = bool((g_lo != g_hi).any())
    g = g_lo.size
    out = np.empty(resamples)
    per_batch = max(1, _BATCH_ELEMENTS // max(m, p_interval.size))
    for start in range(0, resamples, per_batch):
        b = min(per_batch, resamples - start)
        counts = rng.multinomial(n, p_interval, size=b)  # (b, K) resampled large scores per interval
        cum = np.zeros((b, edges.size))
        np.cumsum(counts, axis=1, out=cum[:, 1:])
        below = cum[:, g_lo]  # (b, G) resampled large scores below each group
        tied = cum[:, g_hi] - below if ties else 0.0
        # Wins of each group's small-class score against the resampled large class (ties count one half).
        wins = (n - below - tied) + 0.5 * tied if swap else below + 0.5 * tied
        draws = group_of[rng.integers(0, m, size=(b, m))] + (np.arange(b) * g)[:, None]  # (b, m)
        drawn = np.bincount(draws.ravel(), minlength=b * g).reshape(b, g)  # resampled small scores per group
        out[start : start + b] = np.einsum("ij,ij->i", drawn, wins) / (m * n)
    return out


@dataclass(frozen=True)
class AurocEstimate:
    """One label's AUROC with its bootstrap interval and the class counts it rests on."""

    auroc: float
    low: float
    high: float
    positives: int
    negatives: int


def auroc_with_interval(y: np.ndarray, s: np.ndarray, resamples: int, level: float,
                        rng: np.random.Generator) -> AurocEstimate:
    """(N,) labels and scores -> point AUROC, stratified-bootstrap percentile interval, class counts."""
    pos, neg = _classes(y, s)
    low, high = percentile_interval(bootstrap_auroc(y, s, resamples, rng), level)
    return AurocEstimate(auroc(y, s), low, high, int(pos.size), int(neg.size))


def auroc_intervals(labels: np.ndarray, probs: np.ndarray, resamples: int, level: float, seed: int,
                    workers: int | None = None) -> list[AurocEstimate]:
    """(N, L) labels and scores -> L estimates. Label j resamples with its own generator seeded (seed, j),
    so the result depends on neither the other labels nor the thread count; labels run on a thread pool
    (numpy releases the GIL in the sampling and array loops)."""
    if np.shape(labels) != np.shape(probs) or np.ndim(labels) != 2:
        raise ValueError(f"labels {np.shape(labels)} and scores {np.shape(probs)} must be the same (N, L)")

    def one(j: int) -> AurocEstimate:
        return auroc_with_interval(labels[:, j], probs[:, j], resamples, level, np.random.default_rng([seed, j]))

    n_labels = labels.shape[1]
    with ThreadPoolExecutor(max_workers=max(1, min(workers or os.cpu_count() or 1, n_labels or 1))) as pool:
        return list(pool.map(one, range(n_labels)))


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """(R,) bootstrap replicates -> the central `level` percentile interval; (nan, nan) when all are nan."""
    finite = np.asarray(replicates, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    if finite.size == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def _placements(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: (m,) share of negatives each positive beats, (n,) share of positives
    that beat each negative; ties count one half. Their means are both the AUROC."""
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    v10 = (np.searchsorted(neg_sorted, pos, "left") + np.searchsorted(neg_sorted, pos, "right")) / (2.0 * neg.size)
    below_or_tied = np.searchsorted(pos_sorted, neg, "right") + np.searchsorted(pos_sorted, neg, "left")
    v01 = (2.0 * pos.size - below_or_tied) / (2.0 * pos.size)
    return v10, v01


@dataclass(frozen=True)
class AurocDelta:
    """AUROC of model a minus model b on the same images, with DeLong's standard error and interval."""

    auroc_a: float
    auroc_b: float
    delta: float
    se: float
    low: float
    high: float


def paired_auroc_delta(y: np.ndarray, s_a: np.ndarray, s_b: np.ndarray, level: float) -> AurocDelta:
    """(N,) labels and two models' (N,) scores for the same images -> the paired AUROC difference a - b.

    The interval is delta +- z * se with DeLong's variance; nan when a class is empty, and se/interval nan
    when a class has fewer than two images.
    """
    pos_a, neg_a = _classes(y, s_a)
    pos_b, neg_b = _classes(y, s_b)
    m, n = pos_a.size, neg_a.size
    if m == 0 or n == 0:
        return AurocDelta(*(math.nan,) * 6)
    v10_a, v01_a = _placements(pos_a, neg_a)
    v10_b, v01_b = _placements(pos_b, neg_b)
    a, b = float(v10_a.mean()), float(v10_b.mean())
    if m < 2 or n < 2:
        return AurocDelta(a, b, a - b, math.nan, math.nan, math.nan)
    cov = np.cov(np.vstack([v10_a, v10_b])) / m + np.cov(np.vstack([v01_a, v01_b])) / n  # (2, 2)
    se = math.sqrt(max(float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]), 0.0))
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    return AurocDelta(a, b, a - b, se, a - b - z * se, a - b + z * se)


def roc_curve(y: np.ndarray, s: np.ndarray, max_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(N,) labels and scores -> (fpr (K,), tpr (K,)) from (0, 0) to (1, 1), one point per distinct score.

    Curves with more than max_points points are thinned evenly along the curve (both ends kept) for
    plotting. Empty arrays when a class is empty. The trapezoid area of the unthinned curve is the AUROC.
    """
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return np.empty(0), np.empty(0)
    order = np.argsort(-s, kind="stable")
    scores, hits = s[order], y[order]
    last_of_run = np.r_[scores[1:] != scores[:-1], True]  # a threshold cannot split tied scores
    tpr = np.r_[0.0, np.cumsum(hits)[last_of_run] / n_pos]
    fpr = np.r_[0.0, np.cumsum(~hits)[last_of_run] / n_neg]
    if tpr.size > max_points:
        keep = np.unique(np.round(np.linspace(0, tpr.size - 1, max_points)).astype(int))
        tpr, fpr = tpr[keep], fpr[keep]
    return fpr, tpr


@dataclass(frozen=True)
class ClassHistogram:
    """Score histograms of one label on [0, 1]: edges (B + 1,), counts of positives and negatives (B,)."""

    edges: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray


def class_histogram(y: np.ndarray, s: np.ndarray, bins: int = 20) -> ClassHistogram:
    """(N,) labels and probabilities -> per-class counts over `bins` equal bins spanning the scores' own range
    (a model whose probabilities all sit below 0.05 still spreads over every bin instead of one bar); [0, 1] when
    the scores are (nearly) all one value. The last bin includes its right edge."""
    pos, neg = _classes(y, s)
    both = np.concatenate([pos, neg])
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = 0.0, 1.0
    edges = np.linspace(lo, hi, bins + 1)
    return ClassHistogram(edges, np.histogram(pos, edges)[0], np.histogram(neg, edges)[0])


def auroc_influence(y: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray]:
    """(N,) labels and scores -> (AUROC, (N,) each image's DeLong component, centred and scaled).

    A positive contributes (v10 - A) / sqrt(m (m - 1)), a negative (v01 - A) / sqrt(n (n - 1)), so the sum
    of squares is DeLong's variance S10/m + S01/n, and sums over labels or models give their covariances.
    A class of one image adds nothing (its variance is unknown; the interval is then too narrow). (nan, all
    nan) when a class is empty.
    """
    yb = np.asarray(y).astype(bool).ravel()
    pos, neg = _classes(yb, s)
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        return math.nan, np.full(yb.size, math.nan)
    v10, v01 = _placements(pos, neg)
    a = float(v10.mean())
    psi = np.empty(yb.size)
    psi[yb] = (v10 - a) / math.sqrt(m * max(m - 1, 1))
    psi[~yb] = (v01 - a) / math.sqrt(n * max(n - 1, 1))
    return a, psi


@dataclass(frozen=True)
class MeanInterval:
    """A mean over labels with its standard error and interval, and how many labels it averages."""

    mean: float
    se: float
    low: float
    high: float
    labels: int


def mean_auroc_interval(labels: np.ndarray, probs: np.ndarray, level: float,
                        baseline: np.ndarray | None = None) -> MeanInterval:
    """(N, L) labels and scores -> the mean AUROC over the labels with both classes (metrics.mean_auroc),
    and its interval; with (N, L) baseline scores for the same images, the mean paired difference (probs minus
    baseline) over the labels both can score, and its interval. nan when no label qualifies."""
    y = np.asarray(labels)
    if y.ndim != 2 or y.shape != np.shape(probs) or (baseline is not None and np.shape(baseline) != y.shape):
        raise ValueError(f"labels {y.shape}, scores {np.shape(probs)} and baseline "
                         f"{None if baseline is None else np.shape(baseline)} must be the same (N, L)")
    values, components = [], []
    for j in range(y.shape[1]):
        a, psi = auroc_influence(y[:, j], probs[:, j])
        if baseline is not None:
            b, psi_b = auroc_influence(y[:, j], baseline[:, j])
            a, psi = a - b, psi - psi_b
        if not np.isnan(psi).any() and psi.size:
            values.append(a)
            components.append(psi)
    return _normal_interval(values, components, level)


def _normal_interval(values: Sequence[float], components: Sequence[np.ndarray], level: float) -> MeanInterval:
    if not values:
        return MeanInterval(math.nan, math.nan, math.nan, math.nan, 0)
    k = len(values)
    mean = float(np.mean(values))
    se = float(np.sqrt(np.square(np.sum(components, axis=0) / k).sum()))
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    return MeanInterval(mean, se, mean - z * se, mean + z * se, k)


def wilson_interval(successes: np.ndarray, trials: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(K,) counts of successes out of (K,) trials -> Wilson score interval (low (K,), high (K,)); nan where
    there are no trials."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        # Exactly 0 with no successes and 1 with no failures (where rounding would leave 3e-17).
        low = np.where(k <= 0, 0.0, np.clip(centre - half, 0.0, 1.0))
        high = np.where(k >= n, 1.0, np.clip(centre + half, 0.0, 1.0))
    empty = n <= 0
    return np.where(empty, math.nan, low), np.where(empty, math.nan, high)
