"""Bulk scoring: Ray Data streams an archive through OpenVINO INT8 actors into Parquet, exactly once.

Recipe: plan (list shards, read what is already written) -> stream (read chunks -> decode tasks ->
scorer actors -> chunk writer, jobs/score_stream.py) -> collect (count rows from storage) -> commit (run
manifest, last). Rerunning the same command resumes: finished chunks are skipped, a committed run is verified
(and repaired) on storage. One run writes a run directory at a time (storage/run_lease.py): a second one stops
before writing, naming it.

Several models in one pass (--model A --model B ...): the archive is read, inflated and decoded once (once per
distinct input size), every model scores each chunk in the same actor, and each model gets its own run directory
under --out, with the rows, resume and commit rules of a single-model run.

    tilescope score --archive runs/demo/archive --model runs/demo/model --out runs/demo/scores
    tilescope score --archive runs/demo/archive --model runs/demo/model --model runs/demo/ensemble \
        --out runs/demo/scores
    ray job submit --working-dir . -- python -m jobs.score --archive s3://b/nih --model s3://b/model \
        --out s3://b/scores
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from actors.openvino_ir import IRPrecision
from cli.flags import coerce_choices, require_valid
from cli.job_main import connect_ray, job_main
from cli.progress import stage
from cli.provenance import tilescope_versions
from storage.archives import Shard, list_shards
from storage.artifacts import Artifact, open_typed
from storage.fs import Location, check_reachable, exists, resolve
from storage.metadata_files import default_metadata_uri, load_metadata
from storage.results import (
    RUN_CLAIM,
    RUN_MANIFEST,
    Progress,
    model_dir_name,
    read_json,
    scan_progress,
    write_json,
)
from storage.run_claim import Chunking, RunClaim, new_claim, reconcile
from storage.run_commit import repair_overlaps, verify_and_compact, verify_committed
from storage.run_lease import Holder, holding
from storage.run_manifest import RunManifest, ran_record, read_manifest, write_manifest
from xray.codec.decode import DEFAULT_MAX_PIXELS
from xray.metadata.manifests import ArtifactKind, EnsembleManifest, ScorableManifest

if TYPE_CHECKING:  # loaded inside run(), after parsing: --help stays fast
    from jobs.score_stages import ScoringCost


@dataclass(frozen=True)
class ScoreConfig:
    archive: str
    """Archive URI: directory or s3:// prefix of tar/tar.gz shards or PNGs, or one shard."""
    model: tuple[str, ...]
    """Model artifact URI written by `tilescope quantize` or `tilescope train-tiles` (local or s3://); repeat it
    (--model A --model B) to score several models in one pass over the archive, each into its own run directory."""
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

    def __post_init__(self) -> None:
        if isinstance(self.model, str):  # one model named as a string (Python callers, config files)
            object.__setattr__(self, "model", (self.model,))


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
    models: tuple[ScoreSummary, ...] = ()
    """Every model's summary, in --model order (this one is the first's); one entry for a single model."""


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
    for flag, value in (("--archive", cfg.archive), *(("--model", m) for m in cfg.model or ("",)), ("--out", cfg.out)):
        if not value.strip():
            problems.append(f"{flag} is empty; name a local path or s3:// URI")
    repeated = sorted({m for m in cfg.model if cfg.model.count(m) > 1})
    if repeated:
        problems.append(f"--model {', '.join(repeated)} named more than once; name each model once")
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


@dataclass
class Target:
    """One model of the run: its artifact, its run directory (held), its claim, and what is left to score."""

    artifact: Artifact
    manifest: ScorableManifest
    out: Location
    holder: Holder
    run_id: str
    progress: Progress | None = None
    todo: tuple[str, ...] = ()


def open_models(cfg: ScoreConfig) -> list[tuple[Artifact, ScorableManifest]]:
    """Every --model, opened and verified, each checked to hold the IR --precision needs."""
    opened = []
    for uri in cfg.model:
        artifact, manifest = open_typed(uri, cfg.s3_endpoint, "--model", ArtifactKind.MODEL, ArtifactKind.ENSEMBLE,
                                        verify=True)
        if cfg.precision.ir not in manifest.precisions:
            raise ValueError(f"--model {uri}: artifact has no {cfg.precision.ir} IR for --precision {cfg.precision} "
                             f"(it has {', '.join(manifest.precisions)}); `tilescope quantize` adds the int8 one")
        opened.append((artifact, manifest))
    dirs = [model_dir_name(m.model, a.sha256) for a, m in opened]
    if len(set(dirs)) < len(dirs):
        raise ValueError(f"--model: two of {', '.join(cfg.model)} are the same artifact ({dirs}); name each once")
    return opened


def run(cfg: ScoreConfig) -> ScoreSummary:
    """Score the archive with every --model in one pass (see the module docstring); returns the first model's
    summary, with every model's in `models`."""
    validate(cfg)
    t0 = time.perf_counter()
    # Plan: everything that can fail on bad input fails here, before any remote work.
    out_root = resolve(cfg.out, cfg.s3_endpoint)
    check_reachable(out_root)
    shards = list_shards(cfg.archive, cfg.s3_endpoint)
    cfg = with_default_metadata(cfg)
    opened = open_models(cfg)
    expected = None
    if cfg.metadata:
        expected = {e.image_index for e in load_metadata(cfg.metadata, cfg.s3_endpoint).entries}
    chunking = Chunking(cfg.chunk_size, cfg.chunk_mb)
    summaries: dict[int, ScoreSummary] = {}
    targets: dict[int, Target] = {}
    # One writer at a time per run directory (storage/run_lease.py): a second run into one of them stops here,
    # naming the holder.
    with contextlib.ExitStack() as held:
        for k, (artifact, manifest) in enumerate(opened):
            out = out_root.join(model_dir_name(manifest.model, artifact.sha256))
            holder = held.enter_context(holding(out, cfg.run_id or default_run_id(cfg.archive, artifact.sha256)))
            prepared = _prepare(cfg, Target(artifact, manifest, out, holder, ""), chunking, shards, t0)
            if isinstance(prepared, ScoreSummary):
                summaries[k] = prepared
            else:
                targets[k] = prepared
        from jobs.score_stages import ScoringCost  # decode and numba load with it: after parsing

        costs = {k: ScoringCost() for k in targets}
        written: dict[int, dict[tuple[str, int], int]] = {k: {} for k in targets}
        stream_seconds, actors, cores = 0.0, 0, None
        streamed = {k: t for k, t in targets.items() if t.todo}  # a target with every chunk only needs its commit
        if streamed:
            passed, stream_seconds, actors, cores = _stream(cfg, shards, streamed, costs, expected)
            written.update(passed)
        for k, target in targets.items():
            summaries[k] = _commit(cfg, target, shards, written[k], costs[k], stream_seconds, actors, cores,
                                   expected, t0)
    ordered = tuple(summaries[k] for k in range(len(opened)))
    return replace(ordered[0], models=ordered)


def _prepare(cfg: ScoreConfig, target: Target, chunking: Chunking, shards: list[Shard], t0: float
             ) -> Target | ScoreSummary:
    """Claim the target's run directory and find what is left to score in it; a committed run with nothing new is
    verified (and repaired) on storage and returns its summary instead."""
    out = target.out
    claim, new_shards = _claim(cfg, out, target.artifact, chunking, shards)
    target.run_id = claim.run_id
    committed = read_manifest(out)
    if committed is not None and not new_shards:
        # A committed run is verified, never trusted: leftovers of a crashed or racing writer are removed and the
        # manifest rewritten; rows lost since the commit are scored again below.
        verified = verify_committed(out, committed, [s.name for s in shards], target.holder)
        if verified is not None:
            print(verified.message, flush=True)
            return ScoreSummary(claim.run_id, out.uri, verified.manifest.rows, verified.manifest.ok,
                                verified.manifest.errors, 0, time.perf_counter() - t0, 0.0, True)
    if committed is not None:
        # New shards arrived after the commit, or rows were lost since: in progress again until committed.
        out.fs.delete_file(out.join(RUN_MANIFEST).path)
        lost = sorted(set(committed.shards) - set(scan_progress(out).complete))
        print(f"run {claim.run_id}: " + (f"{len(new_shards)} new shards since the commit: {', '.join(new_shards[:5])}"
              if new_shards else f"rows of {len(lost)} shards lost since the commit: {', '.join(lost[:5])}"),
              flush=True)
    write_json(out, RUN_CLAIM, claim.to_json())
    repair_overlaps(out, scan_progress(out))
    target.progress = scan_progress(out)
    target.todo = tuple(s.name for s in shards if s.name not in target.progress.complete)
    m = target.manifest
    print(f"run {claim.run_id}: {len(shards)} shards ({len(shards) - len(target.todo)} already complete), "
          f"model {m.model} {cfg.precision} sha256 {target.artifact.sha256[:12]}, out {out.uri}", flush=True)
    return target


def _stream(cfg: ScoreConfig, shards: list[Shard], targets: dict[int, Target], costs: dict[int, ScoringCost],
            expected: set[str] | None) -> tuple[dict[int, dict[tuple[str, int], int]], float, int, float | None]:
    """One pass over the shards some target still needs, for every target; returns (written per target, stream
    seconds, actors, the cluster's cores), and sets each cost's all_core_ms to the pass's CPU time."""
    import ray

    from actors.ensemble_scorer import heatmap_shape
    from actors.multi_scorer import ModelSlot, slot_prefix
    from jobs.score_stages import WriteTarget, pixels_column
    from jobs.score_stream import StreamPlan, pool_size, read_ahead_mb, stream

    with stage("score", "starting Ray" if not os.environ.get("RAY_ADDRESS") else "joining the cluster"):
        connect_ray()
    actors = pool_size(cfg.actors, cfg.actor_cpus)
    keys = list(targets)
    needed = {name for t in targets.values() for name in t.todo}
    todo = tuple(s for s in shards if s.name in needed)
    # A chunk is not even read on when every target has it; a target's own chunks are left alone by the writer.
    skip = {s.name: frozenset.intersection(*(targets[k].progress.chunks.get(s.name, frozenset()) for k in keys))
            for s in todo}
    sizes = tuple(dict.fromkeys(scoring_shape(targets[k].manifest)[1] for k in keys))
    several = len(keys) > 1
    models = tuple(ModelSlot(targets[k].artifact.uri, isinstance(targets[k].manifest, EnsembleManifest),
                             pixels_column(scoring_shape(targets[k].manifest)[1], sizes)) for k in keys)
    write_targets = tuple(WriteTarget(
        targets[k].out.uri, tuple(targets[k].manifest.labels), targets[k].manifest.model,
        targets[k].artifact.sha256, targets[k].run_id,
        heatmap_shape(targets[k].manifest) if isinstance(targets[k].manifest, EnsembleManifest) else None,
        slot_prefix(i) if several else "",
        frozenset((shard, c) for shard, chunks in targets[k].progress.chunks.items() for c in chunks))
        for i, k in enumerate(keys))
    plan = StreamPlan(todo, skip, models, write_targets, sizes, cfg.chunk_size, cfg.chunk_mb * 2**20, actors,
                      cfg.actor_cpus, cfg.decode_cpus, cfg.streams, cfg.infer_batch, cfg.precision, cfg.max_pixels,
                      read_ahead_mb(cfg.chunk_mb, cfg.buffer_mb), cfg.progress_every_s,
                      len(expected) if expected else None, cfg.s3_endpoint)
    what = f"{len(keys)} models ({', '.join(targets[k].manifest.model for k in keys)})" if several else "the model"
    print(f"[score] {actors} scorer actors start and compile {what}; rows follow the first chunk", flush=True)
    holders = [targets[k].holder for k in keys]
    t_stream = time.perf_counter()
    written, cpu_seconds = stream(plan, [costs[k] for k in keys], heartbeat=lambda: [h.heartbeat() for h in holders])
    stream_seconds = time.perf_counter() - t_stream
    all_ms = 1000.0 * cpu_seconds
    for k in keys:
        costs[k].all_core_ms = all_ms
        others = [costs[j] for j in keys if j != k]
        costs[k].other_infer_core_ms = sum(c.infer_core_ms for c in others)
        costs[k].other_write_core_ms = sum(c.write_core_ms for c in others)
        costs[k].models_in_pass = len(keys)
    cores = float(ray.cluster_resources().get("CPU", 0.0)) or None
    return dict(zip(keys, written, strict=True)), stream_seconds, actors, cores


def _commit(cfg: ScoreConfig, target: Target, shards: list[Shard], written: dict[tuple[str, int], int],
            cost: ScoringCost, stream_seconds: float, actors: int, cores: float | None, expected: set[str] | None,
            t0: float) -> ScoreSummary:
    """Verify, compact, count from storage, commit (the manifest last); returns the target's summary."""
    import ray

    from jobs.score_stages import cost_line

    out, holder, manifest, artifact = target.out, target.holder, target.manifest, target.artifact
    scored_now = sum(written.values())
    counts = verify_and_compact(out, [s.name for s in shards], written, holder)
    seconds = time.perf_counter() - t0
    rate = scored_now / stream_seconds if stream_seconds > 0 else 0.0
    committed = RunManifest(
        run_id=target.run_id, rows=counts.rows, ok=counts.ok, errors=counts.errors, files=counts.files,
        error_reasons=counts.top_errors,
        missing_from_archive=(len(expected - counts.image_ids) if expected is not None else None),
        scored_this_attempt=scored_now, seconds_this_attempt=seconds,
        pipeline_seconds_this_attempt=stream_seconds, images_per_s=rate,
        cost=cost.record(*scoring_shape(manifest), images_per_s=rate, scorer_cpus=actors * cfg.actor_cpus,
                         cores=cores),
        model=manifest.model, artifact_uri=artifact.uri, artifact_sha256=artifact.sha256,
        **ran_record(out, str(cfg.precision)), labels=tuple(manifest.labels), shards=tuple(s.name for s in shards),
        config=_public_config(cfg, artifact.uri), versions=_versions(ray.__version__))
    holder.verify("writing the manifest")
    write_manifest(out, committed)
    missing = ("" if committed.missing_from_archive is None
               else f"; {committed.missing_from_archive} listed in the metadata but missing from the archive")
    print(f"run {target.run_id} complete: {counts.rows} rows, {counts.ok} ok, {counts.errors} errors in "
          f"{counts.files} files{missing}; {scored_now} scored now in {seconds:.1f}s (pipeline {rate:.1f} images/s"
          f"{cost_line(committed.cost)}) -> {out.uri}", flush=True)
    return ScoreSummary(target.run_id, out.uri, counts.rows, counts.ok, counts.errors, scored_now, seconds, rate,
                        False, stream_seconds)


def _claim(cfg: ScoreConfig, out: Location, artifact: Artifact, chunking: Chunking,
           shards: list[Shard]) -> tuple[RunClaim, tuple[str, ...]]:
    """This run's claim on `out`: a new one, or the recorded one checked against the archive (run_claim.py)."""
    recorded = read_json(out, RUN_CLAIM)
    artifact_sha = artifact.sha256
    if recorded is None:
        run_id = cfg.run_id or default_run_id(cfg.archive, artifact_sha)
        return new_claim(run_id, cfg.archive, artifact_sha, chunking, shards, _public_config(cfg, artifact.uri)), ()
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


def _public_config(cfg: ScoreConfig, model: str) -> dict:
    """The config as one model's run directory records it: URIs and knobs only, credentials never; `model` is that
    directory's own model, as a single-model run records it."""
    return {**asdict(cfg), "model": model}


def _versions(ray_version: str) -> dict:
    import openvino
    import pyarrow

    return {"ray": ray_version, "openvino": openvino.__version__, "pyarrow": pyarrow.__version__,
            **tilescope_versions()}


def main(argv: list[str] | None = None) -> int:
    return job_main(ScoreConfig, run, "tilescope score", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
