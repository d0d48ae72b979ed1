"""Train a tile ensemble: one model per tile position, trained in parallel by Ray actors across nodes,
joined into image scores and heatmaps, exported and quantized to one INT8 ensemble artifact.

Recipe: plan (grid, splits, labels) -> decode (one Ray task per shard, each image decoded once for the
whole job, shared by every position through the object store) -> train (a pool of TileTrainer actors,
one per CPU slot, SPREAD across nodes, restarted on failure; each takes one epoch of one position at a
time, fewest epochs first, carried between actors by per-epoch checkpoints, so any number of positions
shares the pool evenly) -> export (every position to FP32 IR + NNCF INT8, in parallel on the same actors)
-> join (mean, max, stacked
combiner and thresholds fit on validation; AUROC on test; heatmap localisation) -> save (the artifact,
manifest last). Rerunning a finished job does nothing; rerunning a crashed one resumes every position.

    tilescope train-tiles --archive runs/synth --out runs/ensemble --image-size 256 --tile-size 128 \
        --stride 128 --backbone dwsep_cnn
    ray job submit --working-dir . -- python -m jobs.train_tiles --archive s3://b/nih --out s3://b/ens \
        --image-size 512 --tile-size 256 --stride 128 --backbone resnet18 --actor-cpus 4
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from actors.openvino_ir import QuantizationPreset
from cli import console
from cli.flags import coerce_choices, require_valid
from cli.job_main import connect_ray, job_main
from cli.node_roles import train_cpus, train_resources
from cli.progress import RoundProgress
from cli.provenance import tilescope_versions
from storage.archives import list_shards
from storage.artifacts import open_artifact, write_artifact
from storage.fs import check_reachable, exists, list_files, read_json, resolve, write_json
from storage.image_sets import DecodedShard, load_shard_images
from storage.metadata_files import default_metadata_uri, load_metadata
from xray.evaluation.ensemble import EnsembleEvaluation, evaluate_ensemble
from xray.metadata.labels import LABELS
from xray.metadata.manifests import (
    ENSEMBLE_PRECISIONS,
    EnsembleManifest,
    IRKind,
    PositionRecord,
    SplitRecord,
    position_ir_path,
)
from xray.metadata.splits import LabelledSplit, labelled_split, labels_for, split_by_patient
from xray.models.settings import BACKBONE_NAMES, TrainingSettings
from xray.tiles.grid import TileGrid
from xray.tiles.join import Combiner
from xray.tiles.schedule import PositionSchedule, Step

if TYPE_CHECKING:  # the trainer actor's module imports torch: loaded where positions are trained
    from actors.tile_trainer import EpochReport, PositionExport, PositionResult

FLAG_ALIASES = {"precision": "train_precision"}
"""Old flag spellings (old name -> field), accepted with a warning for one release: --precision now names only
which IR score runs."""


@dataclass(frozen=True)
class TrainTilesConfig(TrainingSettings):
    archive: str
    """Archive URI: directory or s3:// prefix of tar.gz shards or PNGs."""
    out: str
    """Ensemble artifact URI to create (local path or s3://)."""
    metadata: str | None = None
    """Data_Entry_2017.csv URI; default: beside the shards. Split and bbox lists are read from beside it."""
    image_size: int = 512
    """Images are decoded once at this size, then cut into tiles."""
    tile_size: int = 256
    """Tile side in pixels: each position model's input size."""
    stride: int = 256
    """Step between tiles (smaller than --tile-size for overlap); the last row/column is zero-padded."""
    backbone: str = field(default="resnet18", metadata={"choices": BACKBONE_NAMES})
    """Architecture of every position model: densenet121, resnet18, mobilenet_v3_small, dwsep_cnn, vgg16."""
    actor_cpus: float = 1.0
    """CPUs Ray reserves per trainer actor; torch threads = max(1, floor(this))."""
    actors: int = 0
    """Trainer actors; 0: as many as the cluster's CPUs hold at --actor-cpus each (at most one per position)."""
    combiner: Combiner = Combiner.STACKED
    """Default join for scoring: mean, max or stacked (fit on validation)."""
    calibration_size: int = 300
    """Training tiles per position in the seeded NNCF calibration subset."""
    preset: QuantizationPreset = QuantizationPreset.PERFORMANCE
    """NNCF preset: performance or mixed."""
    work: str | None = None
    """Where per-position checkpoints live; default <out>.work (kept after success for audit)."""
    s3_endpoint: str | None = None
    """S3 endpoint for MinIO/Ceph/moto; default from the environment."""


@dataclass(frozen=True)
class TrainTilesSummary:
    out: str
    sha256: str
    grid: tuple[int, int]
    positions: tuple[PositionResult, ...]
    evaluation: EnsembleEvaluation | None
    already_complete: bool
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    """Wall seconds of decode (all shards), positions (train + export of every position) and join (evaluate
    + save); what is left of `seconds` is planning and connecting to Ray."""


def validate(cfg: TrainTilesConfig) -> TileGrid:
    problems = []
    grid = None
    try:
        grid = TileGrid(cfg.image_size, cfg.tile_size, cfg.stride)
    except ValueError as exc:
        problems.append(f"--image-size/--tile-size/--stride: {exc}")
    if cfg.tile_size < 32:
        problems.append(f"--tile-size {cfg.tile_size} is below 32 pixels")
    problems += cfg.training_problems(cfg.backbone)
    if cfg.actor_cpus <= 0:
        problems.append("--actor-cpus must be positive")
    if cfg.actors < 0:
        problems.append("--actors must be 0 (one per CPU slot) or positive")
    problems += coerce_choices(cfg)
    if cfg.calibration_size < 1:
        problems.append("--calibration-size must be at least 1")
    require_valid(problems)
    assert grid is not None
    return grid


def work_uri(cfg: TrainTilesConfig) -> str:
    return cfg.work or f"{cfg.out.rstrip('/')}.work"


WORK_CLAIM = "_work.json"
# What decides a position's weights: a checkpoint trained under other values must not be resumed.
_WORK_KEYS = ("archive", "image_size", "tile_size", "stride", "backbone", "batch_size", "lr", "val_fraction",
              "train_precision", "seed")


def claim_work(cfg: TrainTilesConfig) -> None:
    """The work directory's claim (written before any checkpoint): a rerun resumes its checkpoints only with the
    same training inputs; otherwise it is refused naming the flags, so no position mixes two configurations.
    More --epochs is allowed: positions continue from their checkpoints."""
    loc = resolve(work_uri(cfg), cfg.s3_endpoint)
    wanted = {key: getattr(cfg, key) for key in _WORK_KEYS}
    recorded = read_json(loc, WORK_CLAIM)
    if recorded is None:
        if list_files(loc):
            raise ValueError(f"--work {loc.uri} holds files that train-tiles did not write (no {WORK_CLAIM}); "
                             "choose an empty --work")
        write_json(loc, WORK_CLAIM, wanted)
        return
    differ = [key for key in _WORK_KEYS if str(recorded.get(key)) != str(wanted[key])]
    if differ:
        flags = ", ".join(f"--{k.replace('_', '-')} {wanted[k]} (was {recorded.get(k)})" for k in differ)
        raise ValueError(f"--work {loc.uri} holds checkpoints trained with other settings: {flags}. Rerun with "
                         "the recorded values to resume, or choose another --out / --work")


def run(cfg: TrainTilesConfig) -> TrainTilesSummary:
    import ray
    import torch  # noqa: F401  (the [train] extra: missing, the job fails here in one line, before any work)

    grid = validate(cfg)
    t0 = time.perf_counter()
    # Plan: every bad input fails here, before any remote work.
    out = resolve(cfg.out, cfg.s3_endpoint)
    check_reachable(out)
    if exists(out.join("manifest.json")):
        art = open_artifact(cfg.out, cfg.s3_endpoint)
        print(f"ensemble {cfg.out} is already complete (sha256 {art.sha256[:12]}); nothing to do", flush=True)
        return TrainTilesSummary(cfg.out, art.sha256, grid.shape, (), None, True, time.perf_counter() - t0)
    shards = list_shards(cfg.archive, cfg.s3_endpoint)
    meta = load_metadata(cfg.metadata or default_metadata_uri(cfg.archive), cfg.s3_endpoint)
    patients = split_by_patient(meta, cfg.val_fraction, cfg.seed)
    print(f"grid {grid.steps}x{grid.steps} of {grid.tile_size}px tiles (stride {grid.stride}) over "
          f"{grid.image_size}px images: {grid.n_positions} position models; {len(shards)} shards; "
          f"work {work_uri(cfg)}", flush=True)
    claim_work(cfg)

    connect_ray()
    phases: dict[str, float] = {}
    t_phase = time.perf_counter()
    # Decode: one task per shard; results stay in the object store, shared by every position actor.
    decode = ray.remote(load_shard_images).options(num_cpus=1, max_retries=3)
    shard_refs = [decode.remote(s, patients.all, grid.image_size, cfg.s3_endpoint) for s in shards]
    decoded: list[DecodedShard] = ray.get(shard_refs)
    present = {i for d in decoded for i in d.ids}
    skipped = sum(len(d.errors) for d in decoded)
    split = labelled_split(patients, meta, present)
    if len(split.train) < 2 or len(split.val) < 1 or len(split.test) < 1:
        raise ValueError(f"--archive {cfg.archive}: too few decodable images per split (train "
                         f"{len(split.train)}, val {len(split.val)}, test {len(split.test)})")
    print(f"decoded {len(present)} images once ({skipped} unreadable skipped): train {len(split.train)}, "
          f"val {len(split.val)}, test {len(split.test)}", flush=True)

    phases["decode"] = time.perf_counter() - t_phase

    # Train + export: every position on the trainer pool.
    t_phase = time.perf_counter()
    results, exports = _train_positions(cfg, grid, ray.put(split), shard_refs)
    phases["positions"] = time.perf_counter() - t_phase
    t_phase = time.perf_counter()

    # Join, evaluate, save.
    stack = {name: np.stack([getattr(e, name) for e in exports], axis=1)  # (N, T, L) per split and precision
             for name in ("val_fp32", "val_int8", "test_fp32", "test_int8")}
    dimensions = {d.ids[k]: (int(d.dimensions[k, 0]), int(d.dimensions[k, 1])) for d in decoded
                  for k in range(len(d.ids))}
    evaluation = evaluate_ensemble(grid, {IRKind.FP32: stack["val_fp32"], IRKind.INT8: stack["val_int8"]},
                                   {IRKind.FP32: stack["test_fp32"], IRKind.INT8: stack["test_int8"]},
                                   split.val_labels, labels_for(split.test, meta), split.test, meta.bboxes,
                                   dimensions)
    sha = _save(cfg, grid, results, exports, evaluation, split)
    phases["join"] = time.perf_counter() - t_phase
    summary = TrainTilesSummary(cfg.out, sha, grid.shape, tuple(results), evaluation, False,
                                time.perf_counter() - t0, phases)
    best = evaluation.test_mean_auroc[IRKind.FP32]
    print(f"ensemble {cfg.out} (sha256 {sha[:12]}): test mean AUROC "
          + ", ".join(f"{c} {best[c]:.4f}" for c in best)
          + f"; INT8 {cfg.combiner} {evaluation.test_mean_auroc[IRKind.INT8][cfg.combiner]:.4f}; wall "
          + ", ".join(f"{name} {s:.1f}s" for name, s in phases.items()), flush=True)
    return summary


def trainer_count(cfg: TrainTilesConfig, n_positions: int, cluster_cpus: float) -> int:
    """--actors, or as many --actor-cpus slots as the cluster has CPUs; never more than positions."""
    slots = cfg.actors or max(1, int(cluster_cpus // cfg.actor_cpus))
    return max(1, min(slots, n_positions))


def _train_positions(cfg: TrainTilesConfig, grid: TileGrid, split_ref, shard_refs
                     ) -> tuple[list[PositionResult], list[PositionExport]]:
    """Run the epoch-level schedule (xray.tiles.schedule) on a pool of trainer actors until every
    position is trained and exported."""
    import ray
    from ray.exceptions import RayActorError

    from actors.tile_trainer import PositionPlan, TileTrainer

    n_trainers = trainer_count(cfg, grid.n_positions, train_cpus(ray.nodes(), ray.cluster_resources().get("CPU", 1.0)))
    # SPREAD puts the trainers on as many nodes as possible. A trainer that dies (or whose node is lost) is
    # restarted anywhere with free CPUs (max_restarts=-1); its in-flight unit is not retried on it
    # (max_task_retries=0) but goes back to the schedule for any live trainer, and resumes from the
    # position's checkpoint. A restart that finds no free CPU therefore holds up nothing. No placement group:
    # a restarted actor needs no bundle on a lost node.
    # resources: on a cluster with node roles, train workers only (cli/node_roles.py: score workers have no torch).
    trainer = ray.remote(TileTrainer).options(num_cpus=cfg.actor_cpus, scheduling_strategy="SPREAD",
                                              max_restarts=-1, max_task_retries=0, resources=train_resources())
    keep = -(-grid.n_positions // n_trainers) + 1  # the positions a trainer cycles through, in memory
    trainers = [trainer.remote(max(1, int(cfg.actor_cpus)), cfg.train_precision, keep) for _ in range(n_trainers)]
    plans = [PositionPlan(position=p, grid=grid, backbone=cfg.backbone, labels=LABELS, epochs=cfg.epochs,
                          batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, calibration_size=cfg.calibration_size,
                          preset=cfg.preset, work_uri=work_uri(cfg), endpoint=cfg.s3_endpoint)
             for p in range(grid.n_positions)]
    print(f"{n_trainers} trainer actors x {cfg.actor_cpus:g} CPU for {grid.n_positions} positions x "
          f"{cfg.epochs} epochs, one epoch per call", flush=True)
    schedule = PositionSchedule(grid.n_positions, cfg.epochs)
    # One line per round from here, not from the actors: nothing for Ray's log dedup to fold, and nothing
    # arriving after the job's last line (cli/progress.py).
    progress = RoundProgress(grid.n_positions, cfg.epochs, n_trainers, verbose=console.verbose())
    idle = list(range(n_trainers))
    running: dict = {}  # ObjectRef -> (trainer, Unit, or None for a ping after a restart)
    reports: dict[int, list[EpochReport]] = {p: [] for p in range(grid.n_positions)}
    exports: dict[int, PositionExport] = {}
    failures = 0
    try:
        while not schedule.complete:
            for t in list(idle):
                unit = schedule.next_for(t)
                if unit is None:
                    break
                idle.remove(t)
                plan = plans[unit.position]
                ref = (trainers[t].export.remote(plan, split_ref, *shard_refs) if unit.step is Step.EXPORT
                       else trainers[t].train_epoch.remote(plan, unit.epochs_done, split_ref, *shard_refs))
                running[ref] = (t, unit)
                progress.unit_started(unit.position)
            if not running:
                raise RuntimeError("no trainer actor is alive to take the remaining positions")
            ready, _ = ray.wait(list(running), num_returns=1)
            t, unit = running.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except RayActorError as exc:
                # The actor died (or its node was lost): requeue its unit, wait for the restart with a ping.
                failures += 1
                if failures > 10 * grid.n_positions * cfg.epochs:
                    raise RuntimeError(f"trainer actors keep dying ({failures} times); last: {exc}") from exc
                if unit is not None:
                    schedule.failed(unit)
                    progress.unit_lost(unit.position)
                    print(f"trainer {t} lost during {unit.step.value} of position {unit.position} "
                          f"({type(exc).__name__}); the position goes back to the queue", flush=True)
                running[trainers[t].node.remote()] = (t, None)
                continue
            idle.append(t)
            if unit is None:
                print(f"trainer {t} is back (node {value[:12]})", flush=True)
            elif unit.step is Step.EXPORT:
                schedule.finished(unit)
                exports[unit.position] = value
                progress.export_finished(unit.position)
            else:
                schedule.finished(unit, value.epochs_done)
                reports[unit.position].append(value)
                progress.epoch_finished(unit.position, value.epochs_done, value.trained)
    finally:
        for a in trainers:  # frees their CPUs now, and gives up on restarts still waiting for one
            ray.kill(a)
    results = [_position_result(exports[p], reports[p]) for p in range(grid.n_positions)]
    return results, [exports[p] for p in range(grid.n_positions)]


def _position_result(export: PositionExport, reports: list[EpochReport]) -> PositionResult:
    from actors.tile_trainer import PositionResult

    trained = [r for r in reports if r.trained is not None]
    nodes = tuple(dict.fromkeys(r.node_id for r in trained))
    resumed = reports[0].epochs_before if reports else len(export.history)
    rates = [r.trained["images_per_s"] for r in trained]
    return PositionResult(export.position, export.history, resumed, nodes, export.math_path,
                          float(np.mean(rates)) if rates else 0.0)


def _save(cfg: TrainTilesConfig, grid: TileGrid, results: list[PositionResult], exports: list[PositionExport],
          evaluation: EnsembleEvaluation, split: LabelledSplit) -> str:
    import nncf
    import openvino as ov
    import torch

    files: dict[str, bytes] = {}
    for e in exports:
        files.update(e.files)
    positions = tuple(PositionRecord(
        position=r.position, origin=grid.origin(r.position),
        irs={kind: position_ir_path(r.position, kind) for kind in ENSEMBLE_PRECISIONS},
        history=tuple(r.history), nodes=r.nodes, resumed_from_epoch=r.resumed_from_epoch,
        tiles_per_s=r.tiles_per_s) for r in results)
    manifest = EnsembleManifest(
        model=f"tiles{grid.steps}x{grid.steps}-{cfg.backbone}", backbone=cfg.backbone, labels=LABELS, grid=grid,
        positions=positions, combiner=cfg.combiner, stacked=evaluation.stacked.to_json(),
        split=SplitRecord(cfg.val_fraction, cfg.seed, len(split.train), len(split.val), len(split.test)),
        thresholds=evaluation.thresholds, metrics=evaluation.to_json(), math_path=results[0].math_path,
        versions={"torch": torch.__version__, "openvino": ov.__version__, "nncf": nncf.__version__,
                  **tilescope_versions()},
        config=asdict(cfg),
    )
    return write_artifact(cfg.out, files, manifest, cfg.s3_endpoint)


def main(argv: list[str] | None = None) -> int:
    return job_main(TrainTilesConfig, run, "tilescope train-tiles", __doc__, argv, aliases=FLAG_ALIASES)


if __name__ == "__main__":
    raise SystemExit(main())
