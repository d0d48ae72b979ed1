"""The whole system on an embedded default: synth -> train -> export + INT8 -> score, then a tile ensemble
trained on Ray actors and scored the same way, then a report comparing the two runs.

Local Ray, local files, no configuration; each stage is the same run() a user submits.

    make demo            (or: tilescope demo --workdir runs/demo)
    ray job submit --working-dir . -- python -m jobs.demo --workdir s3://bucket/demo
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from jobs import quantize, report, score, synth, train, train_tiles
from jobs.cli import connect_ray, job_main, require_valid
from storage.fs import resolve


@dataclass(frozen=True)
class DemoConfig:
    workdir: str = "runs/demo"
    """Where the archive, checkpoint, model artifact and scores go (cleared first when local)."""
    n_images: int = 600
    """Synthetic images to generate."""
    size: int = 512
    """Side of the synthetic PNGs in pixels (NIH images are 1024)."""
    shards: int = 3
    """tar.gz shards of the synthetic archive."""
    model: str = "dwsep_cnn"
    """Backbone to train (densenet121 for the CheXNet model; slow on 2 cores)."""
    input_size: int = 128
    """Model input size in pixels."""
    epochs: int = 12
    """Training epochs (whole-image model and each tile position)."""
    grid: int = 2
    """Tile ensemble: positions per side (tiles of input-size px over an image of grid x input-size px)."""
    seed: int = 0
    """Seed of the synthetic archive and of training."""
    s3_endpoint: str | None = None
    """S3 endpoint when workdir is s3://."""


def validate(cfg: DemoConfig) -> None:
    problems = []
    if cfg.n_images < 50:
        problems.append("--n-images must be at least 50 for a train/val/test split")
    if cfg.grid < 1:
        problems.append("--grid must be at least 1")
    if cfg.shards < 1:
        problems.append("--shards must be at least 1")
    require_valid(problems)


def run(cfg: DemoConfig) -> score.ScoreSummary:
    validate(cfg)
    root = resolve(cfg.workdir, cfg.s3_endpoint)
    if not root.is_s3:
        shutil.rmtree(root.path, ignore_errors=True)
    base = root.uri.rstrip("/")
    archive, ckpt, model, scores, ensemble, reports = (
        f"{base}/{p}" for p in ("archive", "checkpoint", "model", "scores", "ensemble", "report"))
    metadata = f"{archive}/Data_Entry_2017.csv"
    print(f"== 1/6 synth: {cfg.n_images} images of {cfg.size}px in {cfg.shards} shards -> {archive}", flush=True)
    synth.run(synth.SynthConfig(out=archive, n_images=cfg.n_images, size=cfg.size, shards=cfg.shards,
                                seed=cfg.seed, s3_endpoint=cfg.s3_endpoint))
    print(f"== 2/6 train {cfg.model} at {cfg.input_size}px for {cfg.epochs} epochs -> {ckpt}", flush=True)
    train.run(train.TrainConfig(archive=archive, out=ckpt, model=cfg.model, input_size=cfg.input_size,
                                epochs=cfg.epochs, seed=cfg.seed, s3_endpoint=cfg.s3_endpoint))
    print(f"== 3/6 export to OpenVINO + NNCF INT8 -> {model}", flush=True)
    q = quantize.run(quantize.QuantizeConfig(checkpoint=ckpt, archive=archive, out=model,
                                             calibration_size=min(300, cfg.n_images // 2),
                                             seed=cfg.seed, s3_endpoint=cfg.s3_endpoint))
    print(f"   FP32 vs INT8 agreement: mean AUROC {q.fp32_mean_auroc:.4f} vs {q.int8_mean_auroc:.4f}, "
          f"max |p_fp32 - p_int8| = {q.max_abs_prob_diff:.4f}", flush=True)
    print(f"== 4/6 score the archive on Ray Data with INT8 actors -> {scores}", flush=True)
    connect_ray()
    single = score.run(score.ScoreConfig(archive=archive, model=model, out=scores, metadata=metadata,
                                         s3_endpoint=cfg.s3_endpoint, progress_every_s=5.0))
    image = cfg.grid * cfg.input_size
    print(f"== 5/6 tile ensemble: {cfg.grid}x{cfg.grid} {cfg.model} models of {cfg.input_size}px tiles over "
          f"{image}px images, one model per position on a pool of Ray actors -> {ensemble}; scored into {scores}",
          flush=True)
    train_tiles.run(train_tiles.TrainTilesConfig(
        archive=archive, out=ensemble, image_size=image, tile_size=cfg.input_size, stride=cfg.input_size,
        backbone=cfg.model, epochs=cfg.epochs, seed=cfg.seed, calibration_size=min(300, cfg.n_images // 2),
        s3_endpoint=cfg.s3_endpoint))
    tiled = score.run(score.ScoreConfig(archive=archive, model=ensemble, out=scores, metadata=metadata,
                                        s3_endpoint=cfg.s3_endpoint, progress_every_s=5.0))
    print(f"== 6/6 report: ensemble vs single model on the test split -> {reports}", flush=True)
    r = report.run(report.ReportConfig(results=(tiled.results_uri, single.results_uri), metadata=metadata,
                                       out=reports, archive=archive, bootstrap=200, seed=cfg.seed,
                                       s3_endpoint=cfg.s3_endpoint))
    print(f"demo done: {single.rows} rows per run ({single.errors} errors) under {scores}; test mean AUROC "
          f"ensemble {r.mean_auroc:.4f} vs single model {r.baseline_mean_auroc:.4f}; open {reports}/report.html",
          flush=True)
    return tiled


def main(argv: list[str] | None = None) -> int:
    return job_main(DemoConfig, run, "tilescope demo", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
