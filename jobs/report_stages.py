"""The stages of `tilescope report` between reading the runs and saving the files (driver-side, no Ray).

model split (which images each run's model trained on / held out) -> select (one ok row per image + ground
truth) -> evaluate (AUROC + CIs, means, deltas, curves) -> screen (thresholds on the fit split, flags, ranking
of the view split) -> agree (flag flips between two runs) -> overlays (heatmaps with ground-truth boxes).
The tables these feed are jobs/report_tables.py; the page is jobs/report_page.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from storage.archives import fetch_images
from storage.artifacts import open_typed
from storage.fs import read_json, resolve
from storage.metadata_files import ArchiveMetadata
from storage.results import RUN_CLAIM, RowStatus
from storage.scored_runs import ScoredRun, read_heatmaps
from xray.codec.decode import DecodeError, decode_gray8
from xray.evaluation.comparison import PairedScores
from xray.evaluation.intervals import (
    AurocDelta,
    AurocEstimate,
    ClassHistogram,
    MeanInterval,
    auroc_intervals,
    class_histogram,
    mean_auroc_interval,
    paired_auroc_delta,
    roc_curve,
)
from xray.evaluation.metrics import mean_auroc
from xray.evaluation.screening import (
    FlagAgreement,
    FlagCounts,
    Ranking,
    flag_agreement,
    flag_counts,
    flags,
    pick_per_label,
    rank_by_top_probability,
    sensitivity_thresholds,
)
from xray.metadata.ground_truth import GroundTruth, join_ground_truth
from xray.metadata.labels import LABELS
from xray.metadata.manifests import ArtifactKind, EnsembleManifest
from xray.metadata.splits import ModelSplit, Split, split_by_patient
from xray.report.html import Overlay
from xray.report.overlays import heatmap_overlay_png, heatmap_scale


@dataclass(frozen=True)
class KnownSplit:
    """A run's model split, or None with the reason it is not known (for the refusal message)."""

    split: ModelSplit | None
    why_unknown: str = ""
    notes: tuple[str, ...] = ()


def model_split_of(run: ScoredRun, meta: ArchiveMetadata, val_list: frozenset[str] | None,
                   val_list_uri: str | None, endpoint: str | None) -> KnownSplit:
    """The patients the run's model trained on and held out: redrawn from the split its artifact records
    (the run's _manifest.json, or _run.json while uncommitted, names the artifact and its sha256), or the
    --val-list where none is recorded (predictions from elsewhere, a model brought in by `tilescope import`)."""
    listed = KnownSplit(ModelSplit(None, val_list, f"--val-list {val_list_uri}")) if val_list is not None else None
    if run.external:
        return listed or KnownSplit(None, "predictions from elsewhere carry no model artifact that records its "
                                          "patient split")
    if not meta.patients_known:
        return listed or KnownSplit(None, "the metadata has no Patient ID column, so the patient split the model's "
                                          "artifact records cannot be redrawn from it")
    body = run.manifest.to_json() if run.manifest else read_json(resolve(run.uri, endpoint), RUN_CLAIM) or {}
    uri = body.get("artifact_uri") or (body.get("config") or {}).get("model")
    sha = body.get("artifact_sha256")
    if not uri:
        return KnownSplit(None, f"{run.uri} does not name its model artifact")
    try:
        artifact, manifest = open_typed(uri, endpoint, "model artifact", ArtifactKind.MODEL, ArtifactKind.ENSEMBLE)
    except (OSError, ValueError) as exc:
        return KnownSplit(None, f"its model artifact cannot be read ({str(exc).splitlines()[0][:200]})")
    if sha and artifact.sha256 != sha:
        return KnownSplit(None, f"the artifact at {uri} is {artifact.sha256[:12]}, the run was scored with {sha[:12]}")
    rec = manifest.split
    if rec is None:
        return listed or KnownSplit(None, f"its model artifact {artifact.uri} ({manifest.model}) was brought in by "
                                          "`tilescope import` and does not record the patients it trained on")
    drawn = split_by_patient(meta, rec.val_fraction, rec.seed)
    notes = []
    if rec.val is not None and rec.val > len(drawn.val):
        notes.append(f"The artifact {uri} records {rec.val} validation images; its split redrawn over --metadata has "
                     f"{len(drawn.val)}: is --metadata the archive the model was trained on?")
    if isinstance(manifest, EnsembleManifest) and manifest.combiner == "stacked":
        notes.append("The ensemble's stacked combiner was fit on the same validation patients as the thresholds: "
                     "the thresholds' sensitivity on test may fall slightly below the target.")
    source = (f"artifact {artifact.uri} ({manifest.model}): patient split val_fraction {rec.val_fraction}, "
              f"seed {rec.seed}")
    return KnownSplit(ModelSplit(drawn.train, drawn.val, source, drawn.test), notes=tuple(notes))


@dataclass(frozen=True)
class ScoredImages:
    """The ok rows of one run, one per image (the first by source if an image was scored twice); N images."""

    name: str
    labels: tuple[str, ...]
    image_id: np.ndarray  # (N,) str, sorted
    source: np.ndarray  # (N,) object
    probs: np.ndarray  # (N, L) float32
    tile_max: np.ndarray | None  # (N,) float32
    truth: GroundTruth
    duplicates: int  # ok rows dropped because their image already had one


def select_scored(run: ScoredRun, meta: ArchiveMetadata, name: str, split: ModelSplit | None) -> ScoredImages:
    ok = (run.status == RowStatus.OK) & ~np.isnan(run.probs).any(axis=1)
    ids = run.image_id[ok].astype(str)
    first = np.r_[True, ids[1:] != ids[:-1]] if ids.size else np.zeros(0, dtype=bool)  # rows sorted by id
    keep = np.flatnonzero(ok)[first]
    image_id = run.image_id[keep].astype(str)
    truth = join_ground_truth(image_id, meta.entries, run.labels, meta.train_val, meta.test, split)
    return ScoredImages(name, run.labels, image_id, run.source[keep], run.probs[keep],
                        None if run.tile_max is None else run.tile_max[keep], truth, int(ok.sum() - keep.size))


def fit_split_problem(images: ScoredImages, known: KnownSplit, fit_split: Split, allow_train: bool) -> str:
    """Why thresholds cannot be fit on `fit_split` of this run ('' when they can): the model's validation
    patients are not known or not scored, or the split holds images the model trained on."""
    truth = images.truth
    fit = truth.mask(fit_split)
    if fit_split is Split.VAL and truth.model_split is None:
        return (f"--fit-split val needs the patients the model never trained on, and {known.why_unknown}. Pass "
                "--val-list FILE (the image ids held out from its training, one per line, like NIH's lists), or "
                "--fit-split test to fit on the test split itself (then applied to it: optimistic)")
    if not fit.any():
        return (f"--fit-split {fit_split}: none of the {images.image_id.size} scored images is in it "
                f"({truth.model_split.source if truth.model_split else 'NIH split lists'})")
    trained = int((fit & truth.trained).sum())
    if trained and not allow_train:
        source = truth.model_split.source if truth.model_split else "NIH's train_val_list.txt, what a model is " \
                                                                    "trained on when no artifact says otherwise"
        return (f"--fit-split {fit_split}: {trained} of its {int(fit.sum())} images are ones the model trained on "
                f"({source}); thresholds fit there reach the target sensitivity on training images, not on new "
                "patients. Use --fit-split val (the model's validation patients, the default), or pass "
                "--allow-fit-on-train to fit there anyway")
    return ""


@dataclass(frozen=True)
class Evaluation:
    """Per label (L entries each) on the evaluated split; the baseline fields only with a second run, on the
    images of the split both runs scored (nan for a label the baseline lacks)."""

    labels: tuple[str, ...]
    estimates: list[AurocEstimate]
    mean: MeanInterval
    rocs: list[tuple[np.ndarray, np.ndarray]]
    histograms: list[ClassHistogram]
    baseline_estimates: list[AurocEstimate] | None = None
    baseline_mean: MeanInterval | None = None
    deltas: list[AurocDelta] | None = None
    mean_delta: MeanInterval | None = None
    baseline_rocs: list[tuple[np.ndarray, np.ndarray] | None] | None = None
    paired_images: int = 0
    paired: PairedScores | None = None
    """Both runs' scores on the paired images, for the labels both score (means over label subsets)."""

    @property
    def mean_auroc(self) -> float:
        return mean_auroc([e.auroc for e in self.estimates])

    @property
    def baseline_mean_auroc(self) -> float:
        return self.baseline_mean.mean if self.baseline_mean is not None else math.nan


def paired_rows(images: ScoredImages, mask: np.ndarray, baseline: ScoredImages) -> tuple[np.ndarray, np.ndarray]:
    """Rows (into images, into baseline) of the images of `mask` that both runs scored, in image id order."""
    rows = np.flatnonzero(mask)
    _, ia, ib = np.intersect1d(images.image_id[rows], baseline.image_id, assume_unique=True, return_indices=True)
    return rows[ia], ib


def evaluate(images: ScoredImages, split: Split, resamples: int, level: float, seed: int,
             baseline: ScoredImages | None = None) -> Evaluation:
    """AUROC with bootstrap CIs, their mean with its CI, ROC curves and histograms per label on `split`; with a
    baseline, its AUROCs with bootstrap CIs and the paired deltas (this run minus the baseline) on the images
    of `split` both runs scored, with DeLong CIs, and the mean delta with its CI."""
    mask = images.truth.mask(split)
    y, p = images.truth.labels[mask], images.probs[mask]
    n_labels = len(images.labels)
    estimates = auroc_intervals(y, p, resamples, level, seed)
    mean = mean_auroc_interval(y, p, level)
    rocs = [roc_curve(y[:, j], p[:, j]) for j in range(n_labels)]
    hists = [class_histogram(y[:, j], p[:, j]) for j in range(n_labels)]
    if baseline is None:
        return Evaluation(images.labels, estimates, mean, rocs, hists)
    ia, ib = paired_rows(images, mask, baseline)
    shared = [j for j, label in enumerate(images.labels) if label in baseline.labels]
    columns = [baseline.labels.index(images.labels[j]) for j in shared]
    y_pair, p_pair, b_pair = images.truth.labels[ia][:, shared], images.probs[ia][:, shared], \
        baseline.probs[ib][:, columns]
    nan_estimate, nan_delta = AurocEstimate(math.nan, math.nan, math.nan, 0, 0), AurocDelta(*(math.nan,) * 6)
    b_est: list[AurocEstimate] = [nan_estimate] * n_labels
    deltas: list[AurocDelta] = [nan_delta] * n_labels
    b_rocs: list[tuple[np.ndarray, np.ndarray] | None] = [None] * n_labels
    for k, est in enumerate(auroc_intervals(y_pair, b_pair, resamples, level, seed)):
        j = shared[k]
        b_est[j] = est
        deltas[j] = paired_auroc_delta(y_pair[:, k], p_pair[:, k], b_pair[:, k], level)
        b_rocs[j] = roc_curve(y_pair[:, k], b_pair[:, k])
    return Evaluation(images.labels, estimates, mean, rocs, hists, b_est, mean_auroc_interval(y_pair, b_pair, level),
                      deltas, mean_auroc_interval(y_pair, p_pair, level, baseline=b_pair), b_rocs, int(ia.size),
                      PairedScores(tuple(images.labels[j] for j in shared), y_pair, p_pair, b_pair))


@dataclass(frozen=True)
class Screening:
    """Thresholds (L,) fit on one split, their counts on it and on the split they are applied to, the
    flags (N, L) of every scored image, and the ranking of the view split's images (`view` (N,) bool)."""

    thresholds: np.ndarray
    fit: FlagCounts
    applied: FlagCounts
    flags: np.ndarray
    view: np.ndarray
    ranking: Ranking


def screen(images: ScoredImages, fit_split: Split, apply_split: Split, view_split: Split,
           target: float, fit_thresholds: bool = True) -> Screening:
    """Thresholds reaching `target` sensitivity on fit_split, what they flag on apply_split, and the view split's
    images ranked (Ranking.order indexes into the view rows, see view_rows). Without `fit_thresholds` (no split
    to fit them on) every threshold is NaN and nothing is flagged; the ranking stands."""
    apply_mask = images.truth.mask(apply_split)
    fit_mask = images.truth.mask(fit_split) if fit_thresholds else np.zeros(apply_mask.shape, dtype=bool)
    y = images.truth.labels
    thresholds = sensitivity_thresholds(y[fit_mask], images.probs[fit_mask], target)
    view = images.truth.mask(view_split)
    return Screening(thresholds, flag_counts(y[fit_mask], images.probs[fit_mask], thresholds),
                     flag_counts(y[apply_mask], images.probs[apply_mask], thresholds),
                     flags(images.probs, thresholds), view,
                     rank_by_top_probability(images.image_id[view], images.probs[view]))


def view_rows(sc: Screening) -> np.ndarray:
    """Rows (into the run's images) of the ranked view, highest first."""
    return np.flatnonzero(sc.view)[sc.ranking.order]


def agree(images: ScoredImages, sc: Screening, baseline: ScoredImages, sc_b: Screening,
          apply_split: Split) -> FlagAgreement:
    """Flag flips per label (L,) between the run and the baseline, each at its own thresholds, on the images of
    the apply split both scored; a label the baseline lacks counts no flips (its share is reported as nan)."""
    ia, ib = paired_rows(images, images.truth.mask(apply_split), baseline)
    flags_b = np.zeros((ia.size, len(images.labels)), dtype=bool)
    for j, label in enumerate(images.labels):
        if label in baseline.labels:
            flags_b[:, j] = sc_b.flags[ib, baseline.labels.index(label)]
    return flag_agreement(sc.flags[ia], flags_b, np.array([label in baseline.labels for label in images.labels]))


def overlays(run: ScoredRun, images: ScoredImages, sc: Screening, meta: ArchiveMetadata, archive: str | None,
             count: int) -> tuple[list[Overlay], str]:
    """Heatmap overlays of the view split, one label at a time: each label's highest-probability flagged image
    (one with a ground-truth box for the label first), with every box BBox_List gives it; and a note saying what
    was left out and why."""
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
    boxes: dict[str, list] = {}
    for b in meta.bboxes:
        boxes.setdefault(b.image_index, []).append(b)
    rows = np.flatnonzero(sc.view)
    boxed = np.zeros((rows.size, len(images.labels)), dtype=bool)  # (V, L): BBox_List boxes the label there
    position = {str(images.image_id[r]): i for i, r in enumerate(rows)}
    for image_id, image_boxes in boxes.items():
        for b in image_boxes:
            if image_id in position and b.label in images.labels:
                boxed[position[image_id], images.labels.index(b.label)] = True
    heat_labels = np.array([label in order for label in images.labels])
    picks = [(int(rows[i]), j) for i, j in pick_per_label(images.probs[rows], sc.flags[rows] & heat_labels,
                                                          boxed, count)]
    if not picks:
        return [], "No image of the view split is flagged for a label the heatmaps hold."
    ids = [str(images.image_id[r]) for r, _ in picks]
    heatmaps = read_heatmaps(run, ids)
    pictures = fetch_images(archive, {i: str(images.source[r]) for i, (r, _) in zip(ids, picks, strict=True)
                                      if i in heatmaps}, run.endpoint)
    result, missing = [], []
    for image_id, (row, j) in zip(ids, picks, strict=True):
        label = images.labels[j]
        if image_id not in heatmaps or image_id not in pictures:
            missing.append(image_id)
            continue
        try:
            gray = decode_gray8(pictures[image_id])
        except DecodeError:
            missing.append(image_id)
            continue
        heat = heatmaps[image_id][order.index(label)]
        scale = heatmap_scale(heat)
        png, width, height = heatmap_overlay_png(gray, heat, scale=scale)
        zoom = width / gray.shape[1]
        drawn = tuple((b.label, b.x * zoom, b.y * zoom, b.w * zoom, b.h * zoom) for b in boxes.get(image_id, ()))
        result.append(Overlay(image_id, label, float(images.probs[row, j]), float(sc.thresholds[j]),
                              str(images.truth.findings[row]), png, width, height, drawn, scale))
    note = f"No heatmap or image found for {', '.join(missing)}." if missing else ""
    return result, note
