"""The page section of one `report --ground-truth` source (jobs/report_ground_truth.py computes it): what the
labels are and where they come from, the side-by-side AUROC, NIH vs expert agreement and the triage figures,
worded so the section reads without the README."""

from __future__ import annotations

import math

from jobs.report_ground_truth import GroundTruthResult
from xray.evaluation.triage import ANY_FINDING, TARGETS
from xray.metadata.splits import Split
from xray.report.html import GroundTruthView, TableView
from xray.report.plots import format_interval, format_metric, triage_svg

NIH_ORIGIN = ("NIH's labels were text-mined from the radiology reports by natural-language processing (Wang et al., "
              "CVPR 2017), not read from the images, and are known to be noisy; a model judged against them can look "
              "worse or better than it is.")


def _share(v: float, low: float, high: float) -> str:
    if v is None or math.isnan(v):
        return "n/a"
    if math.isnan(low) or math.isnan(high):
        return f"{v:.1%}"
    return f"{v:.1%} [{low:.1%}, {high:.1%}]"


def _signed(v: float, low: float, high: float) -> str:
    if math.isnan(v):
        return "n/a"
    text = f"{v:+.3f}"
    return text if math.isnan(low) else f"{text} [{low:+.3f}, {high:+.3f}]"


def counts_sentence(r: GroundTruthResult, eval_split: Split) -> str:
    c = r.counts
    parts = [f"{c['not_scored']} not scored by this run"] if c["not_scored"] else []
    if c["not_in_metadata"]:
        parts.append(f"{c['not_in_metadata']} not in --metadata")
    if c["outside_eval_split"]:
        parts.append(f"{c['outside_eval_split']} outside --eval-split {eval_split}")
    if c["trained"]:
        parts.append(f"{c['trained']} of patients the model trained on (left out: a model is not judged on its "
                     "training images)")
    dropped = "; ".join(parts) if parts else "none dropped"
    return f"Of the {c['rows']} images in the table: {dropped}; {c['evaluated']} evaluated."


def ground_truth_view(r: GroundTruthResult, eval_split: Split, fit: Split, apply: Split,
                      level: float) -> GroundTruthView:
    table = r.table
    pct = f"{level:.0%}"
    if table.google_2019:
        intro = [f"Expert labels: adjudicated radiologist reads of {', '.join(table.labels)}. Source: "
                 f"{table.citation}"]
    else:
        intro = [f"Labels from {table.source}: a ground truth other than NIH's own, taken as given (how it was made "
                 "is not recorded in the file). 'Expert' below means this table."]
    intro.append(NIH_ORIGIN)
    left_out = f"; left out (no model output scores them): {', '.join(r.unmapped)}" if r.unmapped else ""
    intro.append(f"How the model's outputs and NIH's labels are read as these labels ({r.label_map.origin}): "
                 f"{r.label_map.describe()}. A score is the combiner of the outputs' probabilities; NIH's label is "
                 f"positive when any of the mapped NIH labels is{left_out}.")
    intro.append(counts_sentence(r, eval_split) + " Hedged or missing reads are left out of their label and counted "
                 "in the table files (hedged_excluded, missing_excluded).")

    side = TableView(
        ("label", "images", "positives (expert / NIH)", f"AUROC vs expert [{pct} CI]", f"AUROC vs NIH [{pct} CI]",
         "expert - NIH"),
        [(x.label, x.images, f"{x.expert_positives} / {x.nih_positives}",
          format_interval(x.expert_auroc, x.expert_low, x.expert_high),
          format_interval(x.nih_auroc, x.nih_low, x.nih_high), _signed(x.delta, x.delta_low, x.delta_high))
         for x in r.side], frozenset({"label"}))
    side_caption = ("The same scores on the same images, judged against each ground truth. The intervals and the "
                    "difference come from one bootstrap over the images (each resample computes both AUROCs on the "
                    "same draw); a difference whose interval excludes 0 means the two ground truths rank this "
                    "model differently.")
    agreement = TableView(
        ("label", "both positive", "only NIH", "only expert", "both negative", f"NIH sensitivity [{pct} CI]",
         f"NIH PPV [{pct} CI]"),
        [(a.label, a.both, a.only_nih, a.only_expert, a.neither,
          _share(a.sensitivity, a.sensitivity_low, a.sensitivity_high), _share(a.ppv, a.ppv_low, a.ppv_high))
         for a in r.agreement], frozenset({"label"}))
    agreement_caption = ("Taking the expert read as the truth: NIH's sensitivity is the share of expert positives "
                         "NIH also labels, its PPV the share of NIH's positives the experts confirm (Wilson "
                         "intervals).")
    if r.triage_problem:
        triage = TableView(("label",), [])
        triage_caption = f"No triage figures: {r.triage_problem}."
        curve = ""
    else:
        triage = TableView(
            ("label", "target sensitivity", f"cleared on {fit}", f"cleared on {apply} [{pct} CI]",
             f"sensitivity on {apply} [{pct} CI]", "positives cleared"),
            [(t.label, f"{t.target:g}", _share(t.fit_cleared, math.nan, math.nan),
              _share(t.cleared, t.cleared_low, t.cleared_high),
              _share(t.sensitivity, t.sensitivity_low, t.sensitivity_high), f"{t.missed} of {t.apply_positives}")
             for t in r.triage], frozenset({"label"}))
        triage_caption = (f"A threshold is fit on the {fit} split so that it keeps the target share of that split's "
                          f"expert positives; images below it are cleared (not flagged). On the {apply} split: the "
                          "share of images it clears and the share of positives it still flags, with Wilson "
                          f"intervals. '{ANY_FINDING}' clears an image only when it is below threshold on every "
                          "label (each label's score divided by its own threshold, one threshold on the largest).")
        curves = [(name, *r.curves[name]) for name in [*r.label_map.names, ANY_FINDING] if name in r.curves]
        curve = triage_svg(f"Triage on {apply}: cleared vs sensitivity ({table.name})", curves, TARGETS)
    return GroundTruthView(f"Ground truth: {table.name}", tuple(intro), side, side_caption, agreement,
                           agreement_caption, triage, triage_caption, curve, r.notes)


def nih_triage_view(points: list, curve: tuple, fit: Split, apply: Split, level: float) -> tuple[TableView, str, str]:
    """The page's triage against NIH's labels: the any-finding rows (every label is in triage.csv), a caption and
    the any-finding curve."""
    pct = f"{level:.0%}"
    rows = [t for t in points if t.label == ANY_FINDING]
    table = TableView(
        ("target sensitivity", f"cleared on {fit}", f"cleared on {apply} [{pct} CI]",
         f"sensitivity on {apply} [{pct} CI]", "positives cleared"),
        [(f"{t.target:g}", _share(t.fit_cleared, math.nan, math.nan), _share(t.cleared, t.cleared_low, t.cleared_high),
          _share(t.sensitivity, t.sensitivity_low, t.sensitivity_high), f"{t.missed} of {t.apply_positives}")
         for t in rows])
    caption = (f"How much of the worklist could be cleared (read later, or not at all) while still flagging the "
               f"target share of images with any NIH finding: one threshold per target, fit on the {fit} split "
               "(an image is cleared only when it is below threshold on every label: each label's probability over "
               f"its own threshold, one threshold on the largest), measured on the {apply} split with Wilson "
               "intervals. NIH's labels are text-mined; triage.csv has every label's own figures.")
    svg = triage_svg(f"Triage on {apply}: cleared vs sensitivity for any finding (NIH labels)",
                     [(ANY_FINDING, *curve)], TARGETS) if curve[0].size else ""
    return table, caption, svg


def ground_truth_conclusions(r: GroundTruthResult, level: float) -> list[str]:
    """Summary-box lines: where the expert and NIH AUROCs differ (interval excludes 0), and the any-finding triage
    at the first target."""
    lines = []
    for x in r.side:
        if not (math.isnan(x.delta_low) or math.isnan(x.delta_high)) and (x.delta_low > 0 or x.delta_high < 0):
            better = "higher" if x.delta > 0 else "lower"
            lines.append(f"{x.label}: AUROC against {r.table.name} {format_metric(x.expert_auroc)} is {better} than "
                         f"against NIH's labels {format_metric(x.nih_auroc)} on the same {x.images} images "
                         f"(difference {_signed(x.delta, x.delta_low, x.delta_high)}, {level:.0%} CI).")
    any_point = next((t for t in r.triage if t.label == ANY_FINDING and t.target == TARGETS[0]), None)
    if any_point is not None and not math.isnan(any_point.cleared):
        lines.append(f"Triage against {r.table.name}: a threshold keeping {TARGETS[0]:g} sensitivity for any "
                     f"finding clears {_share(any_point.cleared, any_point.cleared_low, any_point.cleared_high)} of "
                     "images and flags "
                     f"{_share(any_point.sensitivity, any_point.sensitivity_low, any_point.sensitivity_high)} of the "
                     f"{any_point.apply_positives} positives.")
    return lines
