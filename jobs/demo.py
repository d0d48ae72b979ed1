"""The whole system on an embedded default: synth -> train -> export + INT8 -> score -> Parquet summary.

Local Ray, local files, no configuration; each stage is the same run() a user submits.

    make demo            (or: tilescope demo --workdir runs/demo)
    ray job submit --working-dir . -- python -m jobs.demo --workdir s3://bucket/demo
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass

from jobs import quantize, score, synth, train
from jobs.cli import config_from_args, connect_ray, parser_for, require_valid
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
    """Training epochs."""
    seed: int = 0
    """Seed of the synthetic archive and of training."""
    s3_endpoint: str | None = None
    """S3 endpoint when workdir is s3://."""


def validate(cfg: DemoConfig) -> None:
    problems = []
    if cfg.n_images < 50:
        problems.append("--n-images must be at least 50 for a train/val/test split")
    if cfg.shards < 1:
        problems.append("--shards must be at least 1")
    require_valid(problems)


def run(cfg: DemoConfig) -> score.ScoreSummary:
    validate(cfg)
    root = resolve(cfg.workdir, cfg.s3_endpoint)
    if not root.is_s3:
        shutil.rmtree(root.path, ignore_errors=True)
    base = root.uri.rstrip("/")
    archive, ckpt, model, scores = (f"{base}/{p}" for p in ("archive", "checkpoint", "model", "scores"))
    print(f"== 1/4 synth: {cfg.n_images} images of {cfg.size}px in {cfg.shards} shards -> {archive}", flush=True)
    synth.run(synth.SynthConfig(out=archive, n_images=cfg.n_images, size=cfg.size, shards=cfg.shards,
                                seed=cfg.seed, s3_endpoint=cfg.s3_endpoint))
    print(f"== 2/4 train {cfg.model} at {cfg.input_size}px for {cfg.epochs} epochs -> {ckpt}", flush=True)
    train.run(train.TrainConfig(archive=archive, out=ckpt, model=cfg.model, input_size=cfg.input_size,
                                epochs=cfg.epochs, seed=cfg.seed, s3_endpoint=cfg.s3_endpoint))
    print(f"== 3/4 export to OpenVINO + NNCF INT8 -> {model}", flush=True)
    q = quantize.run(quantize.QuantizeConfig(checkpoint=ckpt, archive=archive, out=model,
                                             calibration_size=min(300, cfg.n_images // 2),
                                             seed=cfg.seed, s3_endpoint=cfg.s3_endpoint))
    print(f"   FP32 vs INT8 agreement: mean AUROC {q.fp32_mean_auroc:.4f} vs {q.int8_mean_auroc:.4f}, "
          f"max |p_fp32 - p_int8| = {q.max_abs_prob_diff:.4f}", flush=True)
    print(f"== 4/4 score the archive on Ray Data with INT8 actors -> {scores}", flush=True)
    connect_ray()
    summary = score.run(score.ScoreConfig(archive=archive, model=model, out=scores,
                                          metadata=f"{archive}/Data_Entry_2017.csv",
                                          s3_endpoint=cfg.s3_endpoint, progress_every_s=5.0))
    print(f"demo done: {summary.rows} rows ({summary.ok} ok, {summary.errors} errors) at {summary.results_uri}",
          flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(DemoConfig, "tilescope demo", __doc__.splitlines()[0])
    cfg = config_from_args(DemoConfig, parser.parse_args(argv))
    try:
        run(cfg)
    except (ValueError, OSError) as exc:
        print(f"tilescope demo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
