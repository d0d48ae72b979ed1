"""Triage: how much of a worklist a threshold clears (scores below it: not flagged, read later or not at all)
while still catching a target share of the positives.

A threshold is fit on one split (the highest one that keeps `target` of its positives, as for screening) and
applied to another, where the sensitivity and the cleared share are measured with Wilson intervals. "Any finding"
clears an image only when it is below threshold on every label: its score is max over labels of
p_label / t_label (each label's own threshold at the target on the fit split), and one threshold on that score is
fit for the target sensitivity to images positive for any label. Labels are {1, 0}, or < 0 for a hedged or
missing read, which leaves that image out of that label; for "any finding" an image is positive if any label is
positive, negative if every label is negative, and left out otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xray.evaluation.intervals import wilson_interval
from xray.evaluation.screening import sensitivity_threshold

ANY_FINDING = "any finding"
TARGETS = (0.95, 0.99)


@dataclass(frozen=True)
class TriagePoint:
    """One label (or ANY_FINDING) at one target sensitivity. threshold is nan where the fit split has no
    positive for the label; the applied figures are then nan too."""

    label: str
    target: float
    threshold: float
    fit_images: int
    fit_positives: int
    fit_cleared: float
    apply_images: int
    apply_positives: int
    sensitivity: float
    sensitivity_low: float
    sensitivity_high: float
    cleared: float
    cleared_low: float
    cleared_high: float
    missed: int
    """Positives of the apply split below the threshold."""


def any_finding(labels: np.ndarray) -> np.ndarray:
    """(N, K) labels with < 0 unknown -> (N,) 1 if any is positive, 0 if all are negative, -1 otherwise."""
    y = np.asarray(labels)
    out = np.full(y.shape[0], -1, dtype=np.int8)
    out[(y == 0).all(axis=1)] = 0
    out[(y == 1).any(axis=1)] = 1
    return out


def any_finding_scores(labels: np.ndarray, scores: np.ndarray, fit: np.ndarray, target: float) -> np.ndarray:
    """(N,) max over labels of score / that label's threshold at `target` on the fit split (labels without a
    positive there, or with a zero threshold, are left out; nan if none is left)."""
    columns = []
    for k in range(labels.shape[1]):
        known = fit & (labels[:, k] >= 0)
        t = sensitivity_threshold(labels[known, k] == 1, scores[known, k], target)
        if math.isfinite(t) and t > 0:
            columns.append(scores[:, k] / t)
    if not columns:
        return np.full(labels.shape[0], math.nan)
    return np.max(np.stack(columns, axis=1), axis=1)


def triage_point(label: str, y: np.ndarray, s: np.ndarray, fit: np.ndarray, apply: np.ndarray, target: float,
                 level: float) -> TriagePoint:
    """(N,) labels (< 0 unknown) and scores, (N,) fit and apply masks -> the threshold and what it clears."""
    known = (y >= 0) & ~np.isnan(s)
    f, a = fit & known, apply & known
    threshold = sensitivity_threshold(y[f] == 1, s[f], target)
    pos_a = a & (y == 1)
    if math.isfinite(threshold):
        kept = s >= threshold
        caught, cleared = int((pos_a & kept).sum()), int((a & ~kept).sum())
        fit_cleared = float((f & ~kept).sum() / f.sum())
    else:
        caught = cleared = 0
        fit_cleared = math.nan
    n_pos, n_a = int(pos_a.sum()), int(a.sum())
    low, high = wilson_interval(np.array([caught, cleared]), np.array([n_pos, n_a]), level)
    ok = math.isfinite(threshold)
    sens = caught / n_pos if ok and n_pos else math.nan
    share = cleared / n_a if ok and n_a else math.nan
    return TriagePoint(label, target, threshold, int(f.sum()), int((f & (y == 1)).sum()), fit_cleared, n_a, n_pos,
                       sens, float(low[0]) if ok else math.nan, float(high[0]) if ok else math.nan,
                       share, float(low[1]) if ok else math.nan, float(high[1]) if ok else math.nan,
                       n_pos - caught if ok else 0)


def triage(names: Sequence[str], labels: np.ndarray, scores: np.ndarray, fit: np.ndarray, apply: np.ndarray,
           level: float, targets: Sequence[float] = TARGETS) -> list[TriagePoint]:
    """(N, K) labels (< 0 unknown) and scores -> a TriagePoint per label and target, then ANY_FINDING's."""
    points = [triage_point(name, labels[:, k], scores[:, k], fit, apply, t, level)
              for k, name in enumerate(names) for t in targets]
    y_any = any_finding(labels)
    for t in targets:
        points.append(triage_point(ANY_FINDING, y_any, any_finding_scores(labels, scores, fit, t), fit, apply, t,
                                   level))
    return points


def triage_curve(y: np.ndarray, s: np.ndarray, max_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(N,) labels (< 0 unknown) and scores -> (sensitivity, cleared share) at every threshold, from clearing
    nothing (1, 0) to clearing everything (0, 1); at most `max_points` points, evenly spaced in the ranks."""
    known = (y >= 0) & ~np.isnan(s)
    y, s = (np.asarray(y)[known] == 1), np.asarray(s, dtype=np.float64)[known]
    if y.size == 0 or not y.any():
        return np.zeros(0), np.zeros(0)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    # Clearing everything below the i-th distinct score: cleared = i images, caught = positives from i on.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    cuts = np.r_[starts, s.size]
    positives_below = np.r_[0, np.cumsum(y)][cuts]
    sensitivity = 1.0 - positives_below / y.sum()
    cleared = cuts / s.size
    if sensitivity.size > max_points:
        keep = np.unique(np.linspace(0, sensitivity.size - 1, max_points).round().astype(int))
        sensitivity, cleared = sensitivity[keep], cleared[keep]
    return sensitivity, cleared
