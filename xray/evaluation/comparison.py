"""Two models on the same images, in words no stronger than the measurement: a verdict follows its interval.

"a better by X (95% CI lo to hi)" only when the paired interval of a - b lies above 0; "b better" only when it
lies below; "no measured difference" when it holds 0 (touching counts as holding); "not measured" when there
is no interval (a label with one class on the test split). The deltas and their intervals come from
xray.evaluation.intervals (DeLong, paired: the same images for both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xray.evaluation.intervals import MeanInterval, mean_auroc_interval, paired_auroc_delta


def verdict(delta: float, low: float, high: float, level: float, a: str = "ensemble",
            b: str = "single model") -> str:
    """A paired difference a - b with its `level` interval [low, high] -> one claim the interval supports."""
    ci = f"{level * 100:g}% CI"
    if any(math.isnan(v) for v in (delta, low, high)):
        return "not measured (no interval: a class is missing or has one image)"
    if low > 0.0:
        return f"{a} better by {delta:.4f} ({ci} {low:.4f} to {high:.4f})"
    if high < 0.0:
        return f"{b} better by {-delta:.4f} ({ci} {-high:.4f} to {-low:.4f})"
    return f"no measured difference ({delta:+.4f}, {ci} {low:+.4f} to {high:+.4f})"


@dataclass(frozen=True)
class PairedScores:
    """Two models' scores on the same images for the labels both score: truth, a and b (N, K), labels (K,)."""

    labels: tuple[str, ...]
    truth: np.ndarray
    a: np.ndarray
    b: np.ndarray

    def mean_delta(self, labels: Sequence[str], level: float) -> MeanInterval:
        """Mean AUROC difference a - b over those of `labels` both score (and whose classes are both present),
        with its interval (DeLong components summed over the labels: they share images)."""
        columns = [self.labels.index(label) for label in labels if label in self.labels]
        if not columns:
            return MeanInterval(math.nan, math.nan, math.nan, math.nan, 0)
        return mean_auroc_interval(self.truth[:, columns], self.a[:, columns], level, baseline=self.b[:, columns])


def delta_lines(paired: PairedScores, focus: Sequence[str], level: float, a: str = "ensemble",
                b: str = "single model", focus_name: str = "focus") -> list[str]:
    """The lines a console prints for a - b: a heading, the mean over every label, the mean over the `focus`
    labels, and each focus label a and b both score, with both AUROCs and its positives; each with its
    verdict."""
    everything = paired.mean_delta(paired.labels, level)
    focused = paired.mean_delta(focus, level)
    rows = [(f"mean of {everything.labels} labels",
             verdict(everything.mean, everything.low, everything.high, level, a, b)),
            (f"mean of {focused.labels} {focus_name} labels",
             verdict(focused.mean, focused.low, focused.high, level, a, b))]
    for label in focus:
        if label not in paired.labels:
            continue
        j = paired.labels.index(label)
        y = paired.truth[:, j]
        d = paired_auroc_delta(y, paired.a[:, j], paired.b[:, j], level)
        said = verdict(d.delta, d.low, d.high, level, a, b)
        both = "" if math.isnan(d.auroc_a) else f"{a} {d.auroc_a:.4f} vs {b} {d.auroc_b:.4f}: "
        rows.append((f"{label} ({int(np.sum(y))} positive)", both + said))
    width = max(len(name) for name, _ in rows)
    head = (f"AUROC {a} - {b} on the {paired.truth.shape[0]} test images both scored "
            f"(paired {level * 100:g}% CIs, DeLong):")
    return [head] + [f"  {name:<{width}}  {text}" for name, text in rows]
