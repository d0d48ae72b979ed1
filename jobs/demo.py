"""The whole system on an embedded default: synth -> train -> export + INT8, a tile ensemble trained on Ray
actors, both scored in one pass over the archive, then a report comparing the two runs. The comparison is printed
per small-finding label and as means, each with its paired CI, and worded from the CI: a win only where the
interval excludes 0 (xray/evaluation/comparison.py); then localisation on the test boxes, the ensemble's heatmap vs the
single model's class activation map, box by box (jobs/localisation.py).

Local Ray, local files, no configuration; each stage is the same run() a user submits. Every flag of every
stage is checked before anything is written.

The demo deletes nothing it did not make. --workdir must be new, empty, or marked as a demo's own by an
earlier demo (the file .tilescope-demo.json); anything else is refused unless --force. Even then, and on
every rerun, the demo replaces only its own entries (archive/, checkpoint/, model/, scores/, ensemble/,
ensemble.work/, report/); nothing else in the directory is touched.

    make demo            (or: tilescope demo --workdir runs/demo)
    tilescope demo --workdir runs/demo-small --n-images 200 --epochs 4 --backbone dwsep_cnn
    ray job submit --working-dir . -- python -m jobs.demo --workdir s3://bucket/demo
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import pyarrow.fs as pafs

from cli.flags import require_valid
from cli.job_main import connect_ray, job_main
from jobs import quantize, report, score, synth, train, train_tiles
from jobs.localisation import heatmap_vs_cam, localisation_line
from storage.fs import Location, StorageError, check_reachable, read_bytes, resolve, write_bytes_atomic
from storage.metadata_files import load_metadata
from xray.evaluation.comparison import PairedScores, delta_lines, verdict
from xray.models.settings import BACKBONE_NAMES
from xray.synth.detail import FINE_FINDINGS, FindingDetail
from xray.synth.images import SMALL_FINDINGS
from xray.tiles.grid import TileGrid

MARKER = ".tilescope-demo.json"
"""Written first into a --workdir the demo takes: what a later demo may replace there."""
ENTRIES = ("archive", "checkpoint", "model", "scores", "ensemble", "ensemble.work", "report")
"""Everything the demo writes under --workdir besides MARKER."""
FLAG_ALIASES = {"model": "backbone"}
"""Old flag spellings (old name -> field), accepted with a warning for one release: --model names an artifact."""


@dataclass(frozen=True)
class DemoConfig:
    workdir: str = "runs/demo"
    """Where the archive, checkpoint, model artifact, scores and report go: a new or empty directory, or one an
    earlier demo made (local or s3://)."""
    n_images: int = 600
    """Synthetic images to generate."""
    size: int = 512
    """Side of the synthetic PNGs in pixels (NIH images are 1024); the ensemble works at this full resolution."""
    detail: FindingDetail = FindingDetail.FINE
    """How synth draws findings: fine (small nodules, masses and plate atelectasis at full resolution, their
    evidence in detail a downscale loses: where tiling should help) or coarse (every finding at <= 256 px)."""
    shards: int = 3
    """tar.gz shards of the synthetic archive."""
    backbone: str = field(default="dwsep_cnn", metadata={"choices": BACKBONE_NAMES})
    """Architecture to train, whole-image and per tile (densenet121 for the CheXNet model; slow on 2 cores)."""
    input_size: int = 128
    """The whole-image model's input in pixels: the --size image downscaled."""
    epochs: int = 12
    """Training epochs (whole-image model and each tile position)."""
    tile_size: int = 256
    """The ensemble's tile in pixels, cut from the image at full --size resolution (512 / 256: a 2x2 grid)."""
    seed: int = 0
    """Seed of the synthetic archive and of training."""
    force: bool = False
    """Use a --workdir that holds other files: only the demo's own entries there are replaced."""
    s3_endpoint: str | None = None
    """S3 endpoint when workdir is s3://."""


@dataclass(frozen=True)
class DemoPlan:
    """Every stage's config, built and checked before anything runs. The report's runs are named after
    scoring; here they are placeholders of the right count."""

    synth: synth.SynthConfig
    train: train.TrainConfig
    quantize: quantize.QuantizeConfig
    train_tiles: train_tiles.TrainTilesConfig
    score: score.ScoreConfig
    """Both models in one pass over the archive: the ensemble, then the single model."""
    report: report.ReportConfig


def plan(cfg: DemoConfig) -> DemoPlan:
    base = cfg.workdir.rstrip("/")
    archive, ckpt, model, scores, ensemble, reports = (
        f"{base}/{p}" for p in ("archive", "checkpoint", "model", "scores", "ensemble", "report"))
    metadata = f"{archive}/Data_Entry_2017.csv"
    calibration = max(1, min(300, cfg.n_images // 2))
    endpoint = cfg.s3_endpoint
    return DemoPlan(
        synth=synth.SynthConfig(out=archive, n_images=cfg.n_images, size=cfg.size, shards=cfg.shards, seed=cfg.seed,
                                detail=cfg.detail, s3_endpoint=endpoint),
        train=train.TrainConfig(archive=archive, out=ckpt, backbone=cfg.backbone, input_size=cfg.input_size,
                                epochs=cfg.epochs, seed=cfg.seed, s3_endpoint=endpoint),
        # The recipe search runs; a few dozen validation images cannot resolve a 1% flip budget, so the demo writes
        # the candidate closest to it and says so (tilescope quantize, docs/guide/calibration.md).
        quantize=quantize.QuantizeConfig(checkpoint=ckpt, archive=archive, out=model, calibration_size=calibration,
                                         seed=cfg.seed, s3_endpoint=endpoint, allow_over_budget=True),
        train_tiles=train_tiles.TrainTilesConfig(
            archive=archive, out=ensemble, image_size=cfg.size, tile_size=cfg.tile_size,
            stride=cfg.tile_size, backbone=cfg.backbone, epochs=cfg.epochs, seed=cfg.seed,
            calibration_size=calibration, s3_endpoint=endpoint),
        score=score.ScoreConfig(archive=archive, model=(ensemble, model), out=scores, metadata=metadata,
                                s3_endpoint=endpoint, progress_every_s=5.0),
        report=report.ReportConfig(results=(f"{scores}/ensemble", f"{scores}/single"), metadata=metadata,
                                   out=reports, archive=archive, bootstrap=200, seed=cfg.seed, s3_endpoint=endpoint,
                                   name=("tile ensemble", "single model")),
    )


def validate(cfg: DemoConfig) -> DemoPlan:
    """Check the demo's flags and every stage's config built from them; one ValueError names every problem."""
    problems = []
    if not cfg.workdir.strip():
        problems.append("--workdir is empty; name a new or empty directory")
    if cfg.n_images < 50:
        problems.append("--n-images must be at least 50 for a train/val/test split")
    if not 0 < cfg.tile_size <= cfg.size:
        problems.append(f"--tile-size must be in [1, --size {cfg.size}], got {cfg.tile_size}")
    # The rest (--backbone, --size, --shards, --input-size, --epochs, ...) is checked by the stages themselves.
    stages = plan(cfg)
    checks = (("synth", synth.validate, stages.synth), ("train", train.validate, stages.train),
              ("quantize", quantize.validate, stages.quantize), ("score", score.validate, stages.score),
              ("train-tiles", train_tiles.validate, stages.train_tiles), ("report", report.validate, stages.report))
    for name, check, stage in checks:
        try:
            check(stage)
        except ValueError as exc:
            lines = [line.strip().removeprefix("- ") for line in str(exc).splitlines()[1:]] or [str(exc)]
            problems += [f"{line} (in the {name} stage)" for line in lines if line]
    require_valid(problems)
    return stages


def claim_workdir(cfg: DemoConfig) -> Location:
    """Take --workdir for this demo: new, empty or marked by an earlier demo (else refused unless --force);
    mark it, then delete the demo's own entries from an earlier run. Nothing else there is touched."""
    root = resolve(cfg.workdir, cfg.s3_endpoint)
    check_reachable(root)
    kind = root.fs.get_file_info(root.path).type
    if kind == pafs.FileType.File:
        raise ValueError(f"--workdir {root.uri} is a file; name a new or empty directory")
    names = sorted(_entry_names(root)) if kind == pafs.FileType.Directory or root.is_s3 else []
    marked = MARKER in names and _is_marker(root.join(MARKER))
    others = [n for n in names if n != MARKER]
    if others and not marked and not cfg.force:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ValueError(f"--workdir {root.uri} holds files the demo did not make ({shown}) and no {MARKER}; "
                         f"name a new or empty directory, or pass --force to replace only the demo's own entries "
                         f"there ({', '.join(ENTRIES)}) and leave everything else as it is")
    write_bytes_atomic(root.join(MARKER), json.dumps(
        {"made_by": "tilescope demo", "entries": list(ENTRIES),
         "note": "tilescope demo replaces these entries here on its next run; nothing else"}, indent=2).encode())
    for name in ENTRIES:
        if name in names:
            _delete(root.join(name))
    return root


def _entry_names(root: Location) -> set[str]:
    try:
        infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=False, allow_not_found=True))
    except OSError as exc:
        raise StorageError(f"{root.uri}: cannot list ({exc})") from exc
    return {info.base_name for info in infos}


def _is_marker(loc: Location) -> bool:
    try:
        return json.loads(read_bytes(loc)).get("made_by") == "tilescope demo"
    except (OSError, ValueError, AttributeError):
        return False


def _delete(loc: Location) -> None:
    try:
        if loc.fs.get_file_info(loc.path).type == pafs.FileType.Directory:
            loc.fs.delete_dir(loc.path)
        else:
            loc.fs.delete_file(loc.path)
    except OSError as exc:
        raise StorageError(f"{loc.uri}: cannot delete the earlier demo's entry ({exc})") from exc


def run(cfg: DemoConfig) -> score.ScoreSummary:
    import torch  # noqa: F401  (the [train] extra: missing, the demo fails here in one line, before any work)

    stages = validate(cfg)
    root = claim_workdir(cfg)
    s = stages
    print(f"== 1/6 synth: {cfg.n_images} images of {cfg.size}px in {cfg.shards} shards -> {s.synth.out}", flush=True)
    synth.run(s.synth)
    print(f"== 2/6 train {cfg.backbone} at {cfg.input_size}px for {cfg.epochs} epochs -> {s.train.out}", flush=True)
    train.run(s.train)
    print(f"== 3/6 export to OpenVINO + NNCF INT8 -> {s.quantize.out}", flush=True)
    quantize.run(s.quantize)  # its last line compares FP32 and INT8
    t = s.train_tiles
    steps = TileGrid(t.image_size, t.tile_size, t.stride).steps
    print(f"== 4/6 tile ensemble: {steps}x{steps} {cfg.backbone} models of {t.tile_size}px tiles over "
          f"{t.image_size}px images, one model per position on a pool of Ray actors -> {t.out}", flush=True)
    connect_ray()
    train_tiles.run(t)
    print(f"== 5/6 score the archive on Ray Data with INT8 actors, the ensemble and the single model in one pass "
          f"(each image read and decoded once per input size) -> {s.score.out}", flush=True)
    tiled, single = score.run(s.score).models
    print(f"== 6/6 report: ensemble vs single model on the test split, AUROC and localisation -> {s.report.out}",
          flush=True)
    r = report.run(replace(s.report, results=(tiled.results_uri, single.results_uri)))
    level = s.report.ci_level
    if r.paired is not None:
        small = FINE_FINDINGS if cfg.detail == FindingDetail.FINE else SMALL_FINDINGS
        print("\n".join(delta_lines(r.paired, small, level, focus_name="small-finding")), flush=True)
    meta_uri = s.report.metadata
    located = heatmap_vs_cam(tiled.results_uri, s.train.out, s.synth.out, load_metadata(meta_uri, cfg.s3_endpoint),
                             meta_uri, cfg.s3_endpoint)
    print(localisation_line(located), flush=True)
    print(f"demo done: {single.rows} rows per run ({single.errors} errors) under {s.score.out}; test mean "
          f"AUROC ensemble {r.mean_auroc:.4f} vs single model {r.baseline_mean_auroc:.4f}, paired: "
          f"{_mean_verdict(r.paired, level)}; open {s.report.out}/report.html (everything under {root.uri})",
          flush=True)
    return tiled


def _mean_verdict(paired: PairedScores | None, level: float) -> str:
    if paired is None:
        return verdict(float("nan"), float("nan"), float("nan"), level)
    mean = paired.mean_delta(paired.labels, level)
    return verdict(mean.mean, mean.low, mean.high, level)


def main(argv: list[str] | None = None) -> int:
    return job_main(DemoConfig, run, "tilescope demo", __doc__, argv, aliases=FLAG_ALIASES)


if __name__ == "__main__":
    raise SystemExit(main())
