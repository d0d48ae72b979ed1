"""The stages of `tilescope report` between reading the runs and saving the files (driver-side, no Ray).

select (one ok row per image, ground truth joined) -> evaluate (AUROC + CIs, deltas, curves) -> screen
(thresholds, flags, ranking) -> tables (pyarrow, for CSV/Parquet and the page) -> overlays (heatmaps).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from storage.archives import fetch_images
from storage.metadata_files import ArchiveMetadata
from storage.results import ScoredRun, error_reason, read_heatmaps
from xray.decode import DecodeError, decode_gray8
from xray.evaluation import (
    AurocDelta,
    AurocEstimate,
    ClassHistogram,
    auroc_intervals,
    class_histogram,
    paired_auroc_delta,
    roc_curve,
)
from xray.ground_truth import GroundTruth, Split, join_ground_truth
from xray.labels import LABELS
from xray.metrics import mean_auroc
from xray.report_html import Overlay
from xray.report_plots import heatmap_overlay_png
from xray.screening import FlagCounts, Ranking, flag_counts, flags, rank_by_top_probability, sensitivity_thresholds


@dataclass(frozen=True)
class ScoredImages:
    """The ok rows of one run, one per image (the first by source if an image was scored twice); N images."""

    labels: tuple[str, ...]
    image_id: np.ndarray  # (N,) str, sorted
    source: np.ndarray  # (N,) object
    probs: np.ndarray  # (N, L) float32
    tile_max: np.ndarray | None  # (N,) float32
    truth: GroundTruth
    duplicates: int  # ok rows dropped because their image already had one


def select_scored(run: ScoredRun, meta: ArchiveMetadata) -> ScoredImages:
    ok = (run.status == "ok") & ~np.isnan(run.probs).any(axis=1)
    ids = run.image_id[ok].astype(str)
    first = np.r_[True, ids[1:] != ids[:-1]] if ids.size else np.zeros(0, dtype=bool)  # rows sorted by id
    keep = np.flatnonzero(ok)[first]
    image_id = run.image_id[keep].astype(str)
    truth = join_ground_truth(image_id, meta.entries, run.labels, meta.train_val, meta.test)
    return ScoredImages(run.labels, image_id, run.source[keep], run.probs[keep],
                        None if run.tile_max is None else run.tile_max[keep], truth, int(ok.sum() - keep.size))


@dataclass(frozen=True)
class Evaluation:
    """Per label (L entries each) on the evaluated split; the baseline fields only with a second run."""

    labels: tuple[str, ...]
    estimates: list[AurocEstimate]
    rocs: list[tuple[np.ndarray, np.ndarray]]
    histograms: list[ClassHistogram]
    deltas: list[AurocDelta] | None = None
    baseline_rocs: list[tuple[np.ndarray, np.ndarray] | None] | None = None
    paired_images: int = 0

    @property
    def mean_auroc(self) -> float:
        return mean_auroc([e.auroc for e in self.estimates])

    @property
    def baseline_mean_auroc(self) -> float:
        return mean_auroc([d.auroc_b for d in self.deltas]) if self.deltas else math.nan


def evaluate(images: ScoredImages, split: Split, resamples: int, level: float, seed: int,
             baseline: ScoredImages | None = None) -> Evaluation:
    """AUROC with bootstrap CIs, ROC curves and histograms per label on `split`; with a baseline, the paired
    deltas (this run minus the baseline) on the images of `split` that both runs scored."""
    mask = images.truth.mask(split)
    y, p = images.truth.labels[mask], images.probs[mask]
    estimates = auroc_intervals(y, p, resamples, level, seed)
    rocs = [roc_curve(y[:, j], p[:, j]) for j in range(len(images.labels))]
    hists = [class_histogram(y[:, j], p[:, j]) for j in range(len(images.labels))]
    if baseline is None:
        return Evaluation(images.labels, estimates, rocs, hists)
    _, ia, ib = np.intersect1d(images.image_id[mask], baseline.image_id, assume_unique=True, return_indices=True)
    deltas, baseline_rocs = [], []
    for j, label in enumerate(images.labels):
        if label not in baseline.labels:
            deltas.append(AurocDelta(*(math.nan,) * 6))
            baseline_rocs.append(None)
            continue
        b = baseline.probs[ib, baseline.labels.index(label)]
        deltas.append(paired_auroc_delta(y[ia, j], p[ia, j], b, level))
        baseline_rocs.append(roc_curve(y[ia, j], b))
    return Evaluation(images.labels, estimates, rocs, hists, deltas, baseline_rocs, int(ia.size))


@dataclass(frozen=True)
class Screening:
    """Thresholds (L,) fit on one split, their counts on it and on the split they are applied to, the
    flags (N, L) of every scored image, and the ranking of all N images."""

    thresholds: np.ndarray
    fit: FlagCounts
    applied: FlagCounts
    flags: np.ndarray
    ranking: Ranking


def screen(images: ScoredImages, fit_split: Split, apply_split: Split, target: float) -> Screening:
    fit_mask, apply_mask = images.truth.mask(fit_split), images.truth.mask(apply_split)
    y = images.truth.labels
    thresholds = sensitivity_thresholds(y[fit_mask], images.probs[fit_mask], target)
    return Screening(thresholds, flag_counts(y[fit_mask], images.probs[fit_mask], thresholds),
                     flag_counts(y[apply_mask], images.probs[apply_mask], thresholds),
                     flags(images.probs, thresholds), rank_by_top_probability(images.image_id, images.probs))


def auroc_table(ev: Evaluation) -> pa.Table:
    est = ev.estimates
    columns: dict[str, pa.Array] = {
        "label": pa.array(ev.labels, pa.string()), "auroc": _column([e.auroc for e in est]),
        "ci_low": _column([e.low for e in est]), "ci_high": _column([e.high for e in est]),
        "positives": pa.array([e.positives for e in est], pa.int64()),
        "negatives": pa.array([e.negatives for e in est], pa.int64()),
    }
    if ev.deltas is not None:
        columns.update({
            "baseline_auroc": _column([d.auroc_b for d in ev.deltas]), "delta": _column([d.delta for d in ev.deltas]),
            "delta_ci_low": _column([d.low for d in ev.deltas]), "delta_ci_high": _column([d.high for d in ev.deltas]),
            "paired_images": pa.array([ev.paired_images] * len(ev.labels), pa.int64()),
        })
    return pa.table(columns)


def thresholds_table(labels: tuple[str, ...], sc: Screening) -> pa.Table:
    fit, app = sc.fit, sc.applied
    return pa.table({
        "label": pa.array(labels, pa.string()), "threshold": _column(sc.thresholds),
        "fit_images": fit.positives + fit.negatives, "fit_positives": fit.positives, "fit_flagged": fit.flagged,
        "fit_sensitivity": _column(fit.sensitivity),
        "apply_images": app.positives + app.negatives, "apply_positives": app.positives,
        "apply_flagged": app.flagged, "apply_true_positives": app.true_positives,
        "apply_sensitivity": _column(app.sensitivity), "apply_specificity": _column(app.specificity),
        "apply_ppv": _column(app.ppv),
    })


def screening_table(images: ScoredImages, sc: Screening) -> pa.Table:
    """Every scored image, highest probability first."""
    order = sc.ranking.order
    names = np.array(images.labels, dtype=object)
    flagged = sc.flags[order]
    split = images.truth.split[order]
    findings = images.truth.findings[order]
    columns = {
        "rank": pa.array(np.arange(1, order.size + 1, dtype=np.int64)),
        "image_id": pa.array(images.image_id[order], pa.string()),
        "split": pa.array([s or None for s in split], pa.string()),
        "top_label": pa.array(names[sc.ranking.top_label], pa.string()),
        "top_prob": pa.array(sc.ranking.top_prob.astype(np.float32)),
        "flagged_labels": pa.array(["|".join(names[row]) for row in flagged], pa.string()),
        "n_flagged": pa.array(flagged.sum(axis=1).astype(np.int32)),
        "findings": pa.array([f or None for f in findings], pa.string()),
    }
    if images.tile_max is not None:
        columns["tile_max"] = pa.array(images.tile_max[order].astype(np.float32))
    return pa.table(columns)


def errors_table(run: ScoredRun) -> pa.Table:
    """Error rows grouped by reason (the text before its first ':', as in the run manifest)."""
    errors = run.status == "error"
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


def overlays(run: ScoredRun, images: ScoredImages, sc: Screening, archive: str | None,
             count: int) -> tuple[list[Overlay], str]:
    """Heatmap overlays for the `count` highest-ranked images, and a note saying what was left out and why."""
    if run.heatmap_shape is None:
        return [], "This run has no heatmaps (only tile-ensemble runs write them); section omitted."
    if count == 0:
        return [], "--overlays 0: section omitted."
    if archive is None:
        return [], "The run has heatmaps; pass --archive to overlay them on the images."
    n_heat = run.heatmap_shape[0]
    order = LABELS if n_heat == len(LABELS) else images.labels
    if n_heat != len(order):
        return [], f"Heatmaps hold {n_heat} labels, neither the {len(LABELS)} ChestX-ray14 labels nor the run's."
    top = sc.ranking.order[:count]
    ids = [str(images.image_id[i]) for i in top]
    heatmaps = read_heatmaps(run, ids)
    pictures = fetch_images(archive, {i: str(images.source[r]) for i, r in zip(ids, top, strict=True)
                                      if i in heatmaps}, run.endpoint)
    result, missing = [], []
    for rank, row in enumerate(top):
        image_id, label = ids[rank], images.labels[int(sc.ranking.top_label[rank])]
        if image_id not in heatmaps or image_id not in pictures or label not in order:
            missing.append(image_id)
            continue
        try:
            gray = decode_gray8(pictures[image_id])
        except DecodeError:
            missing.append(image_id)
            continue
        png = heatmap_overlay_png(gray, heatmaps[image_id][order.index(label)])
        result.append(Overlay(image_id, label, float(images.probs[row, images.labels.index(label)]), png))
    note = f"No heatmap or image found for {', '.join(missing)}." if missing else ""
    return result, note


def _column(values) -> pa.Array:
    """Floats with NaN as null (an AUROC of a one-class label is undefined, not a number)."""
    arr = np.asarray(values, dtype=np.float64)
    return pa.array(arr, mask=np.isnan(arr))
