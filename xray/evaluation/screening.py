"""The screening view of a scored run: per-label thresholds for a target sensitivity, flags, and a ranking.

Shapes: labels Y (N, L) of {0, 1}, probabilities P (N, L) (NaN where an image was not scored), thresholds
(L,). An image is flagged for a label when its probability is >= the label's threshold; a NaN threshold
(a label without positives on the fitting split) flags nothing. Thresholds are fit on one split and
applied to another, so the reported sensitivity on the second is an honest estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def sensitivity_threshold(y: np.ndarray, s: np.ndarray, target: float) -> float:
    """(N,) labels and scores -> the highest threshold whose sensitivity (share of positives with score >=
    threshold) is at least `target`; NaN when there is no positive.

    The highest such threshold flags the fewest negatives. With ties it is a positive's own score, so the
    achieved sensitivity can exceed the target.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    y = np.asarray(y).astype(bool).ravel()
    positives = np.sort(np.asarray(s, dtype=np.float64).ravel()[y])[::-1]
    if positives.size == 0:
        return math.nan
    # The k-th highest positive score keeps k positives at or above it; 1e-9 absorbs 0.9 * 10 = 9.000000000000002.
    k = max(1, math.ceil(target * positives.size - 1e-9))
    return float(positives[k - 1])


def sensitivity_thresholds(labels: np.ndarray, probs: np.ndarray, target: float) -> np.ndarray:
    """(N, L) labels and probabilities -> (L,) thresholds reaching `target` sensitivity per label."""
    _check_shapes(labels, probs)
    return np.array([sensitivity_threshold(labels[:, j], probs[:, j], target) for j in range(labels.shape[1])])


def flags(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N, L) probabilities and (L,) thresholds -> (N, L) bool; NaN probabilities and thresholds never flag."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return p >= np.asarray(thresholds, dtype=np.float64)[None, :]


@dataclass(frozen=True)
class FlagCounts:
    """What the thresholds do on a set of images, per label (each (L,)); rates are NaN when undefined."""

    flagged: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray

    @property
    def sensitivity(self) -> np.ndarray:
        return _ratio(self.true_positives, self.positives)

    @property
    def specificity(self) -> np.ndarray:
        return _ratio(self.negatives - self.false_positives, self.negatives)

    @property
    def ppv(self) -> np.ndarray:
        return _ratio(self.true_positives, self.flagged)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, math.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def flag_counts(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> FlagCounts:
    """(N, L) labels, (N, L) probabilities, (L,) thresholds -> per-label flag counts on these N images."""
    _check_shapes(labels, probs)
    y = np.asarray(labels).astype(bool)
    f = flags(probs, thresholds)
    return FlagCounts(flagged=f.sum(axis=0), true_positives=(f & y).sum(axis=0), false_positives=(f & ~y).sum(axis=0),
                      positives=y.sum(axis=0), negatives=(~y).sum(axis=0))


@dataclass(frozen=True)
class Ranking:
    """Images ordered for review: order (N,) row indices, and per row in that order the top label index
    and its probability (N,)."""

    order: np.ndarray
    top_label: np.ndarray
    top_prob: np.ndarray


def rank_by_top_probability(image_ids: np.ndarray, probs: np.ndarray) -> Ranking:
    """(N,) image ids and (N, L) probabilities of scored images -> highest probability first.

    Ties are broken by image id, so the ranking is deterministic. The top label of a row is its first
    label (in L order) holding the row's highest probability.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != len(image_ids):
        raise ValueError(f"probabilities {p.shape} do not match {len(image_ids)} image ids")
    if p.shape[0] == 0:
        return Ranking(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0))
    if p.shape[1] == 0 or np.isnan(p).any():
        raise ValueError("ranking needs at least one label and no missing probabilities (scored images only)")
    top_label = p.argmax(axis=1)
    top_prob = p[np.arange(p.shape[0]), top_label]
    order = np.lexsort((np.asarray(image_ids).astype(str), -top_prob))
    return Ranking(order, top_label[order], top_prob[order])


def _check_shapes(labels: np.ndarray, probs: np.ndarray) -> None:
    if np.shape(labels) != np.shape(probs) or np.ndim(labels) != 2:
        raise ValueError(f"labels {np.shape(labels)} and probabilities {np.shape(probs)} must be the same (N, L)")


@dataclass(frozen=True)
class FlagAgreement:
    """Two models' flags on the same images (N, L), each at its own thresholds: per label (L,) the images on
    which they differ, and which side flagged them."""

    images: int
    flips: np.ndarray
    only_a: np.ndarray
    only_b: np.ndarray
    compared: np.ndarray
    """(L,) bool: labels both models score (the others count no flips and have no share)."""

    @property
    def flip_share(self) -> np.ndarray:
        return np.where(self.compared, _ratio(self.flips, np.full(self.flips.shape, self.images)), math.nan)

    @property
    def overall_share(self) -> float:
        """Share of all compared (image, label) decisions that flip."""
        decisions = self.images * int(self.compared.sum())
        return float(self.flips[self.compared].sum() / decisions) if decisions else math.nan


def flag_agreement(flags_a: np.ndarray, flags_b: np.ndarray, compared: np.ndarray | None = None) -> FlagAgreement:
    """(N, L) flags of model a and of model b on the same N images -> where they disagree, per label;
    `compared` (L,) marks the labels both models score (default: all)."""
    a, b = np.asarray(flags_a, dtype=bool), np.asarray(flags_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"flags {a.shape} and {b.shape} must be the same (N, L)")
    both = np.ones(a.shape[1], dtype=bool) if compared is None else np.asarray(compared, dtype=bool)
    only_a, only_b = (a & ~b).sum(axis=0) * both, (b & ~a).sum(axis=0) * both
    return FlagAgreement(a.shape[0], only_a + only_b, only_a, only_b, both)


def pick_per_label(probs: np.ndarray, flagged: np.ndarray, preferred: np.ndarray, count: int) -> list[tuple[int, int]]:
    """(N, L) probabilities, flags and `preferred` (e.g. the image has a ground-truth box for the label) ->
    up to `count` (row, label) pairs, one label at a time in turn, each the label's highest-probability flagged
    image not picked yet, preferred images first; so the picks cover as many labels as there are flagged.

    Deterministic: ties go to the lower row (callers sort rows by image id).
    """
    p = np.asarray(probs, dtype=np.float64)
    queues = []
    for j in range(p.shape[1]):
        rows = np.flatnonzero(flagged[:, j])
        order = np.lexsort((rows, -p[rows, j], ~preferred[rows, j]))
        queues.append(list(rows[order]))
    picks: list[tuple[int, int]] = []
    used: set[int] = set()
    while len(picks) < count and any(queues):
        for j, queue in enumerate(queues):
            while queue and queue[0] in used:
                queue.pop(0)
            if queue and len(picks) < count:
                row = int(queue.pop(0))
                used.add(row)
                picks.append((row, j))
    return picks
