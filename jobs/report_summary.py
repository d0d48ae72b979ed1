"""The report page's summary box: its conclusions worded no stronger than their intervals, what the data are and
what the page is for, and the badges that mark the labels whose figures need care.

Takes the numbers the report's stages computed (Evaluation, Screening) and small typed settings; never imports
the report job back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from jobs.report_stages import Evaluation, Screening
from xray.evaluation.comparison import verdict
from xray.evaluation.ensemble import Localisation
from xray.evaluation.intervals import wilson_interval

FEW_POSITIVES = 10
"""A label with fewer positive images than this on the evaluated split gets a badge: its AUROC rests on too few."""
FAR_BELOW = 0.15
"""Test sensitivity more than this below the target gets a badge: the threshold does not carry over."""
INTENDED_USE = ("Intended use: checking how a screening model ranks and flags the images of a labelled archive, for "
                "research and validation. Not for diagnosing individual patients.")


@dataclass(frozen=True)
class SummarySettings:
    """What the summary needs to know besides the numbers (ReportConfig fields of the same meaning)."""

    names: tuple[str, ...]
    """The runs' names on the page, in --results order."""
    eval_split: str
    fit_split: str
    apply_split: str
    target_sensitivity: float
    ci_level: float
    evaluated_images: int
    synthetic: bool
    """The metadata came with `tilescope synth`'s marker (storage.metadata_files.SYNTH_MARKER)."""
    metadata: str
    no_thresholds: str = ""
    """Why there are no thresholds ('' when there are)."""
    localisation: Localisation | None = None
    """A tile-ensemble run's heatmap peak in the BBox_List box on the boxed test images (jobs/localisation.py)."""


@dataclass(frozen=True)
class Summary:
    conclusions: tuple[str, ...]
    data_note: str
    badges: dict[str, tuple[str, ...]]
    """Label -> its badges (empty for a label whose figures stand)."""


def badges(ev: Evaluation, sc: Screening, target: float, thresholds: bool) -> dict[str, tuple[str, ...]]:
    """Per label: few positives, an AUROC interval that includes 0.5 (or lies below it), a threshold fit on few
    positives, applied sensitivity far below the target."""
    sensitivity = np.asarray(sc.applied.sensitivity, dtype=np.float64)
    out: dict[str, tuple[str, ...]] = {}
    for j, (label, e) in enumerate(zip(ev.labels, ev.estimates, strict=True)):
        marks = []
        if e.positives < FEW_POSITIVES:
            marks.append(f"few positives ({e.positives})")
        if not any(math.isnan(v) for v in (e.low, e.high)):
            if e.high < 0.5:
                marks.append("below chance")
            elif e.low <= 0.5:
                marks.append("CI includes 0.5")
        fit_positives = int(np.asarray(sc.fit.positives)[j])
        if thresholds and 0 < fit_positives < FEW_POSITIVES:
            marks.append(f"threshold fit on {fit_positives} positives")
        if thresholds and math.isfinite(sensitivity[j]) and sensitivity[j] < target - FAR_BELOW:
            marks.append(f"sensitivity {sensitivity[j]:.2f} vs target {target:g}")
        out[label] = tuple(marks)
    return out


def summarise(settings: SummarySettings, ev: Evaluation, sc: Screening) -> Summary:
    """The conclusions, data note and badges of one report (see the module docstring)."""
    level = f"{settings.ci_level:.0%} CI"
    name = settings.names[0]
    m = ev.mean
    lines = [f"{name}: mean AUROC {m.mean:.3f} ({level} {m.low:.3f} to {m.high:.3f}) over {m.labels} labels on "
             f"{settings.evaluated_images} images of the {settings.eval_split} split."]
    if ev.mean_delta is not None and len(settings.names) > 1:
        d = ev.mean_delta
        words = verdict(d.mean, d.low, d.high, settings.ci_level, a=name, b=settings.names[1])
        lines.append(f"{name} against {settings.names[1]} (mean AUROC over {d.labels} labels, the same "
                     f"{ev.paired_images} images): {words}.")
    marks = badges(ev, sc, settings.target_sensitivity, not settings.no_thresholds)
    if settings.no_thresholds:
        lines.append(f"No screening thresholds: {settings.no_thresholds}.")
    else:
        sens = np.asarray(sc.applied.sensitivity, dtype=np.float64)
        finite = sens[np.isfinite(sens)]
        if finite.size:
            far = sum(1 for v in finite if v < settings.target_sensitivity - FAR_BELOW)
            lines.append(f"Thresholds fit for sensitivity {settings.target_sensitivity:g} on {settings.fit_split} "
                         f"reach {finite.min():.2f} to {finite.max():.2f} on {settings.apply_split} across "
                         f"{finite.size} labels" + (f"; {far} fall more than {FAR_BELOW:g} below the target "
                                                    "(badged below)." if far else "."))
    loc = settings.localisation
    if loc is not None and loc.boxes:
        hits = round(loc.peak_in_box * loc.boxes)
        low, high = (float(v[0]) for v in wilson_interval(np.array([hits]), np.array([loc.boxes]),
                                                          settings.ci_level))
        lines.append(f"Localisation: the heatmap's peak cell lies in the BBox_List box for {hits} of {loc.boxes} "
                     f"boxed test images' findings, {loc.peak_in_box:.0%} ({level} {low:.0%} to {high:.0%}); a cell "
                     f"drawn at random would hit {loc.chance:.0%}.")
    badged = [f"{label} ({', '.join(b)})" for label, b in marks.items() if b]
    if badged:
        lines.append(f"Read with care ({len(badged)} labels): " + "; ".join(badged[:6])
                     + (f"; and {len(badged) - 6} more (badged in the table)." if len(badged) > 6 else "."))
    if settings.synthetic:
        data = (f"Data: a synthetic archive made by `tilescope synth` ({settings.metadata}); no patient data. These "
                "figures test the pipeline and the model on drawn findings, not clinical performance.")
    else:
        data = (f"Data: labels from {settings.metadata}. NIH's ChestX-ray14 labels were text-mined from radiology "
                "reports and are known to be noisy.")
    return Summary(tuple(lines), f"{data} {INTENDED_USE}", marks)
