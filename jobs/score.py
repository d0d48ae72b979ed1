"""Bulk scoring: Ray Data streams an archive through OpenVINO INT8 actors into Parquet, exactly once.

Recipe: plan (list shards, read what is already written) -> stream (read chunks -> decode tasks ->
scorer actors -> chunk writer) -> collect (count rows from storage) -> commit (run manifest, last).
Rerunning the same command resumes: finished chunks are skipped, a committed run is verified (and repaired) on
storage. One run writes a --out at a time (storage/run_lease.py): a second one stops before writing, naming it.

    tilescope score --archive runs/demo/archive --model runs/demo/model --out runs/demo/scores
    ray job submit --working-dir . -- python -m jobs.score --archive s3://b/nih --model s3://b/model \
        --out s3://b/scores
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from actors.openvino_ir import IRPrecision
from cli.flags import coerce_choices, require_valid
from cli.job_main import connect_ray, job_main
from cli.progress import stage
from cli.provenance import tilescope_versions
from storage.archives import list_shards
from storage.artifacts import open_typed
from storage.fs import StorageError, check_reachable, exists, resolve
from storage.metadata_files import default_metadata_uri, load_metadata
from storage.results import (
    RUN_CLAIM,
    RUN_MANIFEST,
    count_results,
    model_dir_name,
    read_json,
    scan_progress,
    write_json,
)
from storage.run_claim import Chunking, RunClaim, new_claim, reconcile
from storage.run_commit import compact, remove_leftovers, repair_overlaps, verify_committed, verify_complete
from storage.run_lease import holding
from storage.run_manifest import RunManifest, ran_record, read_manifest, write_manifest
from xray.codec.decode import DEFAULT_MAX_PIXELS
from xray.metadata.manifests import ArtifactKind, EnsembleManifest, ScorableManifest

if TYPE_CHECKING:  # loaded inside run(), after parsing: --help stays fast
    from jobs.score_stages import ScoringCost


@dataclass(frozen=True)
class ScoreConfig:
    archive: str
    """Archive URI: directory or s3:// prefix of tar/tar.gz shards or PNGs, or one shard."""
    model: str
    """Model artifact URI written by `tilescope quantize` (local or s3://)."""
    out: str
    """Results URI; rows go under <out>/<model>-<sha12>/ so several models sit side by side."""
    metadata: str | None = None
    """Data_Entry_2017.csv URI: gives the expected total for progress/ETA and counts images listed there but not
    found. Default: the one beside the shards when there is one (not for a single-shard --archive, whose
    neighbour lists every shard's images)."""
    run_id: str | None = None
    """Run id stored in every row; default derives from archive + artifact, so a rerun resumes."""
    precision: IRPrecision = IRPrecision.INT8
    """int8 (the INT8 IR), fp32 (the FP32 IR in f32) or bf16 (the FP32 IR in bf16, native on AMX/avx512_bf16
    CPUs); rows and the run manifest record what actually ran, and on which CPU class."""
    chunk_size: int = 64
    """Most images per chunk: the unit of scoring calls, output files and resume."""
    chunk_mb: int = 8
    """Most MiB of image bytes per chunk; an image larger than this becomes an error row."""
    buffer_mb: int | None = None
    """Object-store MiB per scorer actor that the pipeline may fill ahead of scoring (read-ahead); bounds
    memory whatever the archive's size. Default 16 x --chunk-mb; 0 = Ray Data's default budget (a share of
    the object store)."""
    actors: int = 0
    """Scorer actors in the pool (fixed size); 0 = the cluster's CPUs / --actor-cpus."""
    actor_cpus: float = 1.0
    """CPUs Ray reserves per scorer actor; OpenVINO threads follow it."""
    streams: int = 1
    """OpenVINO streams (and async infer requests) per actor."""
    infer_batch: int = 8
    """Images per inference request."""
    decode_cpus: float = 1.0
    """CPUs Ray reserves per decode task."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Images above this many pixels become error rows (decompression bombs)."""
    progress_every_s: float = 10.0
    """Seconds between progress lines."""
    s3_endpoint: str | None = None
    """S3 endpoint for MinIO/Ceph/moto (e.g. http://127.0.0.1:9000); default from the environment."""


@dataclass(frozen=True)
class ScoreSummary:
    run_id: str
    results_uri: str
    rows: int
    ok: int
    errors: int
    scored_now: int
    seconds: float
    images_per_s: float
    already_complete: bool
    stream_seconds: float = 0.0
    """Wall time of the Ray Data pipeline alone (no planning, Ray start-up or commit)."""


def validate(cfg: ScoreConfig) -> None:
    problems = coerce_choices(cfg)
    if cfg.chunk_size < 1:
        problems.append("--chunk-size must be at least 1")
    if cfg.chunk_mb < 1:
        problems.append("--chunk-mb must be at least 1")
    if cfg.buffer_mb is not None and cfg.buffer_mb < 0:
        problems.append("--buffer-mb must be 0 (Ray Data's default) or more")
    if cfg.actors < 0:
        problems.append("--actors must be 0 (auto) or more")
    if cfg.actor_cpus <= 0 or cfg.decode_cpus <= 0:
        problems.append("--actor-cpus and --decode-cpus must be positive")
    if cfg.streams < 1 or cfg.infer_batch < 1:
        problems.append("--streams and --infer-batch must be at least 1")
    if cfg.max_pixels < 1:
        problems.append("--max-pixels must be positive")
    if not 0 < cfg.progress_every_s < float("inf"):
        problems.append("--progress-every-s must be a positive number of seconds")
    for flag, value in (("--archive", cfg.archive), ("--model", cfg.model), ("--out", cfg.out)):
        if not value.strip():
            problems.append(f"{flag} is empty; name a local path or s3:// URI")
    require_valid(problems)


def with_default_metadata(cfg: ScoreConfig) -> ScoreConfig:
    """`cfg` with --metadata set to the Data_Entry_2017.csv beside the shards when none is given and one is
    there, so progress has a total and an ETA, the completion line counts listed images the archive lacks,
    and the run records the file it used."""
    if cfg.metadata or cfg.archive.rstrip("/").endswith((".tar", ".tar.gz", ".tgz")):
        return cfg
    beside = default_metadata_uri(cfg.archive)
    return replace(cfg, metadata=beside) if exists(resolve(beside, cfg.s3_endpoint)) else cfg


def default_run_id(archive: str, artifact_sha: str) -> str:
    return f"score-{artifact_sha[:12]}-{hashlib.sha256(archive.encode()).hexdigest()[:8]}"


def run(cfg: ScoreConfig) -> ScoreSummary:
    import ray

    validate(cfg)
    t0 = time.perf_counter()
    # Plan: everything that can fail on bad input fails here, before any remote work.
    out_root = resolve(cfg.out, cfg.s3_endpoint)
    check_reachable(out_root)
    shards = list_shards(cfg.archive, cfg.s3_endpoint)
    cfg = with_default_metadata(cfg)
    artifact, manifest = open_typed(cfg.model, cfg.s3_endpoint, "--model", ArtifactKind.MODEL, ArtifactKind.ENSEMBLE,
                                    verify=True)
    if cfg.precision.ir not in manifest.precisions:
        raise ValueError(f"--model {cfg.model}: artifact has no {cfg.precision.ir} IR for --precision {cfg.precision} "
                         f"(it has {', '.join(manifest.precisions)}); `tilescope quantize` adds the int8 one")
    labels = list(manifest.labels)
    expected = None
    if cfg.metadata:
        expected = {e.image_index for e in load_metadata(cfg.metadata, cfg.s3_endpoint).entries}
    out = out_root.join(model_dir_name(manifest.model, artifact.sha256))
    chunking = Chunking(cfg.chunk_size, cfg.chunk_mb)
    # One writer at a time (storage/run_lease.py): a second run into this --out stops here, naming the holder.
    with holding(out, cfg.run_id or default_run_id(cfg.archive, artifact.sha256)) as holder:
        claim, new_shards = _claim(cfg, out, artifact.sha256, chunking, shards)
        run_id = claim.run_id
        committed = read_manifest(out)
        if committed is not None and not new_shards:
            # A committed run is verified, never trusted: leftovers of a crashed or racing writer are removed and the
            # manifest rewritten; rows lost since the commit are scored again below.
            verified = verify_committed(out, committed, [s.name for s in shards], holder)
            if verified is not None:
                print(verified.message, flush=True)
                return ScoreSummary(run_id, out.uri, verified.manifest.rows, verified.manifest.ok,
                                    verified.manifest.errors, 0, time.perf_counter() - t0, 0.0, True)
        if committed is not None:
            # New shards arrived after the commit, or rows were lost since: in progress again until committed.
            out.fs.delete_file(out.join(RUN_MANIFEST).path)
            lost = sorted(set(committed.shards) - set(scan_progress(out).complete))
            print(f"run {run_id}: " + (f"{len(new_shards)} new shards since the commit: {', '.join(new_shards[:5])}"
                  if new_shards else f"rows of {len(lost)} shards lost since the commit: {', '.join(lost[:5])}"),
                  flush=True)
        write_json(out, RUN_CLAIM, claim.to_json())
        progress = scan_progress(out)
        repair_overlaps(out, progress)
        progress = scan_progress(out)
        todo = [s for s in shards if s.name not in progress.complete]
        print(f"run {run_id}: {len(shards)} shards ({len(shards) - len(todo)} already complete), "
              f"model {manifest.model} {cfg.precision} sha256 {artifact.sha256[:12]}, out {out.uri}",
              flush=True)

        # Stream.
        written: dict[tuple[str, int], int] = {}
        from jobs.score_stages import ScoringCost  # decode and numba load with it: after parsing

        cost = ScoringCost()
        stream_seconds = 0.0
        actors = 0
        if todo:
            with stage("score", "starting Ray" if not os.environ.get("RAY_ADDRESS") else "joining the cluster"):
                connect_ray()
            actors = pool_size(cfg)
            print(f"[score] {actors} scorer actors start and compile the model; rows follow the first chunk",
                  flush=True)
            t_stream = time.perf_counter()
            written = _stream(cfg, todo, progress.chunks, out.uri, artifact, manifest, run_id, labels, cost,
                              expected_total=len(expected) if expected else None, heartbeat=holder.heartbeat)
            stream_seconds = time.perf_counter() - t_stream
        scored_now = sum(written.values())

        # Verify, compact, count from storage, commit (the manifest last).
        progress = scan_progress(out)
        before = count_results(out, progress.files)
        verify_complete(out, progress, [s.name for s in shards], written, before)
        holder.verify("compaction")
        compact(out, progress)
        remove_leftovers(out)
        counts = count_results(out)
        if counts.duplicate_sources or counts.rows != before.rows:
            raise StorageError(f"{out.uri}: {before.rows} rows before compaction, {counts.rows} after; nothing was "
                               "committed, rerun the same command")
        seconds = time.perf_counter() - t0
        rate = scored_now / stream_seconds if stream_seconds > 0 else 0.0
        committed = RunManifest(
            run_id=run_id, rows=counts.rows, ok=counts.ok, errors=counts.errors, files=counts.files,
            error_reasons=counts.top_errors,
            missing_from_archive=(len(expected - counts.image_ids) if expected is not None else None),
            scored_this_attempt=scored_now, seconds_this_attempt=seconds,
            pipeline_seconds_this_attempt=stream_seconds, images_per_s=rate,
            cost=cost.record(*scoring_shape(manifest), images_per_s=rate, scorer_cpus=actors * cfg.actor_cpus),
            model=manifest.model, artifact_uri=artifact.uri, artifact_sha256=artifact.sha256,
            **ran_record(out, str(cfg.precision)), labels=tuple(labels), shards=tuple(s.name for s in shards),
            config=_public_config(cfg), versions=_versions(ray.__version__))
        holder.verify("writing the manifest")
        write_manifest(out, committed)
        missing = ("" if committed.missing_from_archive is None
                   else f"; {committed.missing_from_archive} listed in the metadata but missing from the archive")
        spent = committed.cost
        per_image = ("" if spent["core_ms_per_image"] is None else
                     f", {spent['core_ms_per_image']:.1f} core-ms per image: decode "
                     f"{spent['decode_core_ms_per_image']:.1f}"
                     f" + {spent['positions_per_image']} model run(s) {spent['infer_core_ms_per_image']:.1f}")
        print(f"run {run_id} complete: {counts.rows} rows, {counts.ok} ok, {counts.errors} errors in {counts.files} "
              f"files{missing}; {scored_now} scored now in {seconds:.1f}s (pipeline {rate:.1f} images/s{per_image}) "
              f"-> {out.uri}", flush=True)
        return ScoreSummary(run_id, out.uri, counts.rows, counts.ok, counts.errors, scored_now, seconds, rate, False,
                            stream_seconds)


def _claim(cfg: ScoreConfig, out, artifact_sha: str, chunking: Chunking, shards) -> tuple[RunClaim, tuple[str, ...]]:
    """This run's claim on `out`: a new one, or the recorded one checked against the archive (run_claim.py)."""
    recorded = read_json(out, RUN_CLAIM)
    if recorded is None:
        run_id = cfg.run_id or default_run_id(cfg.archive, artifact_sha)
        return new_claim(run_id, cfg.archive, artifact_sha, chunking, shards, _public_config(cfg)), ()
    old = RunClaim.from_json(recorded, f"{out.uri}/{RUN_CLAIM}")
    checked = reconcile(old, cfg.run_id or old.run_id, cfg.archive, artifact_sha, chunking, shards, out.uri,
                        {"precision": cfg.precision, "max_pixels": cfg.max_pixels})
    return checked.claim, checked.new_shards


def scoring_shape(manifest: ScorableManifest) -> tuple[int, int, int]:
    """(model runs per image, the size an image is decoded at, each model's input size): (1, S, S) for a single
    model; (grid positions, image size, tile size) for an ensemble, which decodes once for all its positions."""
    if isinstance(manifest, EnsembleManifest):
        return manifest.grid.n_positions, manifest.grid.image_size, manifest.grid.tile_size
    return 1, manifest.input_size, manifest.input_size


def _stream(cfg: ScoreConfig, todo, done_chunks, out_uri: str, artifact, manifest: ScorableManifest, run_id: str,
            labels: list[str], cost: ScoringCost, expected_total: int | None,
            heartbeat: Callable[[], None] = lambda: None) -> dict[tuple[str, int], int]:
    """Score the shards in `todo`; returns the rows of every chunk written, by (shard, chunk), and adds what
    scoring them cost to `cost`."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy

    from actors.ensemble_scorer import EnsembleScorer, heatmap_shape
    from actors.scorer import Int8Scorer
    from jobs.score_stages import ProgressLine, decode_chunk, write_chunks
    from storage.archive_source import ArchiveChunks, read_block_target  # imports Ray Data

    ctx = DataContext.get_current()
    # Ray's per-operator progress bars are noise in `ray job logs`; ProgressLine prints one line instead.
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    actors = pool_size(cfg)
    chunk_bytes = cfg.chunk_mb * 2**20
    source = ArchiveChunks(todo, cfg.chunk_size, chunk_bytes, done_chunks, cfg.s3_endpoint)
    # Whole chunks per block: a block target that never slices a chunk (see storage/archive_source.py), and
    # override_num_blocks = number of read tasks, which stops Ray Data from splitting read outputs to reach
    # its minimum block count.
    # Reading (inflate + slice a shard) and writing are light and hold no CPU reservation: with every CPU
    # reserved by scorer actors, a reserved read or write task could never be scheduled and the pipeline
    # would stall. Ray Data's backpressure still bounds how many run and how much they buffer.
    # At most one shard per scorer actor is read at a time: reads are far faster than scoring, and unbounded
    # they would inflate the whole archive into the object store (memory growing with the archive).
    # The dataset takes a copy of the current DataContext: set this run's limits, create it, restore them.
    saved = ctx.target_max_block_size, ctx.execution_options
    try:
        ctx.target_max_block_size = read_block_target(chunk_bytes)
        buffer_mb = read_ahead_mb(cfg)
        if buffer_mb:
            # Read-ahead is bounded by Ray Data's object-store budget; its default (a share of the object
            # store) lets fast reads buffer gigabytes ahead of the scorers, growing memory up to that share.
            ctx.execution_options = copy.deepcopy(ctx.execution_options)
            ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
                object_store_memory=actors * buffer_mb * 2**20)
        ds = ray.data.read_datasource(source, override_num_blocks=len(todo), num_cpus=0,
                                      compute=TaskPoolStrategy(size=max(1, min(actors, len(todo)))))
    finally:
        ctx.target_max_block_size, ctx.execution_options = saved
    ds = ds.map_batches(decode_chunk, fn_kwargs={"size": manifest.input_size, "max_pixels": cfg.max_pixels},
                        num_cpus=cfg.decode_cpus)
    ensemble = isinstance(manifest, EnsembleManifest)
    ds = ds.map_batches(
        EnsembleScorer if ensemble else Int8Scorer,
        fn_constructor_kwargs={"artifact_uri": artifact.uri, "precision": cfg.precision,
                               "threads": max(1, round(cfg.actor_cpus)), "streams": cfg.streams,
                               "infer_batch": cfg.infer_batch, "endpoint": cfg.s3_endpoint},
        # A fixed-size pool: a batch job wants every actor from the start (autoscaling up from one actor
        # wastes the first minutes). Ray Data fuses decode_chunk into this operator when their resources
        # match, so each actor decodes and scores its chunk without another copy between processes.
        # Two chunks in flight per actor: one scoring, one waiting, so an actor never idles between chunks.
        compute=ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2),
        num_cpus=cfg.actor_cpus,
        # Ray Data gives pool actors max_restarts=-1 and max_task_retries=-1 by default: a killed actor is
        # restarted and its in-flight chunk retried. The chunk file name is fixed, so a retry overwrites
        # and never duplicates (tests/integration/test_score_resume.py kills an actor mid-run).
    )
    writer_args = {"out_uri": out_uri, "endpoint": cfg.s3_endpoint, "labels": labels,
                   "model": manifest.model, "artifact_sha256": artifact.sha256,
                   "precision": cfg.precision, "run_id": run_id,
                   "heatmap_shape": heatmap_shape(manifest) if ensemble else None}
    # Zero-CPU tasks are not limited by CPUs: cap the writers, or every finished chunk starts one more
    # worker process and memory grows with the archive.
    ds = ds.map_batches(write_chunks, fn_kwargs=writer_args, num_cpus=0, compute=TaskPoolStrategy(size=actors))
    line = ProgressLine(expected_total, cfg.progress_every_s)
    written: dict[tuple[str, int], int] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        line.update(int(batch["rows"].sum()), int(batch["errors"].sum()))
        heartbeat()  # renews this run's lease every RENEW_S
        cost.add(batch)
        written.update(zip(zip(batch["shard"].tolist(), batch["chunk"].tolist(), strict=True),
                           batch["rows"].tolist(), strict=True))
    line.finish()
    return written


# Read-ahead per actor in chunks when --buffer-mb is not given. Ray Data splits its object-store budget
# between the operators and admits a read task only while its share holds the task's next two blocks (each
# up to three chunks, see storage/archive_source.py), so a window of a few blocks starves the actors: on
# 2 cores, 16 MiB chunks under 128 MiB per actor left one actor waiting 4-5 s per block; 16 chunks per actor
# kept both busy (docs/BENCHMARKS.md, scoring notes).
READ_AHEAD_CHUNKS = 16


def read_ahead_mb(cfg: ScoreConfig) -> int:
    """Object-store MiB per actor for chunks read ahead of scoring; 0 = Ray Data's default budget."""
    return READ_AHEAD_CHUNKS * cfg.chunk_mb if cfg.buffer_mb is None else cfg.buffer_mb


def pool_size(cfg: ScoreConfig) -> int:
    """--actors, or as many actors of --actor-cpus as the cluster's CPUs hold."""
    import ray

    if cfg.actors:
        return cfg.actors
    return max(1, int(ray.cluster_resources().get("CPU", 1) // cfg.actor_cpus))


def _public_config(cfg: ScoreConfig) -> dict:
    """The config as recorded in outputs: URIs and knobs only; credentials never enter a config."""
    return asdict(cfg)


def _versions(ray_version: str) -> dict:
    import openvino
    import pyarrow

    return {"ray": ray_version, "openvino": openvino.__version__, "pyarrow": pyarrow.__version__,
            **tilescope_versions()}


def main(argv: list[str] | None = None) -> int:
    return job_main(ScoreConfig, run, "tilescope score", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
