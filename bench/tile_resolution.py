"""Tile ensembles where they pay (issue 18): a tile ensemble at full resolution against single whole-image
models downscaled to 224, 256 and 512 px, on a synthetic 1024 px archive whose nodules, masses and plate
atelectasis are small, faint and carry their evidence in detail a downscale loses (`synth --detail fine`,
xray/synth/detail.py).

Every model: the same backbone, the same epochs, fp32 training, then the product path: INT8 (NNCF, f32-hinted
FP32 reference) and `score` on Ray Data over the whole archive. Reported on the archive's test patients:
per-label AUROC with bootstrap CIs, the mean over the small-finding labels with its bootstrap CI, the paired
bootstrap delta of the best ensemble against the best single model, wall time and core-seconds of training
and of scoring, images/s, and localisation (ensemble heatmap peak vs the single model's class activation
map, inside the BBox_List box).

    .venv/bin/python -m bench.tile_resolution              (about 40 minutes on 2 cores)
    .venv/bin/python -m bench.tile_resolution --quick      (a smoke run: minutes, numbers meaningless)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.core_seconds import CoreSeconds
from bench.doc_sections import machine_line, write_section
from bench.tile_labels import ceiling as tile_label_ceiling
from jobs import quantize, score, synth, train, train_tiles
from storage.metadata_files import load_metadata
from storage.scored_runs import open_run
from xray.evaluation.intervals import AurocEstimate, auroc_intervals, percentile_interval
from xray.evaluation.metrics import auroc
from xray.metadata.splits import Split
from xray.synth.detail import FINE_FINDINGS, FindingDetail

LEVEL = 0.95


@dataclass(frozen=True)
class Trained:
    """One model taken through training and scoring."""

    name: str
    model_uri: str
    train_wall: float
    train_core_s: float
    score_wall: float
    score_core_s: float
    images_per_s: float
    images: int
    results_uri: str
    ensemble: train_tiles.TrainTilesSummary | None = None


@dataclass(frozen=True)
class TestScores:
    """A run's test-split rows, aligned by image id across runs: (N, L) truth and probabilities."""

    ids: np.ndarray
    truth: np.ndarray
    probs: np.ndarray
    labels: tuple[str, ...]


def measured(fn: Callable[[], object], ray_cpus: int | None) -> tuple[object, float, float]:
    """fn() with (wall s, core-s); inside a local Ray of ray_cpus CPUs when given (started and stopped inside,
    so its workers' CPU time is counted)."""
    import ray

    with CoreSeconds() as meter:
        if ray_cpus:
            ray.init(address="local", num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False)
        try:
            out = fn()
        finally:
            if ray_cpus:
                ray.shutdown()
    return out, meter.wall, meter.seconds


def score_model(name: str, archive: str, model: str, out: str, cpus: int) -> tuple[score.ScoreSummary, float, float]:
    cfg = score.ScoreConfig(archive=archive, model=model, out=out, run_id=name, progress_every_s=60.0)
    return measured(lambda: score.run(cfg), cpus)  # type: ignore[return-value]


def single(args: argparse.Namespace, archive: str, work: str, size: int) -> Trained:
    name = f"single-{size}"
    ckpt, model = f"{work}/{name}.ckpt", f"{work}/{name}.model"
    tcfg = train.TrainConfig(archive=archive, out=ckpt, backbone=args.backbone, input_size=size, epochs=args.epochs,
                             batch_size=32, seed=args.seed, train_precision="fp32", threads=args.cpus)
    qcfg = quantize.QuantizeConfig(checkpoint=ckpt, archive=archive, out=model, calibration_size=300, seed=args.seed,
                                   recipe="histogram-fast", allow_over_budget=True)
    _, t_wall, t_core = measured(lambda: (train.run(tcfg), quantize.run(qcfg)), None)
    s, s_wall, s_core = score_model(name, archive, model, f"{work}/scores", args.cpus)
    return Trained(name, model, t_wall, t_core, s_wall, s_core, s.images_per_s, s.ok, s.results_uri)


def ensemble(args: argparse.Namespace, archive: str, work: str, image: int, tile: int, stride: int) -> Trained:
    name = f"ensemble-{image}-{tile}-{stride}"
    out = f"{work}/{name}"
    cfg = train_tiles.TrainTilesConfig(archive=archive, out=out, image_size=image, tile_size=tile, stride=stride,
                                       backbone=args.backbone, epochs=args.epochs, batch_size=32, calibration_size=300,
                                       train_precision="fp32", seed=args.seed)
    summary, t_wall, t_core = measured(lambda: train_tiles.run(cfg), args.cpus)
    s, s_wall, s_core = score_model(name, archive, out, f"{work}/scores", args.cpus)
    return Trained(name, out, t_wall, t_core, s_wall, s_core, s.images_per_s, s.ok, s.results_uri,
                   summary)  # type: ignore[arg-type]


def test_scores(results_uri: str, archive: str) -> TestScores:
    """The test-split rows of a scored run (ok rows; ground truth from the archive's metadata)."""
    from jobs.report_stages import select_scored

    meta = load_metadata(f"{archive}/Data_Entry_2017.csv", None)
    images = select_scored(open_run(results_uri), meta, results_uri, None)
    mask = images.truth.mask(Split.TEST)
    return TestScores(images.image_id[mask], images.truth.labels[mask], images.probs[mask], images.labels)


def mean_over(truth: np.ndarray, probs: np.ndarray, columns: list[int]) -> float:
    return float(np.mean([auroc(truth[:, j], probs[:, j]) for j in columns]))


def bootstrap_means(truth: np.ndarray, runs: dict[str, np.ndarray], columns: list[int], resamples: int,
                    seed: int) -> dict[str, np.ndarray]:
    """(resamples,) replicates of each run's mean AUROC over `columns`, all runs on the same resampled images
    (so differences between runs are paired). A replicate where a label has no positive or no negative is
    drawn again."""
    rng = np.random.default_rng(seed)
    n = truth.shape[0]
    reps: dict[str, list[float]] = {k: [] for k in runs}
    while len(next(iter(reps.values()))) < resamples:
        rows = rng.integers(0, n, n)
        y = truth[rows]
        if any(y[:, j].min() == y[:, j].max() for j in columns):
            continue
        for k, p in runs.items():
            reps[k].append(mean_over(y, p[rows], columns))
    return {k: np.asarray(v) for k, v in reps.items()}


def localisation_rows(trained: list[Trained], archive: str, work: str) -> str:
    """Heatmap peak in the box: the ensemble's tile heatmap vs each single model's CAM on the same test boxes."""
    try:
        from bench.cam_localisation import cam_vs_ensemble
    except ImportError:
        return "Localisation: not measured in this run (CAM comparison not available)."
    return cam_vs_ensemble(trained, archive, work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--size", type=int, default=1024, help="archive image side")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--backbone", default="dwsep_cnn")
    parser.add_argument("--singles", default="224,256,512", help="single-model input sizes")
    parser.add_argument("--ensembles", default="1024:256:256",
                        help="IMAGE:TILE:STRIDE per ensemble, comma-separated")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--keep", help="keep the archive and models under this directory")
    args = parser.parse_args()
    if args.quick:
        args.images, args.size, args.epochs, args.singles, args.ensembles, args.bootstrap = \
            120, 256, 1, "64", "256:128:128", 50
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or tmp
        archive = f"{work}/archive"
        if not os.path.exists(f"{archive}/Data_Entry_2017.csv"):
            synth.run(synth.SynthConfig(out=archive, n_images=args.images, size=args.size, shards=4, seed=21,
                                        detail=FindingDetail.FINE))
        trained = [single(args, archive, work, int(s)) for s in args.singles.split(",")]
        for spec in args.ensembles.split(","):
            image, tile, stride = (int(v) for v in spec.split(":"))
            trained.append(ensemble(args, archive, work, image, tile, stride))
        tests = {t.name: test_scores(t.results_uri, archive) for t in trained}
        image, tile, stride = (int(v) for v in args.ensembles.split(",")[0].split(":"))
        ceiling = tile_label_ceiling(archive, image, tile, stride, FINE_FINDINGS, args.backbone, args.epochs,
                                     args.seed)
        report(args, trained, tests, localisation_rows(trained, archive, work), ceiling)


def report(args: argparse.Namespace, trained: list[Trained], tests: dict[str, TestScores], loc: str,
           ceiling: dict[str, float]) -> None:
    first = next(iter(tests.values()))
    common = first.ids
    for t in tests.values():
        common = np.intersect1d(common, t.ids)
    aligned = {}
    for name, t in tests.items():
        rows = np.searchsorted(t.ids, common)
        aligned[name] = (t.truth[rows], t.probs[rows])
    truth = aligned[trained[0].name][0]
    labels = first.labels
    small = [labels.index(x) for x in FINE_FINDINGS]
    estimates: dict[str, list[AurocEstimate]] = {
        n: auroc_intervals(y, p, args.bootstrap, LEVEL, args.seed) for n, (y, p) in aligned.items()}
    reps = bootstrap_means(truth, {n: p for n, (_, p) in aligned.items()}, small, args.bootstrap, args.seed)
    point = {n: mean_over(truth, p, small) for n, (_, p) in aligned.items()}
    singles = [t.name for t in trained if t.ensemble is None]
    ensembles = [t.name for t in trained if t.ensemble is not None]
    best_single = max(singles, key=point.get)
    best_ens = max(ensembles, key=point.get)
    delta = point[best_ens] - point[best_single]
    d_lo, d_hi = percentile_interval(reps[best_ens] - reps[best_single], LEVEL)
    ci = {n: percentile_interval(r, LEVEL) for n, r in reps.items()}
    overlap = ci[best_ens][0] <= ci[best_single][1] and ci[best_single][0] <= ci[best_ens][1]
    met = delta >= 0.03 and not overlap
    all_mean = {n: float(np.mean([e.auroc for e in est])) for n, est in estimates.items()}

    head = "| label | " + " | ".join(t.name for t in trained) + " |"
    sep = "|---" * (len(trained) + 1) + "|"
    rows = []
    for j, label in enumerate(labels):
        mark = " (small)" if j in small else ""
        cells = [f"{estimates[t.name][j].auroc:.3f} [{estimates[t.name][j].low:.3f}, {estimates[t.name][j].high:.3f}]"
                 for t in trained]
        rows.append(f"| {label}{mark} | " + " | ".join(cells) + " |")
    rows.append("| **mean, small-finding labels** | " + " | ".join(
        f"**{point[t.name]:.3f}** [{ci[t.name][0]:.3f}, {ci[t.name][1]:.3f}]" for t in trained) + " |")
    rows.append("| mean, all 14 labels | " + " | ".join(f"{all_mean[t.name]:.3f}" for t in trained) + " |")
    cost = "\n".join(
        f"| {t.name} | {t.train_wall:.0f} | {t.train_core_s:.0f} | {t.images / t.images_per_s if t.images_per_s else 0:.0f} "
        f"| {t.images_per_s:.1f} | {t.score_core_s / max(t.images, 1) * 1000:.0f} |" for t in trained)
    joins = ""
    for t in trained:
        if t.ensemble is not None and t.ensemble.evaluation is not None:
            m = t.ensemble.evaluation.test_mean_auroc
            joins += (f"\n{t.name}, grid {t.ensemble.grid[0]}x{t.ensemble.grid[1]}: all-label test mean AUROC per join "
                      "at training (FP32 / INT8): " + ", ".join(
                          f"{c} {m['fp32'][c]:.3f} / {m['int8'][c]:.3f}" for c in m["fp32"]) + ".")
    md = f"""## Tile ensembles at full resolution vs downscaled single models (issue 18)

Command: `.venv/bin/python -m bench.tile_resolution --images {args.images} --size {args.size} --epochs {args.epochs} \
--backbone {args.backbone} --singles {args.singles} --ensembles {args.ensembles} --bootstrap {args.bootstrap}`
Machine: {machine_line()}.
Archive: `synth --detail fine`, {args.images} images at {args.size} px, seed 21: nodules (0.8-3% of the width), masses
(4-7%) and plate atelectasis drawn at full resolution, faint bodies (~1.5 grey levels) whose evidence is in
specks and thin lines 1-2 px wide at 1024 px (xray/synth/detail.py). Every model: {args.backbone}, {args.epochs} epochs,
batch 32, fp32 training, INT8 (NNCF, 300 calibration images), scored by `tilescope score` on Ray Data with
{args.cpus} CPUs; AUROC on the archive's {len(common)} test images with {LEVEL:.0%} bootstrap intervals
({args.bootstrap} resamples of images).

| label | {' | '.join(t.name for t in trained)} |
{sep}
""".replace(f"| label | {' | '.join(t.name for t in trained)} |\n", head + "\n") + "\n".join(rows) + f"""

Best ensemble ({best_ens}) minus best single model ({best_single}) over the small-finding labels
({', '.join(FINE_FINDINGS)}): {delta:+.3f} (paired bootstrap {LEVEL:.0%} CI {d_lo:+.3f} to {d_hi:+.3f}); intervals of
the two means {'overlap' if overlap else 'do not overlap'}. Target >= +0.03 with intervals that do not overlap:
{'met' if met else 'NOT met'}.{joins}

Diagnostic (bench/tile_labels.py): the same tiles ({args.ensembles.split(",")[0]}), the same backbone and epochs, but one
model for all positions trained on tile labels from the boxes (a tile is positive when a box's centre is in it),
image score = max over tiles. Test AUROC: {', '.join(f'{k} {v:.3f}' for k, v in ceiling.items())} (mean
{np.mean(list(ceiling.values())):.3f}), against {point[best_ens]:.3f} for the ensemble trained on image labels. What full
resolution carries when the supervision is local; the ensemble's positions learn from image labels, so a position
whose tile holds the finding in a small share of its positive images learns mostly from noise.

Cost (training = train + INT8 export for single models, train-tiles for ensembles; core-seconds are the CPU time
of the driver and every Ray process under it):

| model | train wall s | train core-s | score wall s | images/s | score core-ms per image |
|---|---|---|---|---|---|
{cost}

{loc}
"""
    write_section("tile_resolution", md)
    print(md)


if __name__ == "__main__":
    main()
