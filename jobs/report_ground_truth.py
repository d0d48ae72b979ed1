"""`tilescope report --ground-truth`: one run judged against other ground truths beside NIH's own labels (the
Google 2019 expert reads, or any table with a label map), on the images both cover.

Per source: select (expert-read images the run scored, in --eval-split, without the patients the model trained
on) -> side by side (AUROC against the expert reads and against NIH's labels on the same images, paired
difference) -> agreement (NIH vs expert 2x2) -> triage (thresholds fit on --fit-split at sensitivities 0.95 and
0.99, the share they clear and the sensitivity they keep on --apply-split). The tables are
ground_truth_<n>_{auroc,agreement,triage}; the page section is jobs/report_ground_truth_page.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from jobs.report_stages import ScoredImages
from storage.ground_truth_files import read_ground_truth, read_label_map
from xray.evaluation.expert import LabelAgreement, SideBySide, label_agreement, side_by_side
from xray.evaluation.triage import (
    ANY_FINDING,
    TARGETS,
    TriagePoint,
    any_finding,
    any_finding_scores,
    triage,
    triage_curve,
)
from xray.metadata.expert_labels import HEDGED, MISSING, ExpertTable
from xray.metadata.label_maps import LabelMap
from xray.metadata.splits import Split


@dataclass(frozen=True)
class GroundTruthSettings:
    """The report's flags this stage uses (report passes them down; this module never imports report)."""

    sources: tuple[str, ...]
    label_maps: tuple[str, ...]
    """In --ground-truth order; fewer than sources, or `default`, means each table's default map."""
    eval_split: Split
    fit_split: Split
    apply_split: Split
    bootstrap: int
    ci_level: float
    seed: int
    no_thresholds: str = ""
    """Why the run has no thresholds (no held-out patients known): triage says the same."""
    endpoint: str | None = None


@dataclass(frozen=True)
class GroundTruthResult:
    """One --ground-truth source against the run."""

    table: ExpertTable
    label_map: LabelMap
    unmapped: tuple[str, ...]
    """The table's labels no model output scores (Google's Fracture), left out."""
    counts: dict[str, int]
    """rows, not_scored, not_in_metadata, outside_eval_split, trained (left out), evaluated."""
    excluded: dict[str, dict[str, int]]
    """Per mapped label, among the evaluated images: hedged and missing reads (left out of that label)."""
    side: list[SideBySide]
    agreement: list[LabelAgreement]
    triage: list[TriagePoint]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Label (and ANY_FINDING) -> (sensitivity, cleared share) on the apply split, threshold-free."""
    triage_problem: str = ""
    notes: tuple[str, ...] = ()


def map_for(table_uri: str, value: str | None, outputs: tuple[str, ...], endpoint: str | None) -> LabelMap | None:
    """The --label-map given for this source (refused if it names an output the model lacks), or None."""
    if value is None or value.strip().lower() == "default":
        return None
    label_map = read_label_map(value, endpoint)
    missing = label_map.missing_outputs(outputs)
    if missing:
        raise ValueError(f"--label-map for {table_uri}: {'; '.join(missing)}: the model has no such output (its "
                         f"outputs: {', '.join(outputs)})")
    return label_map


@dataclass(frozen=True)
class LoadedSource:
    """One --ground-truth table as read, with the map its labels are read through (restricted to the model's
    outputs) and the labels left out."""

    table: ExpertTable
    label_map: LabelMap
    unmapped: tuple[str, ...]


def load_source(uri: str, map_value: str | None, outputs: tuple[str, ...], endpoint: str | None) -> LoadedSource:
    explicit = map_for(uri, map_value, outputs, endpoint)
    table = read_ground_truth(uri, explicit, endpoint)
    chosen = explicit or table.default_map()
    if chosen is None:
        raise ValueError(f"--ground-truth {uri}: no label of it is named like a model output ({', '.join(table.labels)}"
                         "); give --label-map, e.g. `My label: max(Nodule, Mass)`")
    label_map, dropped = chosen.restricted_to(outputs)
    unmapped = tuple(dict.fromkeys([*(lb for lb in table.labels if lb not in chosen.names), *dropped]))
    if not label_map.entries:
        raise ValueError(f"--ground-truth {uri}: none of its labels maps onto the model's outputs "
                         f"({label_map.origin}: {chosen.describe()}; model outputs: {', '.join(outputs)})")
    return LoadedSource(table, label_map, unmapped)


def load_sources(s: GroundTruthSettings, outputs: tuple[str, ...]) -> list[LoadedSource]:
    """Every --ground-truth source, in order, with its --label-map (by position): read before any statistic."""
    if len(s.label_maps) > len(s.sources):
        raise ValueError(f"--label-map is given {len(s.label_maps)} times for {len(s.sources)} --ground-truth files; "
                         "give one per file, in order (`default` keeps a file's default map)")
    maps = [*s.label_maps, *[None] * (len(s.sources) - len(s.label_maps))]
    return [load_source(uri, value, outputs, s.endpoint) for uri, value in zip(s.sources, maps, strict=True)]


def evaluate_source(source: LoadedSource, images: ScoredImages, s: GroundTruthSettings) -> GroundTruthResult:
    table, label_map, unmapped = source.table, source.label_map, source.unmapped

    truth = images.truth
    pos = np.searchsorted(images.image_id.astype(str), table.image_id.astype(str))
    pos = np.minimum(pos, max(images.image_id.size - 1, 0))
    scored = images.image_id.size > 0
    found = (images.image_id[pos] == table.image_id) if scored else np.zeros(table.image_id.size, dtype=bool)
    at = pos[found]
    rows = np.flatnonzero(found)
    listed = truth.known[at]
    in_split = truth.mask(s.eval_split)[at]
    split_known = truth.model_split is not None
    trained = truth.trained[at] & split_known
    keep = listed & in_split & ~trained
    counts = {"rows": int(table.image_id.size), "not_scored": int((~found).sum()),
              "not_in_metadata": int((~listed).sum()), "outside_eval_split": int((listed & ~in_split).sum()),
              "trained": int((listed & in_split & trained).sum()), "evaluated": int(keep.sum())}
    notes = []
    if not split_known and s.eval_split in (Split.ALL, Split.TRAIN_VAL, Split.TRAIN):
        notes.append("The model's training patients are not known (no recorded split, no --val-list): images from "
                     f"NIH's train/val list stay in --eval-split {s.eval_split}; if the model trained on them, its "
                     "AUROCs there are optimistic.")

    # Expert reads (N, K) and the model's and NIH's view of the same labels, on the evaluated images.
    columns = [table.labels.index(name) for name in label_map.names]
    reads = table.values[rows][:, columns]
    scores = label_map.scores(images.probs[at], images.labels)
    nih = label_map.labels(truth.labels[at], images.labels)
    side, agreement, excluded = [], [], {}
    for k, name in enumerate(label_map.names):
        definite = keep & (reads[:, k] >= 0)
        excluded[name] = {"hedged": int((keep & (reads[:, k] == HEDGED)).sum()),
                          "missing": int((keep & (reads[:, k] == MISSING)).sum())}
        rng = np.random.default_rng([s.seed, 25, k])
        side.append(side_by_side(name, reads[definite, k], nih[definite, k], scores[definite, k], s.bootstrap,
                                 s.ci_level, rng))
        agreement.append(label_agreement(name, reads[definite, k], nih[definite, k], s.ci_level))

    fit = truth.mask(s.fit_split)[at] & ~trained & listed
    apply = truth.mask(s.apply_split)[at] & ~trained & listed
    problem = ""
    if s.no_thresholds:
        problem = s.no_thresholds
    elif not (fit & (reads >= 0).any(axis=1)).any():
        problem = (f"none of the {int(found.sum())} expert-read images the run scored is in --fit-split "
                   f"{s.fit_split} (the split thresholds are fit on)")
    points, curves = [], {}
    if not problem:
        points = triage(label_map.names, reads, scores, fit, apply, s.ci_level)
        for k, name in enumerate(label_map.names):
            curves[name] = triage_curve(np.where(apply, reads[:, k], -1), scores[:, k])
        any_score = any_finding_scores(reads, scores, fit, TARGETS[0])
        curves[ANY_FINDING] = triage_curve(np.where(apply, any_finding(reads), -1), any_score)
    return GroundTruthResult(table, label_map, unmapped, counts, excluded, side, agreement, points, curves, problem,
                             tuple(notes))


def nih_triage(images: ScoredImages, fit: Split, apply: Split, level: float) -> tuple[list[TriagePoint], tuple]:
    """Triage against NIH's own labels (every label of the run and any finding, images not in the metadata left
    out): the points, and the any-finding curve on the apply split."""
    truth = images.truth
    y = np.where(truth.known[:, None], truth.labels, -1).astype(np.int8)
    probs = images.probs.astype(np.float64)
    fit_mask, apply_mask = truth.mask(fit), truth.mask(apply)
    points = triage(images.labels, y, probs, fit_mask, apply_mask, level)
    any_score = any_finding_scores(y, probs, fit_mask, TARGETS[0])
    return points, triage_curve(np.where(apply_mask, any_finding(y), -1), any_score)


def evaluate_ground_truth(images: ScoredImages, s: GroundTruthSettings,
                          sources: list[LoadedSource]) -> list[GroundTruthResult]:
    """Every loaded source against the run, in order."""
    return [evaluate_source(source, images, s) for source in sources]


def _floats(values) -> pa.Array:
    return pa.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values],
                    pa.float64())


def ground_truth_tables(result: GroundTruthResult) -> dict[str, pa.Table]:
    """auroc (side by side), agreement and triage, one row per label (triage: per label and target)."""
    side, agr, tri = result.side, result.agreement, result.triage
    return {
        "auroc": pa.table({
            "label": pa.array([x.label for x in side], pa.string()),
            "outputs": pa.array([e.describe().split(": ", 1)[1] for e in result.label_map.entries], pa.string()),
            "images": pa.array([x.images for x in side], pa.int64()),
            "expert_positives": pa.array([x.expert_positives for x in side], pa.int64()),
            "nih_positives": pa.array([x.nih_positives for x in side], pa.int64()),
            "hedged_excluded": pa.array([result.excluded[x.label]["hedged"] for x in side], pa.int64()),
            "missing_excluded": pa.array([result.excluded[x.label]["missing"] for x in side], pa.int64()),
            "auroc_expert": _floats(x.expert_auroc for x in side),
            "auroc_expert_ci_low": _floats(x.expert_low for x in side),
            "auroc_expert_ci_high": _floats(x.expert_high for x in side),
            "auroc_nih": _floats(x.nih_auroc for x in side),
            "auroc_nih_ci_low": _floats(x.nih_low for x in side),
            "auroc_nih_ci_high": _floats(x.nih_high for x in side),
            "delta": _floats(x.delta for x in side),
            "delta_ci_low": _floats(x.delta_low for x in side),
            "delta_ci_high": _floats(x.delta_high for x in side),
        }),
        "agreement": pa.table({
            "label": pa.array([a.label for a in agr], pa.string()),
            "both_positive": pa.array([a.both for a in agr], pa.int64()),
            "only_nih": pa.array([a.only_nih for a in agr], pa.int64()),
            "only_expert": pa.array([a.only_expert for a in agr], pa.int64()),
            "both_negative": pa.array([a.neither for a in agr], pa.int64()),
            "nih_sensitivity": _floats(a.sensitivity for a in agr),
            "nih_sensitivity_ci_low": _floats(a.sensitivity_low for a in agr),
            "nih_sensitivity_ci_high": _floats(a.sensitivity_high for a in agr),
            "nih_ppv": _floats(a.ppv for a in agr),
            "nih_ppv_ci_low": _floats(a.ppv_low for a in agr),
            "nih_ppv_ci_high": _floats(a.ppv_high for a in agr),
        }),
        "triage": triage_table(tri),
    }


def triage_table(tri: list[TriagePoint]) -> pa.Table:
    """One row per label (and any finding) and target: the threshold, the fit split, the apply split with CIs."""
    return pa.table({
        "label": pa.array([t.label for t in tri], pa.string()),
        "target_sensitivity": _floats(t.target for t in tri),
        "threshold": _floats(t.threshold for t in tri),
        "fit_images": pa.array([t.fit_images for t in tri], pa.int64()),
        "fit_positives": pa.array([t.fit_positives for t in tri], pa.int64()),
        "fit_cleared_share": _floats(t.fit_cleared for t in tri),
        "apply_images": pa.array([t.apply_images for t in tri], pa.int64()),
        "apply_positives": pa.array([t.apply_positives for t in tri], pa.int64()),
        "sensitivity": _floats(t.sensitivity for t in tri),
        "sensitivity_ci_low": _floats(t.sensitivity_low for t in tri),
        "sensitivity_ci_high": _floats(t.sensitivity_high for t in tri),
        "cleared_share": _floats(t.cleared for t in tri),
        "cleared_share_ci_low": _floats(t.cleared_low for t in tri),
        "cleared_share_ci_high": _floats(t.cleared_high for t in tri),
        "positives_cleared": pa.array([t.missed for t in tri], pa.int64()),
    }, schema=_TRIAGE_SCHEMA) if tri else _TRIAGE_SCHEMA.empty_table()


_TRIAGE_SCHEMA = pa.schema([
    ("label", pa.string()), ("target_sensitivity", pa.float64()), ("threshold", pa.float64()),
    ("fit_images", pa.int64()), ("fit_positives", pa.int64()), ("fit_cleared_share", pa.float64()),
    ("apply_images", pa.int64()), ("apply_positives", pa.int64()), ("sensitivity", pa.float64()),
    ("sensitivity_ci_low", pa.float64()), ("sensitivity_ci_high", pa.float64()), ("cleared_share", pa.float64()),
    ("cleared_share_ci_low", pa.float64()), ("cleared_share_ci_high", pa.float64()), ("positives_cleared", pa.int64()),
])


def ground_truth_json(result: GroundTruthResult) -> dict:
    """report.json's entry for one source."""
    def clean(v: float) -> float | None:
        return None if v is None or math.isnan(v) else float(v)

    return {
        "source": result.table.source, "name": result.table.name, "label_map": result.label_map.describe(),
        "label_map_origin": result.label_map.origin, "unmapped": list(result.unmapped), "counts": result.counts,
        "excluded": result.excluded, "triage_problem": result.triage_problem or None,
        "auroc_expert": {x.label: clean(x.expert_auroc) for x in result.side},
        "auroc_nih": {x.label: clean(x.nih_auroc) for x in result.side},
        "delta": {x.label: clean(x.delta) for x in result.side},
        "triage": [{"label": t.label, "target": t.target, "sensitivity": clean(t.sensitivity),
                    "cleared_share": clean(t.cleared)} for t in result.triage],
    }
