"""The tables of `tilescope report` (pyarrow, written as CSV/Parquet): AUROC, thresholds, screening, errors.

Undefined numbers (the AUROC of a one-class label, a rate over zero images) are nulls, never NaN.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from jobs.report_stages import Evaluation, ScoredImages, Screening, view_rows
from storage.results import RowStatus, error_reason
from storage.scored_runs import ScoredRun
from xray.evaluation.intervals import wilson_interval
from xray.evaluation.screening import FlagAgreement

MEAN_ROW = "mean"  # the auroc table's last row: the mean over labels with both classes


def auroc_table(ev: Evaluation, agreement: FlagAgreement | None = None) -> pa.Table:
    """One row per label and a last `mean` row (its interval from DeLong components summed over labels)."""
    est = ev.estimates
    columns: dict[str, pa.Array] = {
        "label": pa.array([*ev.labels, MEAN_ROW], pa.string()),
        "auroc": _column([e.auroc for e in est] + [ev.mean.mean]),
        "ci_low": _column([e.low for e in est] + [ev.mean.low]),
        "ci_high": _column([e.high for e in est] + [ev.mean.high]),
        "positives": pa.array([e.positives for e in est] + [None], pa.int64()),
        "negatives": pa.array([e.negatives for e in est] + [None], pa.int64()),
    }
    if ev.deltas is not None and ev.baseline_estimates is not None and ev.baseline_mean and ev.mean_delta:
        b, d, bm, dm = ev.baseline_estimates, ev.deltas, ev.baseline_mean, ev.mean_delta
        columns.update({
            "baseline_auroc": _column([e.auroc for e in b] + [bm.mean]),
            "baseline_ci_low": _column([e.low for e in b] + [bm.low]),
            "baseline_ci_high": _column([e.high for e in b] + [bm.high]),
            "delta": _column([x.delta for x in d] + [dm.mean]),
            "delta_ci_low": _column([x.low for x in d] + [dm.low]),
            "delta_ci_high": _column([x.high for x in d] + [dm.high]),
            "paired_images": pa.array([ev.paired_images] * (len(ev.labels) + 1), pa.int64()),
        })
    if agreement is not None:
        n = len(ev.labels)
        columns.update({
            "agreement_images": pa.array([agreement.images] * n + [None], pa.int64()),
            "flag_flips": pa.array([*agreement.flips.tolist(), int(agreement.flips.sum())], pa.int64()),
            "flip_share": _column([*agreement.flip_share, agreement.overall_share]),
            "flagged_run_only": pa.array([*agreement.only_a.tolist(), None], pa.int64()),
            "flagged_baseline_only": pa.array([*agreement.only_b.tolist(), None], pa.int64()),
        })
    return pa.table(columns)


def thresholds_table(labels: tuple[str, ...], sc: Screening, level: float) -> pa.Table:
    """Per label: the threshold, what it does on the fit split, and on the apply split with Wilson intervals
    of sensitivity, specificity and PPV."""
    fit, app = sc.fit, sc.applied
    tp, fp = app.true_positives, app.false_positives
    sens = wilson_interval(tp, app.positives, level)
    spec = wilson_interval(app.negatives - fp, app.negatives, level)
    ppv = wilson_interval(tp, app.flagged, level)
    return pa.table({
        "label": pa.array(labels, pa.string()), "threshold": _column(sc.thresholds),
        "fit_images": fit.positives + fit.negatives, "fit_positives": fit.positives, "fit_flagged": fit.flagged,
        "fit_sensitivity": _column(fit.sensitivity),
        "apply_images": app.positives + app.negatives, "apply_positives": app.positives,
        "apply_flagged": app.flagged, "apply_true_positives": tp,
        "apply_sensitivity": _column(app.sensitivity),
        "apply_sensitivity_low": _column(sens[0]), "apply_sensitivity_high": _column(sens[1]),
        "apply_specificity": _column(app.specificity),
        "apply_specificity_low": _column(spec[0]), "apply_specificity_high": _column(spec[1]),
        "apply_ppv": _column(app.ppv), "apply_ppv_low": _column(ppv[0]), "apply_ppv_high": _column(ppv[1]),
    })


def screening_table(images: ScoredImages, sc: Screening) -> pa.Table:
    """Every image of the view split, highest probability first."""
    rows = view_rows(sc)
    names = np.array(images.labels, dtype=object)
    flagged = sc.flags[rows]
    truth = images.truth
    columns = {
        "rank": pa.array(np.arange(1, rows.size + 1, dtype=np.int64)),
        "image_id": pa.array(images.image_id[rows], pa.string()),
        "split": pa.array([s or None for s in truth.split[rows]], pa.string()),
        "model_split": pa.array([s or None for s in truth.role()[rows]], pa.string()),
        "top_label": pa.array(names[sc.ranking.top_label], pa.string()),
        "top_prob": pa.array(sc.ranking.top_prob.astype(np.float32)),
        "flagged_labels": pa.array(["|".join(names[row]) for row in flagged], pa.string()),
        "n_flagged": pa.array(flagged.sum(axis=1).astype(np.int32)),
        "findings": pa.array([f or None for f in truth.findings[rows]], pa.string()),
    }
    if images.tile_max is not None:
        columns["tile_max"] = pa.array(images.tile_max[rows].astype(np.float32))
    return pa.table(columns)


def errors_table(run: ScoredRun) -> pa.Table:
    """Error rows grouped by reason (the text before its first ':', as in the run manifest)."""
    errors = run.status == RowStatus.ERROR
    reasons: Counter[str] = Counter()
    example: dict[str, tuple[str, str]] = {}
    for image_id, error in zip(run.image_id[errors], run.error[errors], strict=True):
        reason = error_reason(error or "unknown")
        reasons[reason] += 1
        example.setdefault(reason, (image_id, error or ""))
    ordered = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    return pa.table({"reason": pa.array([r for r, _ in ordered], pa.string()),
                     "rows": pa.array([c for _, c in ordered], pa.int64()),
                     "example_image_id": pa.array([example[r][0] for r, _ in ordered], pa.string()),
                     "example_error": pa.array([example[r][1] for r, _ in ordered], pa.string())})


def _column(values) -> pa.Array:
    """Floats with NaN as null (an AUROC of a one-class label is undefined, not a number)."""
    arr = np.asarray(values, dtype=np.float64)
    return pa.array(arr, mask=np.isnan(arr))
