"""One model's scores judged against two ground truths on the same images (expert reads and NIH's text-mined
labels), and how the two ground truths agree with each other.

side_by_side: the AUROC against each, with intervals, and their paired difference, all from one bootstrap over
images (each resample draws the images with replacement and computes both AUROCs on the same draw, so the
difference's interval accounts for the two sharing images and scores). label_agreement: the 2x2 table of the two
label sets, NIH's sensitivity and PPV taking the expert read as the truth, with Wilson intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xray.evaluation.intervals import percentile_interval, wilson_interval
from xray.evaluation.metrics import auroc

_BATCH_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class SideBySide:
    """One label on N images: AUROC against the expert reads and against NIH's labels, and expert - NIH."""

    label: str
    images: int
    expert_positives: int
    nih_positives: int
    expert_auroc: float
    expert_low: float
    expert_high: float
    nih_auroc: float
    nih_low: float
    nih_high: float
    delta: float
    delta_low: float
    delta_high: float


def weighted_auroc(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N,) labels and scores, (B, N) image weights (bootstrap counts) -> (B,) AUROCs, ties counting one half;
    nan where a weighting leaves a class empty."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(s, kind="stable")
    _, group = np.unique(np.asarray(s, dtype=np.float64)[order], return_inverse=True)
    g = int(group.max()) + 1 if group.size else 0
    w = np.asarray(weights, dtype=np.float64)[:, order]
    pos_w = np.where(y[order][None, :], w, 0.0)
    neg_w = w - pos_w
    b = w.shape[0]
    offsets = (np.arange(b) * g)[:, None]
    pos_g = np.bincount((group[None, :] + offsets).ravel(), pos_w.ravel(), minlength=b * g).reshape(b, g)
    neg_g = np.bincount((group[None, :] + offsets).ravel(), neg_w.ravel(), minlength=b * g).reshape(b, g)
    below = np.cumsum(neg_g, axis=1) - neg_g  # negatives strictly below each score group
    wins = (pos_g * (below + 0.5 * neg_g)).sum(axis=1)
    n_pos, n_neg = pos_g.sum(axis=1), neg_g.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), math.nan)


def side_by_side(label: str, expert: np.ndarray, nih: np.ndarray, scores: np.ndarray, resamples: int, level: float,
                 rng: np.random.Generator) -> SideBySide:
    """(N,) expert labels, NIH labels (both {0, 1}) and the model's scores on the same N images."""
    expert, nih = np.asarray(expert).astype(bool), np.asarray(nih).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n = s.size
    a_exp, a_nih = auroc(expert, s), auroc(nih, s)
    reps_exp, reps_nih = [], []
    per_batch = max(1, _BATCH_ELEMENTS // max(n, 1))
    for start in range(0, resamples if n else 0, per_batch):
        b = min(per_batch, resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=b)
        reps_exp.append(weighted_auroc(expert, s, counts))
        reps_nih.append(weighted_auroc(nih, s, counts))
    r_exp = np.concatenate(reps_exp) if reps_exp else np.zeros(0)
    r_nih = np.concatenate(reps_nih) if reps_nih else np.zeros(0)
    e_lo, e_hi = percentile_interval(r_exp, level)
    n_lo, n_hi = percentile_interval(r_nih, level)
    d_lo, d_hi = percentile_interval(r_exp - r_nih, level)
    return SideBySide(label, int(n), int(expert.sum()), int(nih.sum()), a_exp, e_lo, e_hi, a_nih, n_lo, n_hi,
                      a_exp - a_nih, d_lo, d_hi)


@dataclass(frozen=True)
class LabelAgreement:
    """NIH's label against the expert read of the same images (the expert read taken as the truth)."""

    label: str
    both: int
    only_nih: int
    only_expert: int
    neither: int
    sensitivity: float
    sensitivity_low: float
    sensitivity_high: float
    ppv: float
    ppv_low: float
    ppv_high: float

    @property
    def images(self) -> int:
        return self.both + self.only_nih + self.only_expert + self.neither


def label_agreement(label: str, expert: np.ndarray, nih: np.ndarray, level: float) -> LabelAgreement:
    """(N,) expert and NIH labels ({0, 1}) of the same images -> their 2x2 table, NIH's sensitivity and PPV."""
    expert, nih = np.asarray(expert).astype(bool), np.asarray(nih).astype(bool)
    both, only_nih = int((expert & nih).sum()), int((~expert & nih).sum())
    only_expert, neither = int((expert & ~nih).sum()), int((~expert & ~nih).sum())
    successes = np.array([both, both])
    trials = np.array([both + only_expert, both + only_nih])
    low, high = wilson_interval(successes, trials, level)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = np.where(trials > 0, successes / np.maximum(trials, 1), math.nan)
    return LabelAgreement(label, both, only_nih, only_expert, neither, float(point[0]), float(low[0]),
                          float(high[0]), float(point[1]), float(low[1]), float(high[1]))
