"""How closely a cheaper run of a model (INT8, bf16) agrees with its FP32 run on the same images.

Mean AUROC alone hides what a screening service feels: a threshold set on FP32 probabilities flags other
images when the probabilities move, even if the ranking (AUROC) barely changes. So besides per-label AUROC
this records the distribution of |p_fp32 - p_other| (median, p99, max over every image and label) and, per
label, the share of images whose flag at the FP32 Youden threshold flips. Pure numpy.

Flags and their flips are counted by xray.evaluation.screening (flags, flag_agreement), the same code the report
uses to compare two runs: here both sides are flagged at the same, FP32, thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xray.evaluation.metrics import mean_auroc, per_label_auroc
from xray.evaluation.screening import flag_agreement, flags
from xray.tiles.join import youden_thresholds


def abs_diff_quantiles(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """(N, L) and (N, L) probabilities -> median, p99 and max of |reference - other| over all N * L values."""
    d = np.abs(np.asarray(other, np.float64) - np.asarray(reference, np.float64)).ravel()
    if d.size == 0:
        return {"median": math.nan, "p99": math.nan, "max": math.nan}
    return {"median": float(np.median(d)), "p99": float(np.quantile(d, 0.99)), "max": float(d.max())}


def flip_shares(reference: np.ndarray, other: np.ndarray, thresholds: np.ndarray) -> list[float]:
    """Per label: the share of images flagged (p >= threshold) by one run and not the other; NaN where the
    label has no threshold."""
    t = np.asarray(thresholds, np.float64)
    if len(reference) == 0:
        return [math.nan] * t.size
    flips = flag_agreement(flags(reference, t), flags(other, t), compared=~np.isnan(t))
    return [float(x) for x in flips.flip_share]


@dataclass(frozen=True)
class PrecisionAgreement:
    """FP32 vs another run on N labelled images, L labels (see the module docstring)."""

    images: int
    reference_auroc: tuple[float, ...]
    auroc: tuple[float, ...]
    abs_prob_diff: dict[str, float]
    thresholds: tuple[float, ...]
    """FP32 Youden threshold per label (NaN without both classes)."""
    flip_share: tuple[float, ...]

    @property
    def reference_mean_auroc(self) -> float:
        return mean_auroc(list(self.reference_auroc))

    @property
    def mean_auroc(self) -> float:
        return mean_auroc(list(self.auroc))

    @property
    def auroc_drop(self) -> float:
        """FP32 mean AUROC minus this run's (positive = worse); NaN when no label has both classes."""
        return self.reference_mean_auroc - self.mean_auroc

    def to_json(self) -> dict:
        return {"images": self.images, "auroc": list(self.auroc), "mean_auroc": self.mean_auroc,
                "auroc_drop": self.auroc_drop, "abs_prob_diff": dict(self.abs_prob_diff),
                "fp32_youden_thresholds": list(self.thresholds), "flag_flip_share": list(self.flip_share)}


def precision_agreement(labels: np.ndarray, reference: np.ndarray, other: np.ndarray) -> PrecisionAgreement:
    """labels (N, L) in {0, 1}, FP32 probabilities (N, L) and the other run's (N, L) -> their PrecisionAgreement."""
    labels, reference, other = (np.asarray(a) for a in (labels, reference, other))
    if not labels.shape == reference.shape == other.shape:
        raise ValueError(f"labels {labels.shape}, reference {reference.shape} and other {other.shape} differ")
    thresholds = youden_thresholds(reference, labels) if len(labels) else np.full(labels.shape[1], math.nan)
    return PrecisionAgreement(len(labels), tuple(per_label_auroc(labels, reference)),
                              tuple(per_label_auroc(labels, other)), abs_diff_quantiles(reference, other),
                              tuple(float(t) for t in thresholds), tuple(flip_shares(reference, other, thresholds)))
