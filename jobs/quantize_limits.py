"""quantize's explicit accuracy limits (--max-drop / --max-prob-diff): NNCF's accuracy control on the evaluation
images, and the check that the written INT8 model meets them as measured here. Takes AgreementLimits, never
quantize's config (quantize imports this module, not the reverse).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from actors.openvino_ir import AccuracyControl, RanPrecision
from xray.evaluation.agreement import PrecisionAgreement
from xray.evaluation.metrics import mean_auroc, per_label_auroc


@dataclass(frozen=True)
class AgreementLimits:
    """quantize --max-drop (mean AUROC drop) and --max-prob-diff (p99 |p_fp32 - p_int8|); None: not limited."""

    max_drop: float | None = None
    max_prob_diff: float | None = None

    @property
    def any(self) -> bool:
        return self.max_drop is not None or self.max_prob_diff is not None


class AgreementNotReached(ValueError):
    """Accuracy control could not bring INT8 within --max-drop / --max-prob-diff: nothing is written. Carries what
    was reached (`int8`, `ran`) for callers that report it (bench.calibration)."""

    def __init__(self, message: str, int8: PrecisionAgreement | None = None, ran: RanPrecision | None = None) -> None:
        super().__init__(message)
        self.int8, self.ran = int8, ran


def accuracy_control(limits: AgreementLimits, labels: np.ndarray, pixels: np.ndarray,
                     p32: np.ndarray) -> AccuracyControl | None:
    """NNCF's loop for --max-drop / --max-prob-diff on the evaluation images (labels (N, L), pixels, FP32's
    probabilities). One score for both: 1 - the larger of (AUROC drop / max-drop) and (p99 |dp| / max-prob-diff), so
    FP32 scores 1 and a drop of 1 is the limit of both."""
    if not limits.any:
        return None
    if limits.max_drop is not None and math.isnan(mean_auroc(per_label_auroc(labels, p32))):
        raise ValueError(f"--max-drop: none of the {len(labels)} evaluation images' labels has both "
                         "positives and negatives, so AUROC is undefined; raise --eval-size")

    def score(rows: np.ndarray, probs: np.ndarray) -> float:
        worst = 0.0
        if limits.max_drop is not None:
            y = labels[rows]
            drop = mean_auroc(per_label_auroc(y, p32[rows])) - mean_auroc(per_label_auroc(y, probs))
            worst = max(worst, 0.0 if math.isnan(drop) else drop / max(limits.max_drop, 1e-9))
        if limits.max_prob_diff is not None:
            worst = max(worst, float(np.quantile(np.abs(probs - p32[rows]), 0.99)) / limits.max_prob_diff)
        return 1.0 - worst

    return AccuracyControl(pixels, p32, score, max_drop=1.0)


def check_agreement(limits: AgreementLimits, int8: PrecisionAgreement, ran: RanPrecision, out: str) -> None:
    """The written artifact must meet the limits on its evaluation images, measured here, not as NNCF saw it;
    `out` names the --out nothing is written to."""
    problems = []
    if limits.max_drop is not None and int8.auroc_drop > limits.max_drop:
        problems.append(f"mean AUROC dropped {int8.auroc_drop:.4f} (FP32 {int8.reference_mean_auroc:.4f}, INT8 "
                        f"{int8.mean_auroc:.4f}), above --max-drop {limits.max_drop}")
    if limits.max_prob_diff is not None and int8.abs_prob_diff["p99"] > limits.max_prob_diff:
        problems.append(f"p99 |p_fp32 - p_int8| is {int8.abs_prob_diff['p99']:.4f}, above --max-prob-diff "
                        f"{limits.max_prob_diff}")
    if problems:
        floats = sum(n for key, n in ran.compute.items() if not key.endswith((":u8", ":i8")))
        raise AgreementNotReached(
            f"INT8 did not reach the accuracy asked for on {int8.images} evaluation images, with {floats} of "
            f"{sum(ran.compute.values())} compute layers left in float by NNCF's accuracy control: "
            + "; ".join(problems) + f". Nothing was written to --out {out}. Allow more, evaluate on more "
            "images (--eval-size), or keep layers in float yourself (--ignored-names / --ignored-types)", int8, ran)
