"""The decision budget of an INT8 model: how many screening decisions it changes against its FP32 model, on the
model's validation patients (never the test split), at the thresholds the report would fit there.

Per label, FP32's threshold is the highest one reaching SCREENING_TARGET sensitivity on these images (what `tilescope
report` fits on the same patients with its defaults); both models are flagged at it, and an image whose flag
differs is a flip. The thresholds are fit on these same images, so each sits exactly on the FP32 probability of
the image it was fit on (a positive's own score): any change, however small, flips that image half the time, and
on the test split, where the report applies the threshold, no image sits there. Those images are therefore left
out of their label's flip count (one per label, more only with tied scores): what is counted estimates the flips a
deployment would see on new images. On 65 images one such artefact would read as 1.5%, over a 1% budget by itself.
Figures: the flip share per label, its worst and mean over labels with a threshold, p99 of
|p_fp32 - p_int8| over every image and label, and the mean AUROC drop. Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xray.evaluation.agreement import abs_diff_quantiles
from xray.evaluation.metrics import mean_auroc, per_label_auroc
from xray.evaluation.screening import flags, sensitivity_thresholds

SCREENING_TARGET = 0.9
"""The report's default --target-sensitivity: the thresholds a deployment would use."""


@dataclass(frozen=True)
class DecisionBudget:
    """What an INT8 model may change: worst-label flip share and p99 |dp| (quantize --budget-flips/--budget-p99)."""

    flips: float = 0.01
    p99: float = 0.05

    def to_json(self) -> dict:
        return {"worst_label_flips": self.flips, "p99_abs_prob_diff": self.p99}


@dataclass(frozen=True)
class DecisionFigures:
    """One INT8 candidate against FP32 on the budget images (see the module docstring)."""

    images: int
    labels: tuple[str, ...]
    thresholds: tuple[float, ...]
    flip_share: tuple[float, ...]
    p99: float
    auroc_drop: float
    at_threshold: int = 0
    """(image, label) pairs left out of the flip counts: the images the thresholds were fit on."""

    @property
    def worst_flips(self) -> float:
        finite = [v for v in self.flip_share if not math.isnan(v)]
        return max(finite) if finite else math.nan

    @property
    def worst_label(self) -> str:
        finite = [(v, label) for v, label in zip(self.flip_share, self.labels, strict=True) if not math.isnan(v)]
        return max(finite)[1] if finite else ""

    @property
    def mean_flips(self) -> float:
        finite = [v for v in self.flip_share if not math.isnan(v)]
        return sum(finite) / len(finite) if finite else math.nan

    def over(self, budget: DecisionBudget) -> list[str]:
        """What exceeds the budget, worded ([] when within it; nan figures count as unmeasured, not over)."""
        out = []
        if self.worst_flips > budget.flips:
            out.append(f"worst-label flips {self.worst_flips:.1%} ({self.worst_label}) > {budget.flips:.1%}")
        if self.p99 > budget.p99:
            out.append(f"p99 |dp| {self.p99:.3f} > {budget.p99:.3f}")
        return out

    def meets(self, budget: DecisionBudget) -> bool:
        return not self.over(budget)

    def describe(self) -> str:
        worst = f"{self.worst_flips:.1%} ({self.worst_label})" if self.worst_label else "n/a"
        return (f"worst-label flips {worst}, mean {self.mean_flips:.2%}, p99 |dp| {self.p99:.3f}, "
                f"AUROC drop {self.auroc_drop:+.4f}")

    def to_json(self) -> dict:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {"images": self.images, "worst_label_flips": clean(self.worst_flips), "worst_label": self.worst_label,
                "mean_flips": clean(self.mean_flips), "p99_abs_prob_diff": clean(self.p99),
                "auroc_drop": clean(self.auroc_drop), "left_out_at_threshold": self.at_threshold,
                "flip_share": {label: clean(v) for label, v in zip(self.labels, self.flip_share, strict=True)},
                "fp32_thresholds": {label: clean(v) for label, v in zip(self.labels, self.thresholds, strict=True)}}


def fp32_thresholds(labels: np.ndarray, p32: np.ndarray, target: float = SCREENING_TARGET) -> np.ndarray:
    """(N, L) labels and FP32 probabilities -> (L,) thresholds at `target` sensitivity (nan without positives)."""
    return sensitivity_thresholds(np.asarray(labels), np.asarray(p32, np.float64), target)


def decision_figures(names: tuple[str, ...], labels: np.ndarray, p32: np.ndarray, p8: np.ndarray,
                     thresholds: np.ndarray) -> DecisionFigures:
    """(N, L) labels, FP32 and INT8 probabilities of the budget images, and FP32's (L,) thresholds."""
    drop = mean_auroc(per_label_auroc(labels, p32)) - mean_auroc(per_label_auroc(labels, p8))
    shares, left_out = decision_flips(p32, p8, thresholds)
    return DecisionFigures(len(labels), tuple(names), tuple(float(t) for t in thresholds), tuple(shares),
                           abs_diff_quantiles(p32, p8)["p99"], float(drop), left_out)


def decision_flips(p32: np.ndarray, p8: np.ndarray, thresholds: np.ndarray) -> tuple[list[float], int]:
    """Per label, the share of images flagged by one model and not the other at FP32's threshold, leaving out the
    images whose FP32 probability is the threshold itself (see the module docstring); NaN for a label without a
    threshold. Also returns how many (image, label) pairs were left out."""
    a, b = np.asarray(p32, np.float64), np.asarray(p8, np.float64)
    t = np.asarray(thresholds, np.float64)
    counted = a != t[None, :]
    differ = (flags(a, t) != flags(b, t)) & counted
    shares = []
    for j in range(t.size):
        n = int(counted[:, j].sum())
        shares.append(math.nan if math.isnan(t[j]) or n == 0 else float(differ[:, j].sum()) / n)
    return shares, int((~counted[:, ~np.isnan(t)]).sum())
