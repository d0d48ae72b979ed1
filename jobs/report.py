"""Report on a scoring run: per-label AUROC with bootstrap CIs, deltas against a second run, a screening view
with thresholds fit on one split and applied to another, errors and throughput, as a self-contained HTML
page plus CSV/Parquet tables. Reads only the result columns it needs (never images, except the few drawn
under heatmaps) from local disk or S3; no Ray.

Recipe: read (runs, metadata) -> select (one ok row per image + ground truth) -> evaluate -> screen ->
render (tables, page) -> save (every file atomically, report.json last).

    tilescope report --results runs/demo/scores --metadata runs/demo/archive/Data_Entry_2017.csv --out runs/demo/report
    ray job submit --working-dir . -- python -m jobs.report --results s3://b/scores/densenet121-0123456789ab \
        --results s3://b/scores/densenet121-fedcba987654 --metadata s3://b/nih/Data_Entry_2017.csv --out s3://b/report
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from jobs.cli import coerce_choices, job_main, require_valid
from jobs.report_stages import (
    Evaluation,
    ScoredImages,
    Screening,
    auroc_table,
    errors_table,
    evaluate,
    overlays,
    screen,
    screening_table,
    select_scored,
    thresholds_table,
)
from storage.fs import check_reachable, resolve
from storage.metadata_files import load_metadata
from storage.report_files import write_table, write_text
from storage.results import ScoredRun, open_run
from xray.ground_truth import Split
from xray.report_html import Overlay, ReportPage, TableView, render_page
from xray.report_plots import auroc_chart_svg, format_metric, histogram_svg, roc_svg

REPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ReportConfig:
    results: tuple[str, ...]
    """Run directory written by `tilescope score` (local or s3://); give --results twice to compare two runs."""
    metadata: str
    """Data_Entry_2017.csv URI (ground truth); the split lists are read from beside it."""
    out: str
    """Directory (local or s3://) for report.html, the CSV/Parquet tables and report.json."""
    archive: str | None = None
    """Image archive URI: lets a run with heatmaps show them over its top-flagged images."""
    eval_split: Split = Split.TEST
    """Images the AUROC table uses: test, train_val or all (every image listed in the metadata)."""
    fit_split: Split = Split.TRAIN_VAL
    """Split the per-label thresholds are fit on: train_val, test or all."""
    apply_split: Split = Split.TEST
    """Split the thresholds are applied to for the flag counts: test, train_val or all."""
    target_sensitivity: float = 0.9
    """Sensitivity each label's threshold reaches on the fit split."""
    bootstrap: int = 1000
    """Stratified bootstrap resamples per label for the AUROC intervals (0: no intervals)."""
    ci_level: float = 0.95
    """Coverage of the AUROC and delta intervals."""
    seed: int = 0
    """Seed of the bootstrap: same inputs and seed, same report."""
    top: int = 25
    """Images listed in the page's screening view (the screening tables hold every scored image)."""
    overlays: int = 8
    """Top-flagged images drawn with their heatmap (runs with heatmaps and --archive only)."""
    allow_partial: bool = False
    """Report on a run that is not committed yet (no _manifest.json): the rows written so far."""
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


def validate(cfg: ReportConfig) -> None:
    problems = []
    if len(cfg.results) not in (1, 2):
        problems.append(f"--results takes one run, or two to compare (got {len(cfg.results)})")
    problems += coerce_choices(cfg)
    if not 0.0 < cfg.target_sensitivity <= 1.0:
        problems.append("--target-sensitivity must be in (0, 1]")
    if cfg.bootstrap < 0:
        problems.append("--bootstrap must be 0 or more")
    if not 0.0 < cfg.ci_level < 1.0:
        problems.append("--ci-level must be in (0, 1)")
    if cfg.top < 1 or cfg.overlays < 0:
        problems.append("--top must be at least 1 and --overlays at least 0")
    require_valid(problems)


def run(cfg: ReportConfig) -> ReportSummary:
    validate(cfg)
    t0 = time.perf_counter()
    # Read: every input that can be wrong fails here, before any statistic.
    out = resolve(cfg.out, cfg.s3_endpoint)
    check_reachable(out)
    runs = [open_run(uri, cfg.s3_endpoint, cfg.allow_partial) for uri in cfg.results]
    meta = load_metadata(cfg.metadata, cfg.s3_endpoint)
    _require_splits(cfg, meta.train_val is not None, meta.test is not None)

    # Select, evaluate, screen.
    images = [select_scored(r, meta) for r in runs]
    primary, baseline = images[0], (images[1] if len(images) > 1 else None)
    if primary.image_id.size and not primary.truth.known.any():
        raise ValueError(f"--metadata {cfg.metadata}: none of the {primary.image_id.size} scored images of "
                         f"{runs[0].uri} is listed; is it the Data_Entry_2017.csv of the scored archive?")
    ev = evaluate(primary, Split(cfg.eval_split), cfg.bootstrap, cfg.ci_level, cfg.seed, baseline)
    sc = screen(primary, Split(cfg.fit_split), Split(cfg.apply_split), cfg.target_sensitivity)

    # Render, then save: every file atomically, report.json last.
    tables = {"auroc": auroc_table(ev), "thresholds": thresholds_table(primary.labels, sc),
              "screening": screening_table(primary, sc), "errors": errors_table(runs[0])}
    drawn, overlay_note = overlays(runs[0], primary, sc, cfg.archive, cfg.overlays)
    notes = _notes(cfg, runs, primary)
    page = build_page(cfg, runs, primary, ev, sc, tables, notes, drawn, overlay_note)

    files = []
    for stem, table in tables.items():
        table = table.replace_schema_metadata({b"tilescope.report_schema_version": str(REPORT_SCHEMA_VERSION).encode()})
        files += write_table(out, stem, table, formats=("csv",) if stem == "errors" else ("csv", "parquet"))
    files.append(write_text(out, "report.html", render_page(page)))
    evaluated = int(primary.truth.mask(Split(cfg.eval_split)).sum())
    flagged = int(sc.flags[primary.truth.mask(Split(cfg.apply_split))].any(axis=1).sum())
    body = _report_json(cfg, runs, primary, ev, sc, evaluated, flagged, len(drawn), notes, files + ["report.json"])
    files.append(write_text(out, "report.json", json.dumps(body, indent=2, sort_keys=True, allow_nan=False)))
    summary = ReportSummary(out.uri, tuple(files), int(runs[0].image_id.size), int(primary.image_id.size),
                            evaluated, ev.mean_auroc, ev.baseline_mean_auroc, flagged, len(drawn),
                            time.perf_counter() - t0)
    print(f"report on {runs[0].uri}: {summary.scored} scored images, {evaluated} evaluated ({cfg.eval_split}), "
          f"mean AUROC {format_metric(summary.mean_auroc, 4)}; {flagged} flagged on {cfg.apply_split}; "
          f"{summary.seconds:.1f}s -> {out.uri}/report.html", flush=True)
    return summary


def _require_splits(cfg: ReportConfig, has_train_val: bool, has_test: bool) -> None:
    problems = []
    for flag, value in (("--eval-split", cfg.eval_split), ("--fit-split", cfg.fit_split),
                        ("--apply-split", cfg.apply_split)):
        if (value == Split.TRAIN_VAL and not has_train_val) or (value == Split.TEST and not has_test):
            listing = "train_val_list.txt" if value == Split.TRAIN_VAL else "test_list.txt"
            problems.append(f"{flag} {value} needs {listing} beside --metadata {cfg.metadata}; "
                            f"pass {flag} all or add the list")
    require_valid(problems)


def _notes(cfg: ReportConfig, runs: list[ScoredRun], primary: ScoredImages) -> list[str]:
    notes = []
    for r in runs:
        if r.manifest is None:
            notes.append(f"{r.uri} is not committed (no _manifest.json): this reports the rows written so far.")
    unknown = int((~primary.truth.known).sum())
    if unknown:
        notes.append(f"{unknown} scored images are not listed in the metadata and are left out of every statistic.")
    if primary.duplicates:
        notes.append(f"{primary.duplicates} ok rows repeat an image already scored; the first (by source) is used.")
    if cfg.fit_split == cfg.apply_split or Split.ALL in (cfg.fit_split, cfg.apply_split):
        notes.append(f"The thresholds are fit on {cfg.fit_split} and applied to {cfg.apply_split}: the two overlap, "
                     "so the applied sensitivity is optimistic.")
    return notes


def _view(table: pa.Table, limit: int | None = None) -> TableView:
    rows = table.slice(0, limit).to_pylist() if limit is not None else table.to_pylist()
    text = frozenset(f.name for f in table.schema if pa.types.is_string(f.type))
    return TableView(tuple(table.column_names), [tuple(r.values()) for r in rows], text)


def _facts(cfg: ReportConfig, runs: list[ScoredRun], primary: ScoredImages, ev: Evaluation) -> list[tuple[str, str]]:
    main, m = runs[0], runs[0].manifest or {}
    n_ok = int((main.status == "ok").sum())
    missing = m.get("missing_from_archive")
    throughput = (f"{m.get('images_per_s', 0.0):.1f} images/s in the pipeline, {m.get('scored_this_attempt', 0)} "
                  f"images in {m.get('seconds_this_attempt', 0.0):.1f} s" if main.manifest else "n/a (not committed)")
    facts = [("Run", main.uri),
             ("Model", f"{m.get('model', '?')} ({m.get('precision', '?')}), artifact "
                       f"{str(m.get('artifact_sha256', '?'))[:12]}, run id {m.get('run_id', '?')}"),
             ("Rows", f"{main.image_id.size} ({n_ok} ok, {main.image_id.size - n_ok} errors); "
                      + (f"{missing} listed images missing from the archive" if missing is not None
                         else "images missing from the archive unknown (scored without --metadata)")),
             ("Throughput (last attempt)", throughput),
             ("Ground truth", f"{int(primary.truth.known.sum())} of {primary.image_id.size} scored images listed "
                              f"in {cfg.metadata}"),
             ("Evaluated", f"{int(primary.truth.mask(Split(cfg.eval_split)).sum())} images ({cfg.eval_split})"),
             ("Mean AUROC", f"{format_metric(ev.mean_auroc, 4)} over labels with both classes"),
             ("Intervals", f"{cfg.ci_level:.0%}; AUROC: {cfg.bootstrap} stratified bootstrap resamples (seed "
                           f"{cfg.seed}); deltas: DeLong")]
    if len(runs) > 1:
        facts.append(("Baseline", f"{runs[1].uri}: mean AUROC {format_metric(ev.baseline_mean_auroc, 4)} on the "
                                  f"{ev.paired_images} images both runs scored; deltas are run minus baseline"))
    return facts


def build_page(cfg: ReportConfig, runs: list[ScoredRun], primary: ScoredImages, ev: Evaluation, sc: Screening,
               tables: dict[str, pa.Table], notes: list[str], drawn: list[Overlay], overlay_note: str) -> ReportPage:
    labels = list(ev.labels)
    est = ev.estimates
    baseline_auroc = np.array([d.auroc_b for d in ev.deltas]) if ev.deltas else None
    rocs = [roc_svg(label, *ev.rocs[j], est[j].auroc, est[j].low, est[j].high,
                    ev.baseline_rocs[j] if ev.baseline_rocs else None) for j, label in enumerate(labels)]
    hists = [histogram_svg(label, h.edges, h.positives, h.negatives, float(sc.thresholds[j]))
             for j, (label, h) in enumerate(zip(labels, ev.histograms, strict=True))]
    chart = auroc_chart_svg(labels, np.array([e.auroc for e in est]), np.array([e.low for e in est]),
                            np.array([e.high for e in est]), baseline_auroc)
    name = runs[0].uri.rstrip("/").rsplit("/", 1)[-1]
    return ReportPage(
        title=f"tilescope report: {name}", facts=_facts(cfg, runs, primary, ev), auroc_chart=chart,
        auroc=_view(tables["auroc"]), roc_plots=rocs, histograms=hists, thresholds=_view(tables["thresholds"]),
        thresholds_caption=(f"Each label's threshold is the highest that reaches sensitivity >= "
                            f"{cfg.target_sensitivity} on {cfg.fit_split}; the apply_* columns count what it "
                            f"flags on {cfg.apply_split}."),
        screening=_view(tables["screening"], cfg.top),
        screening_caption=(f"The {min(cfg.top, primary.image_id.size)} highest of {primary.image_id.size} scored "
                           "images by their highest probability; screening.csv/.parquet rank them all."),
        errors=_view(tables["errors"]), overlays=drawn, overlay_note=overlay_note, notes=notes)


def _report_json(cfg: ReportConfig, runs: list[ScoredRun], primary: ScoredImages, ev: Evaluation, sc: Screening,
                 evaluated: int, flagged: int, n_overlays: int, notes: list[str], files: list[str]) -> dict:
    def clean(v: float) -> float | None:
        return None if v is None or np.isnan(v) else float(v)

    return {
        "report_schema_version": REPORT_SCHEMA_VERSION, "config": asdict(cfg), "files": sorted(files),
        "runs": [{"uri": r.uri, "committed": r.manifest is not None, "rows": int(r.image_id.size),
                  "ok": int((r.status == "ok").sum()), "errors": int((r.status == "error").sum()),
                  **{k: (r.manifest or {}).get(k) for k in ("model", "precision", "run_id", "artifact_sha256",
                                                            "images_per_s", "seconds_this_attempt",
                                                            "missing_from_archive")}} for r in runs],
        "scored_images": int(primary.image_id.size), "evaluated_images": evaluated,
        "mean_auroc": clean(ev.mean_auroc), "baseline_mean_auroc": clean(ev.baseline_mean_auroc),
        "auroc": {label: clean(e.auroc) for label, e in zip(ev.labels, ev.estimates, strict=True)},
        "thresholds": {label: clean(t) for label, t in zip(ev.labels, sc.thresholds, strict=True)},
        "flagged_on_apply_split": flagged, "overlays": n_overlays, "notes": notes,
    }


def merge_repeated(argv: list[str], flag: str) -> list[str]:
    """`--results a --results b` -> `--results a b`: the generated flag takes several values after one flag
    (nargs='*'), where argparse would otherwise keep only the last occurrence."""
    values, rest, i = [], [], 0
    while i < len(argv):
        if argv[i].startswith(flag + "="):
            values.append(argv[i].split("=", 1)[1])
        elif argv[i] == flag:
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            continue
        else:
            rest.append(argv[i])
        i += 1
    return [*rest, flag, *values] if values or flag in argv else rest


def main(argv: list[str] | None = None) -> int:
    return job_main(ReportConfig, run, "tilescope report", __doc__, argv,
                    rewrite_argv=lambda args: merge_repeated(args, "--results"))


if __name__ == "__main__":
    raise SystemExit(main())
