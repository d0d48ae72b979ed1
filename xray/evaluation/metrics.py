"""Ranking metrics for multi-label screening: AUROC per label and its mean."""

from __future__ import annotations

import math

import numpy as np


def auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic with average ranks for ties.

    y_true: (N,) of {0, 1}; score: (N,). Returns nan when only one class is present.
    Agrees with sklearn.metrics.roc_auc_score (ties count one half).
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but score has {s.size}")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Average ranks over runs of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def per_label_auroc(y_true: np.ndarray, probs: np.ndarray) -> list[float]:
    """(N, L) labels and (N, L) scores -> L AUROCs (nan where a label has one class only)."""
    y = np.asarray(y_true)
    p = np.asarray(probs)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and scores {p.shape} differ in shape")
    return [auroc(y[:, j], p[:, j]) for j in range(y.shape[1])]


def mean_auroc(aurocs: list[float]) -> float:
    """Mean over the labels that have both classes; nan when none has."""
    valid = [a for a in aurocs if not math.isnan(a)]
    return float(np.mean(valid)) if valid else math.nan
