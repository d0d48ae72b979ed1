"""Report on a scoring run, or on predictions from elsewhere: per-label AUROC with bootstrap CIs and their mean,
deltas and flag agreement against a second run, screening thresholds fit on patients the model never trained
on and their sensitivity/specificity/PPV on test, a screening view, heatmaps with ground-truth boxes, errors
and throughput; a self-contained HTML page plus CSV/Parquet tables. Reads only the result columns it needs
(never images, except the few drawn under heatmaps) from local disk or S3; no Ray.

Recipe: read (runs, metadata, each model's patient split) -> select (one ok row per image + ground truth) ->
evaluate -> screen -> agree -> render (tables, page) -> save (every file atomically, report.json last).

    tilescope report --results runs/demo/scores --metadata runs/demo/archive/Data_Entry_2017.csv --out runs/demo/report
    ray job submit --working-dir . -- python -m jobs.report --results s3://b/scores/densenet121-0123456789ab \
        --results s3://b/chexnet_test_predictions.csv --metadata s3://b/nih/Data_Entry_2017.csv --out s3://b/report
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import pyarrow as pa

from cli.flags import coerce_choices, merge_repeated, require_valid
from cli.job_main import job_main
from cli.provenance import tilescope_versions
from jobs.localisation import report_localisation
from jobs.report_ground_truth import (
    GroundTruthSettings,
    evaluate_ground_truth,
    ground_truth_json,
    ground_truth_tables,
    load_sources,
    nih_triage,
    triage_table,
)
from jobs.report_ground_truth_page import ground_truth_conclusions, ground_truth_view, nih_triage_view
from jobs.report_page import PageSettings, build_page, run_names
from jobs.report_stages import (
    Evaluation,
    KnownSplit,
    ScoredImages,
    Screening,
    agree,
    evaluate,
    fit_split_problem,
    model_split_of,
    overlays,
    screen,
    select_scored,
)
from jobs.report_tables import auroc_table, errors_table, screening_table, thresholds_table
from storage.fs import check_reachable, exists, list_files, read_bytes, resolve
from storage.metadata_files import SYNTH_MARKER, load_metadata
from storage.prediction_files import open_scored
from storage.report_files import write_table, write_text
from storage.results import RowStatus
from storage.scored_runs import ScoredRun
from xray.evaluation.comparison import PairedScores
from xray.evaluation.screening import FlagAgreement
from xray.metadata.nih import ArchiveMetadata, parse_split_list
from xray.metadata.splits import Split
from xray.report.html import render_page
from xray.report.plots import format_metric

REPEATABLE = ("--results", "--name", "--ground-truth", "--label-map")
"""Flags given once per value (`--results a --results b`)."""
REPORT_SCHEMA_VERSION = 2  # 2: auroc has a `mean` row, baseline CIs and flag flips; thresholds have Wilson CIs


@dataclass(frozen=True)
class ReportConfig:
    results: tuple[str, ...]
    """A run directory written by `tilescope score`, or predictions from elsewhere: a Parquet/CSV file or
    directory with an image id column (image_id or Image Index) and prob_<Label> (or label-named) columns;
    local or s3://. Give --results twice to compare two (deltas on the images both scored)."""
    metadata: str
    """Data_Entry_2017.csv URI (ground truth); the split lists and BBox_List_2017.csv are read from beside it."""
    out: str
    """Directory (local or s3://) for report.html, the CSV/Parquet tables and report.json."""
    archive: str | None = None
    """Image archive URI: lets a run with heatmaps show them over its flagged images."""
    eval_split: Split = Split.TEST
    """Images the AUROC table uses: test, val (the model's held-out patients), train, train_val or all."""
    fit_split: Split = Split.VAL
    """Images the per-label thresholds are fit on: val = the patients the model never trained on (from its
    artifact's recorded split, or --val-list); a split holding training images is refused unless
    --allow-fit-on-train."""
    apply_split: Split = Split.TEST
    """Images the thresholds are applied to for sensitivity, specificity and PPV with CIs."""
    view_split: Split | None = None
    """Images the screening table and the heatmap overlays show (default: --eval-split)."""
    target_sensitivity: float = 0.9
    """Sensitivity each label's threshold reaches on the fit split."""
    val_list: str | None = None
    """For a model whose patient split is not recorded (predictions from elsewhere, a model brought in by
    `tilescope import`): a file of the image ids it never trained on, one per line like NIH's lists; --fit-split
    val fits on them."""
    allow_fit_on_train: bool = False
    """Fit thresholds on a split that holds images the model trained on (they then miss the target on new
    patients)."""
    bootstrap: int = 1000
    """Stratified bootstrap resamples per label for the AUROC intervals (0: no intervals)."""
    ci_level: float = 0.95
    """Coverage of every interval (AUROC, mean, delta, sensitivity/specificity/PPV)."""
    seed: int = 0
    """Seed of the bootstrap: same inputs and seed, same report."""
    top: int = 25
    """Images listed in the page's screening view (the screening tables hold every image of the view split)."""
    overlays: int = 8
    """Flagged images drawn with their heatmap, one label at a time (runs with heatmaps and --archive only)."""
    name: tuple[str, ...] = ()
    """Names for the runs on the page and in report.json, in --results order (default: the run directory or file
    name, with the precision)."""
    ground_truth: tuple[str, ...] = ()
    """Other ground truths beside NIH's labels (repeatable; CSV, CSV.gz or Parquet; local or s3://): a table of image
    ids (Image Index or image_id) and labels in its own vocabulary. The Google 2019 expert labels file is
    recognised as published. Each gets a page section: AUROC against it and against NIH on the same images,
    NIH-vs-expert agreement, triage figures."""
    label_map: tuple[str, ...] = ()
    """How each --ground-truth table's labels read off the model's outputs, in --ground-truth order: a YAML file,
    or inline `Nodule or mass: max(Nodule, Mass); Pneumothorax: Pneumothorax` (`default`: the table's default,
    e.g. the Google file's; columns named like ChestX-ray14 findings map to themselves)."""
    allow_partial: bool = False
    """Report on a run that is not committed yet (no _manifest.json): the rows written so far."""
    force: bool = False
    """Write into a non-empty --out that holds no earlier report (its files of the same names are replaced)."""
    s3_endpoint: str | None = None
    """S3 endpoint for MinIO/Ceph/moto (e.g. http://127.0.0.1:9000); default from the environment."""


@dataclass(frozen=True)
class ReportSummary:
    out_uri: str
    files: tuple[str, ...]
    rows: int
    scored: int
    evaluated: int
    mean_auroc: float
    baseline_mean_auroc: float
    flagged_applied: int
    """Images the thresholds flag (for any label) on the apply split."""
    overlays: int
    seconds: float
    paired: PairedScores | None = None
    """With a second run: both runs' scores on the evaluated images both scored (xray.evaluation.comparison)."""


def validate(cfg: ReportConfig) -> None:
    problems = []
    if len(cfg.results) not in (1, 2):
        problems.append(f"--results takes one run, or two to compare (got {len(cfg.results)})")
    if len(cfg.name) > len(cfg.results) or any(not n.strip() or len(n) > 80 for n in cfg.name):
        problems.append(f"--name gives one name (1-80 characters) per --results, in order (got {len(cfg.name)} for "
                        f"{len(cfg.results)})")
    problems += coerce_choices(cfg)
    if not 0.0 < cfg.target_sensitivity <= 1.0:
        problems.append("--target-sensitivity must be in (0, 1]")
    if cfg.bootstrap < 0:
        problems.append("--bootstrap must be 0 or more")
    if not 0.0 < cfg.ci_level < 1.0:
        problems.append("--ci-level must be in (0, 1)")
    if len(cfg.label_map) > len(cfg.ground_truth):
        problems.append(f"--label-map is given {len(cfg.label_map)} times for {len(cfg.ground_truth)} --ground-truth "
                        "files: one per file, in order (`default` keeps a file's default map)")
    if cfg.top < 1 or cfg.overlays < 0:
        problems.append("--top must be at least 1 and --overlays at least 0")
    require_valid(problems)


def _check_out(out, force: bool) -> None:
    """A report replaces an earlier report in --out, and nothing else unless --force."""
    present = [p.rsplit("/", 1)[-1] for p in list_files(out)]
    if present and "report.json" not in present and not force:
        raise ValueError(f"--out {out.uri} is not empty and holds no earlier report ({len(present)} files, e.g. "
                         f"{', '.join(sorted(present)[:3])}); choose another --out, or pass --force")


def run(cfg: ReportConfig) -> ReportSummary:
    validate(cfg)
    t0 = time.perf_counter()
    # Read: every input that can be wrong fails here, before any statistic.
    out = resolve(cfg.out, cfg.s3_endpoint)
    check_reachable(out)
    _check_out(out, cfg.force)
    runs = [open_scored(uri, cfg.s3_endpoint, cfg.allow_partial) for uri in cfg.results]
    meta = load_metadata(cfg.metadata, cfg.s3_endpoint)
    val_list = _read_val_list(cfg)
    gt_settings = GroundTruthSettings(cfg.ground_truth, cfg.label_map, Split(cfg.eval_split), Split(cfg.fit_split),
                                      Split(cfg.apply_split), cfg.bootstrap, cfg.ci_level, cfg.seed,
                                      endpoint=cfg.s3_endpoint)
    gt_sources = load_sources(gt_settings, runs[0].labels)
    known = [model_split_of(r, meta, val_list, cfg.val_list, cfg.s3_endpoint) for r in runs]
    names = [*cfg.name, *run_names(runs)[len(cfg.name):]]
    images = [select_scored(r, meta, name, k.split) for r, name, k in zip(runs, names, known, strict=True)]
    primary, baseline = images[0], (images[1] if len(images) > 1 else None)
    if primary.image_id.size and not primary.truth.known.any():
        raise ValueError(f"--metadata {cfg.metadata}: none of the {primary.image_id.size} scored images of "
                         f"{runs[0].uri} is listed; is it the Data_Entry_2017.csv of the scored archive?")
    fit, apply, evaluated_on = Split(cfg.fit_split), Split(cfg.apply_split), Split(cfg.eval_split)
    view = Split(cfg.view_split or cfg.eval_split)
    _require_splits(cfg, primary, meta, known[0])
    problem = fit_split_problem(primary, known[0], fit, cfg.allow_fit_on_train)
    # The default --fit-split val with no record of the model's held-out patients (a model brought in by import,
    # predictions from elsewhere): report everything that needs no threshold, and say why and how instead.
    no_thresholds = problem if problem and fit is Split.VAL and primary.truth.model_split is None else ""
    require_valid([problem] if problem and not no_thresholds else [])

    # Evaluate, screen, compare.
    ev = evaluate(primary, evaluated_on, cfg.bootstrap, cfg.ci_level, cfg.seed, baseline)
    sc = screen(primary, fit, apply, view, cfg.target_sensitivity, fit_thresholds=not no_thresholds)
    notes = _notes(cfg, runs, images, known)
    if not meta.patients_known:
        notes.append(f"{cfg.metadata} has no Patient ID column: every image counts as its own patient, so splits "
                     "and intervals are per image (images of one patient can fall on both sides of a split).")
    if no_thresholds:
        notes.insert(0, f"No screening thresholds: {no_thresholds}.")
        print(f"tilescope report: no thresholds: {no_thresholds}", file=sys.stderr, flush=True)
    agreement = None
    if baseline is not None and no_thresholds:
        notes.append("No flag agreement: the run has no thresholds (above).")
    elif baseline is not None:
        problem = fit_split_problem(baseline, known[1], fit, cfg.allow_fit_on_train)
        if problem:
            notes.append(f"No flag agreement: the baseline's thresholds cannot be fit ({problem}).")
        else:
            sc_b = screen(baseline, fit, apply, view, cfg.target_sensitivity)
            agreement = agree(primary, sc, baseline, sc_b, apply)

    triage_points, triage_curve = nih_triage(primary, fit, apply, cfg.ci_level) if not no_thresholds else ([], None)
    experts = evaluate_ground_truth(primary, replace(gt_settings, no_thresholds=no_thresholds), gt_sources)

    # Render, then save: every file atomically, report.json last.
    tables = {"auroc": auroc_table(ev, agreement), "thresholds": thresholds_table(primary.labels, sc, cfg.ci_level),
              "screening": screening_table(primary, sc), "errors": errors_table(runs[0]),
              "triage": triage_table(triage_points)}
    for i, result in enumerate(experts, 1):
        tables.update({f"ground_truth_{i}_{stem}": t for stem, t in ground_truth_tables(result).items()})
    drawn, overlay_note = overlays(runs[0], primary, sc, meta, cfg.archive, cfg.overlays)
    synthetic = _synthetic(cfg)
    localisation = report_localisation(runs[0], meta, cfg.archive, cfg.s3_endpoint)
    settings = PageSettings(cfg.metadata, cfg.eval_split, cfg.fit_split, cfg.apply_split, cfg.view_split,
                            cfg.target_sensitivity, cfg.bootstrap, cfg.ci_level, cfg.seed, cfg.top, synthetic,
                            no_thresholds, localisation)
    page = build_page(settings, runs, images, known, ev, sc, agreement, tables, notes, drawn, overlay_note)
    if triage_points:
        view, caption, svg = nih_triage_view(triage_points, triage_curve, fit, apply, cfg.ci_level)
        page = replace(page, triage=view, triage_caption=caption, triage_curve=svg)
    if experts:
        page = replace(page, ground_truth=[ground_truth_view(r, evaluated_on, fit, apply, cfg.ci_level)
                                           for r in experts],
                       conclusions=(*page.conclusions,
                                    *[line for r in experts for line in ground_truth_conclusions(r, cfg.ci_level)]))

    files = []
    for stem, table in tables.items():
        table = table.replace_schema_metadata({b"tilescope.report_schema_version": str(REPORT_SCHEMA_VERSION).encode()})
        files += write_table(out, stem, table, formats=("csv",) if stem == "errors" else ("csv", "parquet"))
    files.append(write_text(out, "report.html", render_page(page)))
    evaluated = int(primary.truth.mask(evaluated_on).sum())
    flagged = int(sc.flags[primary.truth.mask(apply)].any(axis=1).sum())
    body = _report_json(cfg, runs, known, ev, sc, agreement, int(primary.image_id.size), evaluated, flagged,
                        len(drawn), notes, files + ["report.json"])
    body["ground_truth"] = [ground_truth_json(r) for r in experts]
    files.append(write_text(out, "report.json", json.dumps(body, indent=2, sort_keys=True, allow_nan=False)))
    summary = ReportSummary(out.uri, tuple(files), int(runs[0].image_id.size), int(primary.image_id.size),
                            evaluated, ev.mean_auroc, ev.baseline_mean_auroc, flagged, len(drawn),
                            time.perf_counter() - t0, ev.paired)
    print(f"report on {runs[0].uri}: {summary.scored} scored images, {evaluated} evaluated ({evaluated_on}), "
          f"mean AUROC {format_metric(summary.mean_auroc, 4)}; "
          + ("no thresholds (no held-out patients known)" if no_thresholds
             else f"thresholds fit on {fit}, {flagged} flagged on {apply}")
          + f"; {summary.seconds:.1f}s -> {out.uri}/report.html", flush=True)
    return summary


def _synthetic(cfg: ReportConfig) -> bool:
    """Whether the metadata came from `tilescope synth`: its marker lies beside it."""
    folder = cfg.metadata.rsplit("/", 1)[0] if "/" in cfg.metadata else "."
    return exists(resolve(f"{folder}/{SYNTH_MARKER}", cfg.s3_endpoint))


def _read_val_list(cfg: ReportConfig) -> frozenset[str] | None:
    if cfg.val_list is None:
        return None
    ids = parse_split_list(read_bytes(resolve(cfg.val_list, cfg.s3_endpoint)), cfg.val_list)
    if not ids:
        raise ValueError(f"--val-list {cfg.val_list}: no image ids in it")
    return frozenset(ids)


def _require_splits(cfg: ReportConfig, primary: ScoredImages, meta: ArchiveMetadata, known: KnownSplit) -> None:
    """Every split named by --eval-split, --apply-split and --view-split can be drawn for the first run."""
    problems = []
    for flag, value in (("--eval-split", cfg.eval_split), ("--apply-split", cfg.apply_split),
                        ("--view-split", cfg.view_split)):
        if value is None or value == Split.ALL:
            continue
        if value in (Split.TRAIN, Split.VAL) and known.split is None:
            problems.append(f"{flag} {value} needs the model's patient split, and {known.why_unknown}; pass "
                            "--val-list FILE or another split")
        elif value in (Split.TEST, Split.TRAIN_VAL) and not primary.truth.mask(Split(value)).any():
            listing = "train_val_list.txt" if value == Split.TRAIN_VAL else "test_list.txt"
            where = "none of the scored images is in it" if getattr(meta, value.value) is not None else \
                f"it needs {listing} beside --metadata {cfg.metadata} (or a model artifact that records its split)"
            problems.append(f"{flag} {value}: {where}; pass {flag} all or another split")
    require_valid(problems)


def _notes(cfg: ReportConfig, runs: list[ScoredRun], images: list[ScoredImages], known: list[KnownSplit]) -> list[str]:
    notes = []
    for r in runs:
        if r.manifest is None and not r.external:
            notes.append(f"{r.uri} is not committed (no _manifest.json): this reports the rows written so far.")
    for k in known:
        notes += k.notes
    if cfg.val_list and not any(k.split and k.split.source.startswith("--val-list") for k in known):
        notes.append("--val-list is not used: every run's model artifact records its own patient split.")
    primary = images[0]
    truth = primary.truth
    unknown = int((~truth.known).sum())
    if unknown:
        notes.append(f"{unknown} scored images are not listed in the metadata and are left out of every statistic.")
    if primary.duplicates:
        notes.append(f"{primary.duplicates} ok rows repeat an image already scored; the first (by source) is used.")
    fit, apply, evaluated = (Split(v) for v in (cfg.fit_split, cfg.apply_split, cfg.eval_split))
    if (truth.mask(fit) & truth.mask(apply)).any():
        notes.append(f"The thresholds are fit on {fit} and applied to {apply}: the two overlap, so the applied "
                     "sensitivity is optimistic.")
    trained_fit = int((truth.mask(fit) & truth.trained).sum())
    if trained_fit:
        notes.append(f"The thresholds are fit on {trained_fit} images the model trained on (--allow-fit-on-train): "
                     "on new patients they will miss the target sensitivity.")
    for what, split in (("AUROC", evaluated), ("applied sensitivity, specificity and PPV", apply)):
        trained = int((truth.mask(split) & truth.trained).sum())
        if trained:
            notes.append(f"The {what} split ({split}) holds {trained} images the model trained on: optimistic.")
    return notes


def _report_json(cfg: ReportConfig, runs: list[ScoredRun], known: list[KnownSplit], ev: Evaluation, sc: Screening,
                 agreement: FlagAgreement | None, scored: int, evaluated: int, flagged: int, n_overlays: int,
                 notes: list[str], files: list[str]) -> dict:
    def clean(v: float | None) -> float | None:
        return None if v is None or np.isnan(v) else float(v)

    def interval(m) -> dict | None:
        return None if m is None else {"mean": clean(m.mean), "low": clean(m.low), "high": clean(m.high),
                                       "labels": m.labels}

    return {
        "report_schema_version": REPORT_SCHEMA_VERSION, "config": asdict(cfg), "files": sorted(files),
        "runs": [{"uri": r.uri, "committed": None if r.external else r.manifest is not None,
                  "external": r.external,
                  "rows": int(r.image_id.size), "ok": int((r.status == RowStatus.OK).sum()),
                  "errors": int((r.status == RowStatus.ERROR).sum()),
                  "model_split": k.split.source if k.split else None,
                  **{key: getattr(r.manifest, key, None) for key in ("model", "precision", "run_id",
                                                                     "artifact_sha256", "images_per_s",
                                                                     "seconds_this_attempt", "missing_from_archive")}}
                 for r, k in zip(runs, known, strict=True)],
        "scored_images": scored, "evaluated_images": evaluated,
        "mean_auroc": clean(ev.mean_auroc), "mean_auroc_ci": interval(ev.mean),
        "baseline_mean_auroc": clean(ev.baseline_mean_auroc), "baseline_mean_auroc_ci": interval(ev.baseline_mean),
        "mean_delta": interval(ev.mean_delta),
        "auroc": {label: clean(e.auroc) for label, e in zip(ev.labels, ev.estimates, strict=True)},
        "thresholds": {label: clean(t) for label, t in zip(ev.labels, sc.thresholds, strict=True)},
        "flag_flip_share": ({label: clean(v) for label, v in zip(ev.labels, agreement.flip_share, strict=True)}
                            if agreement is not None else None),
        "flagged_on_apply_split": flagged, "overlays": n_overlays, "notes": notes,
        "versions": {"numpy": np.__version__, "pyarrow": pa.__version__, **tilescope_versions()},
    }


def main(argv: list[str] | None = None) -> int:
    return job_main(ReportConfig, run, "tilescope report", __doc__, argv,
                    rewrite_argv=lambda args: merge_repeated(args, *REPEATABLE))


if __name__ == "__main__":
    raise SystemExit(main())
