"""The HTML page of `tilescope report`, assembled from what the stages computed: the summary facts, the plots
(xray/report/plots.py) and compact views of the tables (value and interval in one cell, so every table fits
the page; the CSV/Parquet files keep one column per number)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from jobs.report_stages import Evaluation, KnownSplit, ScoredImages, Screening, view_rows
from jobs.report_summary import SummarySettings, summarise
from storage.results import RowStatus
from storage.scored_runs import ScoredRun
from xray.evaluation.ensemble import Localisation
from xray.evaluation.screening import FlagAgreement
from xray.metadata.splits import Split
from xray.report.html import BADGE_COLUMN, Overlay, ReportPage, TableView
from xray.report.overlays import HEAT_OPACITY, colour_bar_svg
from xray.report.plots import (
    Estimates,
    auroc_chart_svg,
    format_interval,
    format_metric,
    histogram_svg,
    roc_svg,
)


@dataclass(frozen=True)
class PageSettings:
    """What the page says about how the statistics were made (the fields of ReportConfig of the same names):
    report passes these down, so this module never imports report back."""

    metadata: str
    eval_split: Split
    fit_split: Split
    apply_split: Split
    view_split: Split | None
    target_sensitivity: float
    bootstrap: int
    ci_level: float
    seed: int
    top: int
    synthetic: bool = False
    """The metadata carries `tilescope synth`'s marker: the page says the data are synthetic."""
    no_thresholds: str = ""
    """Why there are no screening thresholds ('' when there are)."""
    localisation: Localisation | None = None
    """The run's heatmap localisation on the boxed test images, when it has heatmaps and --archive is given."""


def run_names(runs: list[ScoredRun]) -> list[str]:
    """Short names for the title and legends (`--name` replaces them): the model's name and the precision that ran
    when the run records them, else the file or directory name; never a hash or a path."""
    names = []
    for r in runs:
        base = (r.manifest.model if r.manifest and r.manifest.model else None) or r.uri.rstrip("/").rsplit("/", 1)[-1]
        precision = r.manifest.precision if r.manifest else None
        names.append(f"{base} {precision}" if precision else base)
    if len(names) == 2 and names[0] == names[1]:
        names = [f"{names[0]} (run)", f"{names[1]} (baseline)"]
    return names


def build_page(cfg: PageSettings, runs: list[ScoredRun], images: list[ScoredImages], known: list[KnownSplit],
               ev: Evaluation, sc: Screening, agreement: FlagAgreement | None, tables: dict[str, pa.Table],
               notes: list[str], drawn: list[Overlay], overlay_note: str) -> ReportPage:
    primary = images[0]
    labels = list(primary.labels)
    evaluated, view = Split(cfg.eval_split), Split(cfg.view_split or cfg.eval_split)
    names = tuple(im.name for im in images) + (("baseline",) if len(images) == 1 else ())
    est = ev.estimates
    ops = operating_points(primary, evaluated, sc.thresholds)
    rocs = [roc_svg(label, *ev.rocs[j], est[j].auroc, est[j].low, est[j].high,
                    ev.baseline_rocs[j] if ev.baseline_rocs else None,
                    ev.baseline_estimates[j].auroc if ev.baseline_estimates else math.nan, ops[j])
            for j, label in enumerate(labels)]
    hists = [histogram_svg(label, h.edges, h.positives, h.negatives, float(sc.thresholds[j]))
             for j, (label, h) in enumerate(zip(labels, ev.histograms, strict=True))]
    chart = auroc_chart_svg([*labels, f"Mean ({ev.mean.labels} labels)"],
                            Estimates.of(*_with_mean(est, ev.mean)), names[:2],
                            Estimates.of(*_with_mean(ev.baseline_estimates, ev.baseline_mean))
                            if ev.baseline_estimates is not None else None,
                            Estimates.of(*_deltas_with_mean(ev)) if ev.deltas is not None else None,
                            summary_rows=1, level=cfg.ci_level)
    title_name = names[0]
    summary = summarise(SummarySettings(
        names=tuple(im.name for im in images), eval_split=str(evaluated), fit_split=str(cfg.fit_split),
        apply_split=str(cfg.apply_split), target_sensitivity=cfg.target_sensitivity, ci_level=cfg.ci_level,
        evaluated_images=int(primary.truth.mask(evaluated).sum()), synthetic=cfg.synthetic,
        metadata=_short(cfg.metadata), no_thresholds=cfg.no_thresholds, localisation=cfg.localisation), ev, sc)
    n_eval = int(primary.truth.mask(evaluated).sum())
    auroc_caption = (f"Points: AUROC of each label on {evaluated} ({n_eval} images); whiskers: {cfg.ci_level:.0%} "
                     f"CI from {cfg.bootstrap} stratified bootstrap resamples. Mean: over the labels with both "
                     "classes, its CI from DeLong components summed over the labels (which share images).")
    roc_caption = f"Solid blue: {names[0]} on {evaluated}."
    if len(images) > 1:
        auroc_caption += (f" Orange: the baseline {names[1]} on the {ev.paired_images} images of {evaluated} both "
                          "scored; right: run minus baseline with DeLong CIs.")
        roc_caption += f" Dashed orange: the baseline {names[1]} on the images both scored."
    roc_caption += (f" Green dot: the label's threshold (fit on {cfg.fit_split}) as an operating point on "
                    f"{evaluated}.")
    return ReportPage(
        title=f"tilescope report: {title_name}", facts=_facts(cfg, runs, images, known, ev, agreement),
        auroc_chart=chart, auroc=auroc_view(ev, agreement, summary.badges), auroc_caption=auroc_caption,
        roc_plots=rocs, conclusions=summary.conclusions, data_note=summary.data_note,
        roc_caption=roc_caption, histograms=hists, thresholds=thresholds_view(tables["thresholds"], cfg),
        thresholds_caption=(f"Each label's threshold is the highest that reaches sensitivity >= "
                            f"{cfg.target_sensitivity} on {cfg.fit_split} ({_split_words(Split(cfg.fit_split))}); "
                            f"sensitivity, specificity and PPV are what it does on {cfg.apply_split}, with "
                            f"{cfg.ci_level:.0%} Wilson intervals. thresholds.csv/.parquet hold every count."),
        screening=screening_view(primary, sc, cfg.top),
        screening_caption=(f"The {min(cfg.top, int(sc.view.sum()))} highest of the {int(sc.view.sum())} images of "
                           f"{view} by their highest probability; screening.csv/.parquet rank them all. Flagged: "
                           "the labels whose threshold the image reaches; findings: Data_Entry_2017.csv."),
        errors=_view(tables["errors"]), overlays=drawn, overlay_note=overlay_note,
        overlay_caption=(f"Each label's highest-probability flagged image of {view} (images with a BBox_List box "
                         "for the label first). The heatmap is the label's probability per cell, coloured from the "
                         "image's own lowest cell (dark) to its highest (yellow) so its structure shows: the range "
                         f"is under each image. Blended at {HEAT_OPACITY:.0%} over the X-ray. Magenta: BBox_List_2017 "
                         "boxes (solid: the label shown, dashed: the image's other boxed findings)."),
        colour_bar=colour_bar_svg("heatmap colours, per image (its range is under it)",
                                  ticks=("lowest cell", "", "", "", "highest cell")) if drawn else "",
        notes=notes)


def _split_words(split: Split) -> str:
    return {Split.VAL: "the model's validation patients, never trained on",
            Split.TRAIN: "the images the model trained on", Split.TEST: "NIH's test list",
            Split.TRAIN_VAL: "NIH's train_val list", Split.ALL: "every listed image"}[split]


def _with_mean(estimates, mean) -> tuple[list[float], list[float], list[float]]:
    return ([e.auroc for e in estimates] + [mean.mean], [e.low for e in estimates] + [mean.low],
            [e.high for e in estimates] + [mean.high])


def _deltas_with_mean(ev: Evaluation) -> tuple[list[float], list[float], list[float]]:
    d, m = ev.deltas or [], ev.mean_delta
    return ([x.delta for x in d] + [m.mean], [x.low for x in d] + [m.low], [x.high for x in d] + [m.high])


def operating_points(images: ScoredImages, split: Split, thresholds: np.ndarray) -> list[tuple[float, float]]:
    """Per label, (false positive rate, sensitivity) of its threshold on `split`; nan without one."""
    mask = images.truth.mask(split)
    y, p = images.truth.labels[mask].astype(bool), images.probs[mask]
    points = []
    for j, t in enumerate(thresholds):
        pos, neg = p[y[:, j], j], p[~y[:, j], j]
        if math.isnan(t) or not pos.size or not neg.size:
            points.append((math.nan, math.nan))
        else:
            points.append((float(np.mean(neg >= t)), float(np.mean(pos >= t))))
    return points


def auroc_view(ev: Evaluation, agreement: FlagAgreement | None,
               marks: dict[str, tuple[str, ...]] | None = None) -> TableView:
    columns = ["label", "AUROC [CI]", "positives", "negatives"]
    paired = ev.baseline_estimates is not None and ev.deltas is not None
    if paired:
        columns += ["baseline [CI]", "delta [CI]"]
    if agreement is not None:
        columns += [f"flag flips ({agreement.images} images)"]
    rows = []
    for j, label in enumerate(ev.labels):
        e = ev.estimates[j]
        row: list = [label, format_interval(e.auroc, e.low, e.high), e.positives, e.negatives]
        if paired:
            b, d = ev.baseline_estimates[j], ev.deltas[j]
            row += [format_interval(b.auroc, b.low, b.high), _signed(d.delta, d.low, d.high)]
        if agreement is not None:
            row.append(_flips(int(agreement.flips[j]), float(agreement.flip_share[j])))
        if marks is not None:
            row.append("; ".join(marks.get(label, ())))
        rows.append(tuple(row))
    mean: list = [f"mean ({ev.mean.labels} labels)", format_interval(ev.mean.mean, ev.mean.low, ev.mean.high),
                  None, None]
    if paired and ev.baseline_mean and ev.mean_delta:
        bm, dm = ev.baseline_mean, ev.mean_delta
        mean += [format_interval(bm.mean, bm.low, bm.high), _signed(dm.mean, dm.low, dm.high)]
    if agreement is not None:
        mean.append(_flips(int(agreement.flips[agreement.compared].sum()), agreement.overall_share))
    if marks is not None:
        columns.append(BADGE_COLUMN)
        mean.append("")
    rows.append(tuple(mean))
    return TableView(tuple(columns), rows, frozenset({"label"}))


def _signed(v: float, low: float, high: float) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{v:+.3f}" + ("" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]")


def _flips(n: int, share: float) -> str:
    return "n/a" if math.isnan(share) else f"{n} ({share:.1%})"


def thresholds_view(table: pa.Table, cfg: PageSettings) -> TableView:
    fit, apply = cfg.fit_split, cfg.apply_split
    rows = []
    for r in table.to_pylist():
        def ci(name: str, r: dict = r) -> str:
            v = r[f"apply_{name}"]
            return "n/a" if v is None else format_interval(v, r[f"apply_{name}_low"], r[f"apply_{name}_high"])

        rows.append((r["label"], format_metric(r["threshold"], 4) if r["threshold"] is not None else "n/a",
                     f"{r['fit_positives']} / {r['fit_images']}", format_metric(r["fit_sensitivity"]),
                     f"{r['apply_positives']} / {r['apply_images']}", r["apply_flagged"],
                     ci("sensitivity"), ci("specificity"), ci("ppv")))
    columns = ("label", "threshold", f"{fit}: positives / images", f"{fit}: sensitivity",
               f"{apply}: positives / images", f"{apply}: flagged", f"{apply}: sensitivity [CI]",
               f"{apply}: specificity [CI]", f"{apply}: PPV [CI]")
    return TableView(columns, rows, frozenset({"label"}))


def screening_view(images: ScoredImages, sc: Screening, top: int) -> TableView:
    rows = view_rows(sc)[:top]
    names = np.array(images.labels, dtype=object)
    role = images.truth.role()
    columns = ["rank", "image_id", "split", "top label", "top prob", "flagged", "findings"]
    if images.tile_max is not None:
        columns.append("tile max")
    out = []
    for rank, row in enumerate(rows):
        split = role[row] or images.truth.split[row] or None
        item = [rank + 1, str(images.image_id[row]), split, names[sc.ranking.top_label[rank]],
                float(sc.ranking.top_prob[rank]), ", ".join(names[sc.flags[row]]) or None,
                images.truth.findings[row] or None]
        if images.tile_max is not None:
            item.append(float(images.tile_max[row]))
        out.append(tuple(item))
    return TableView(tuple(columns), out, frozenset({"image_id", "split", "top label", "flagged", "findings"}))


def _view(table: pa.Table) -> TableView:
    text = frozenset(f.name for f in table.schema if pa.types.is_string(f.type))
    return TableView(tuple(table.column_names), [tuple(r.values()) for r in table.to_pylist()], text)


def _facts(cfg: PageSettings, runs: list[ScoredRun], images: list[ScoredImages], known: list[KnownSplit],
           ev: Evaluation, agreement: FlagAgreement | None) -> list[tuple[str, str]]:
    main, m, primary = runs[0], runs[0].manifest, images[0]
    n_ok = int((main.status == RowStatus.OK).sum())
    missing = m.missing_from_archive if m else None
    if main.external:
        model = f"predictions from elsewhere ({len(main.files)} file{'s' if len(main.files) > 1 else ''}, " \
                f"{len(main.labels)} labels)"
        throughput = "n/a (predictions from elsewhere)"
        listed = "unknown (predictions from elsewhere)"
    else:
        model = (f"{_known(m and m.model)} ({_known(m and m.precision)}), artifact "
                 f"{_known(m and m.artifact_sha256)[:12]}, run id {_known(m and m.run_id)}")
        throughput = (f"{m.images_per_s or 0.0:.1f} images/s in the pipeline, {m.scored_this_attempt or 0} "
                      f"images in {m.seconds_this_attempt or 0.0:.1f} s" if m else "n/a (not committed)")
        listed = (f"{missing} listed images missing from the archive" if missing is not None
                  else "images missing from the archive unknown (scored without --metadata)")
    fit = Split(cfg.fit_split)
    n_fit = int(primary.truth.mask(fit).sum())
    facts = [("Run", images[0].name), ("Model", model),
             ("Rows", f"{main.image_id.size} ({n_ok} ok, {main.image_id.size - n_ok} errors); {listed}"),
             ("Throughput (last attempt)", throughput),
             ("Ground truth", f"{int(primary.truth.known.sum())} of {primary.image_id.size} scored images listed "
                              f"in {_short(cfg.metadata)}"),
             ("Patient split", _short_paths(known[0].split.source if known[0].split
                                            else f"not known: {known[0].why_unknown}")),
             ("Evaluated", f"{int(primary.truth.mask(Split(cfg.eval_split)).sum())} images ({cfg.eval_split})"),
             ("Mean AUROC", f"{format_interval(ev.mean.mean, ev.mean.low, ev.mean.high, 4)} over "
                            f"{ev.mean.labels} labels with both classes"),
             ("Thresholds", f"fit on {fit} ({n_fit} images: {_split_words(fit)}) for sensitivity "
                            f"{cfg.target_sensitivity}, applied to {cfg.apply_split}"),
             ("Intervals", f"{cfg.ci_level:.0%}; AUROC: {cfg.bootstrap} stratified bootstrap resamples (seed "
                           f"{cfg.seed}); mean AUROC and deltas: DeLong; sensitivity, specificity, PPV: Wilson")]
    if len(runs) > 1 and ev.baseline_mean is not None and ev.mean_delta is not None:
        bm, dm = ev.baseline_mean, ev.mean_delta
        facts.append(("Baseline", f"{images[1].name}: mean AUROC {format_interval(bm.mean, bm.low, bm.high, 4)} on the "
                                  f"{ev.paired_images} images both runs scored; mean delta (run minus baseline) "
                                  f"{_signed(dm.mean, dm.low, dm.high)} over {dm.labels} labels"))
        if agreement is not None:
            facts.append(("Flag agreement", f"{agreement.overall_share:.1%} of the (image, label) flags on "
                                            f"{cfg.apply_split} flip between the runs ({agreement.images} images "
                                            "both scored, each run at its own thresholds)"))
    return facts


def _known(value: object) -> str:
    """A manifest value for the page, '?' where the run does not record it."""
    return "?" if value is None or value == "" else str(value)


def _short(uri: str) -> str:
    """A file as the page names it: its name, not the path on the machine that made the report (report.json
    keeps the full URIs)."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _short_paths(text: str) -> str:
    """Paths and URIs in a sentence shortened to their last component, as the page names files."""
    return re.sub(r"(?:s3://|/)[^\s():,]+", lambda m: _short(m.group(0)), text)
