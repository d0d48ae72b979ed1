"""The Ray Data pipeline of `tilescope score`: read chunks -> decode tasks -> scorer actors -> chunk writers.

One pass over the archive serves every model of the run: each chunk is read and inflated once, each image decoded
once per distinct input size, every model scores it in the same actor, and each model's rows go to its own run
directory (jobs/score_stages.py, WriteTarget). Takes a StreamPlan, never score's config (score imports this
module, not the reverse).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from actors.multi_scorer import ModelSlot
from actors.node_cpu import CpuSampler, NodeCpuSampler, other_hosts
from actors.openvino_ir import IRPrecision
from jobs.score_stages import ScoringCost, WriteTarget
from storage.archives import Shard


@dataclass(frozen=True)
class StreamPlan:
    """What one pass streams: the shards left, the chunks no model needs again, and each model and its target."""

    shards: tuple[Shard, ...]
    skip_chunks: dict[str, frozenset[int]]
    """Per shard, chunks every model already has: not even sent on from the read task."""
    models: tuple[ModelSlot, ...]
    targets: tuple[WriteTarget, ...]
    """targets[k] receives models[k]'s rows."""
    sizes: tuple[int, ...]
    """Distinct sizes the images are decoded to (one per distinct model input)."""
    chunk_size: int
    chunk_bytes: int
    actors: int
    actor_cpus: float
    decode_cpus: float
    streams: int
    infer_batch: int
    precision: IRPrecision
    max_pixels: int
    buffer_mb: int
    """Object-store MiB per actor for chunks read ahead; 0 = Ray Data's default budget."""
    progress_every_s: float
    expected_total: int | None
    endpoint: str | None


# Read-ahead per actor in chunks when --buffer-mb is not given. Ray Data splits its object-store budget
# between the operators and admits a read task only while its share holds the task's next two blocks (each
# up to three chunks, see storage/archive_source.py), so a window of a few blocks starves the actors: on
# 2 cores, 16 MiB chunks under 128 MiB per actor left one actor waiting 4-5 s per block; 16 chunks per actor
# kept both busy (docs/BENCHMARKS.md, scoring notes).
READ_AHEAD_CHUNKS = 16


def read_ahead_mb(chunk_mb: int, buffer_mb: int | None) -> int:
    """Object-store MiB per actor for chunks read ahead of scoring (score --buffer-mb, else READ_AHEAD_CHUNKS
    chunks of --chunk-mb); 0 = Ray Data's default budget."""
    return READ_AHEAD_CHUNKS * chunk_mb if buffer_mb is None else buffer_mb


def pool_size(actors: int, actor_cpus: float) -> int:
    """score --actors, or as many actors of --actor-cpus as the cluster's CPUs hold."""
    import ray

    if actors:
        return actors
    return max(1, int(ray.cluster_resources().get("CPU", 1) // actor_cpus))


@contextlib.contextmanager
def cpu_sampling(every_s: float = 0.25) -> Iterator[list[float]]:
    """CPU seconds of every Ray process of the cluster and of the driver while the block runs (actors/node_cpu.py):
    the driver's host sampled by a thread here, each other host by a zero-CPU NodeCpuSampler actor pinned to one of
    its nodes. The list it yields holds the total once the block has ended."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0)(NodeCpuSampler)
    samplers = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(every_s)
                for node in other_hosts()]
    ray.get([s.start.remote() for s in samplers])
    local = CpuSampler(every_s)
    local.start()
    driver = time.process_time()
    spent: list[float] = []
    try:
        yield spent
    finally:
        total = local.stop() + time.process_time() - driver
        total += sum(ray.get([s.stop.remote() for s in samplers]))
        for s in samplers:
            ray.kill(s)
        spent.append(total)


def stream(plan: StreamPlan, costs: list[ScoringCost],
           heartbeat: Callable[[], None] = lambda: None) -> tuple[list[dict[tuple[str, int], int]], float]:
    """Score plan.shards; returns, per target, the rows of every chunk written, by (shard, chunk), and the CPU
    seconds the pass cost the cluster's Ray processes and the driver (cpu_sampling); adds what scoring each target
    cost to costs[k]."""
    with cpu_sampling() as spent:
        written = _stream(plan, costs, heartbeat)
    return written, spent[0]


def _stream(plan: StreamPlan, costs: list[ScoringCost],
            heartbeat: Callable[[], None]) -> list[dict[tuple[str, int], int]]:
    import ray
    from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy

    from actors.ensemble_scorer import EnsembleScorer
    from actors.multi_scorer import MultiScorer
    from actors.scorer import Int8Scorer
    from jobs.score_stages import ProgressLine, decode_chunk, write_chunks
    from storage.archive_source import ArchiveChunks, read_block_target  # imports Ray Data

    ctx = DataContext.get_current()
    # Ray's per-operator progress bars are noise in `ray job logs`; ProgressLine prints one line instead.
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    actors = plan.actors
    source = ArchiveChunks(list(plan.shards), plan.chunk_size, plan.chunk_bytes, plan.skip_chunks, plan.endpoint)
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
        ctx.target_max_block_size = read_block_target(plan.chunk_bytes)
        if plan.buffer_mb:
            # Read-ahead is bounded by Ray Data's object-store budget; its default (a share of the object
            # store) lets fast reads buffer gigabytes ahead of the scorers, growing memory up to that share.
            ctx.execution_options = copy.deepcopy(ctx.execution_options)
            ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
                object_store_memory=actors * plan.buffer_mb * 2**20)
        ds = ray.data.read_datasource(source, override_num_blocks=len(plan.shards), num_cpus=0,
                                      compute=TaskPoolStrategy(size=max(1, min(actors, len(plan.shards)))))
    finally:
        ctx.target_max_block_size, ctx.execution_options = saved
    ds = ds.map_batches(decode_chunk, fn_kwargs={"size": plan.sizes[0], "max_pixels": plan.max_pixels,
                                                 "sizes": plan.sizes},
                        num_cpus=plan.decode_cpus)
    settings = {"precision": plan.precision, "threads": max(1, round(plan.actor_cpus)), "streams": plan.streams,
                "infer_batch": plan.infer_batch, "endpoint": plan.endpoint}
    if len(plan.models) == 1:
        scorer, args = (EnsembleScorer if plan.models[0].ensemble else Int8Scorer), {
            "artifact_uri": plan.models[0].artifact_uri, **settings}
    else:
        scorer, args = MultiScorer, {"slots": list(plan.models), **settings}
    ds = ds.map_batches(
        scorer,
        fn_constructor_kwargs=args,
        # A fixed-size pool: a batch job wants every actor from the start (autoscaling up from one actor
        # wastes the first minutes). Ray Data fuses decode_chunk into this operator when their resources
        # match, so each actor decodes and scores its chunk without another copy between processes.
        # Two chunks in flight per actor: one scoring, one waiting, so an actor never idles between chunks.
        compute=ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2),
        num_cpus=plan.actor_cpus,
        # Ray Data gives pool actors max_restarts=-1 and max_task_retries=-1 by default: a killed actor is
        # restarted and its in-flight chunk retried. The chunk file name is fixed, so a retry overwrites
        # and never duplicates (tests/integration/test_score_resume.py kills an actor mid-run).
    )
    # Zero-CPU tasks are not limited by CPUs: cap the writers, or every finished chunk starts one more
    # worker process and memory grows with the archive.
    ds = ds.map_batches(write_chunks, fn_kwargs={"targets": list(plan.targets), "endpoint": plan.endpoint,
                                                 "precision": str(plan.precision)},
                        num_cpus=0, compute=TaskPoolStrategy(size=actors))
    line = ProgressLine(plan.expected_total, plan.progress_every_s)
    written: list[dict[tuple[str, int], int]] = [{} for _ in plan.targets]
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        keys = list(zip(batch["shard"].tolist(), batch["chunk"].tolist(), strict=True))
        # A chunk written for several models is one chunk of images: counted once.
        chunks = {key: (rows, errors) for key, rows, errors in zip(
            keys, batch["rows"].tolist(), batch["errors"].tolist(), strict=True)}
        line.update(sum(r for r, _ in chunks.values()), sum(e for _, e in chunks.values()))
        heartbeat()  # renews every run's lease every RENEW_S
        for k, cost in enumerate(costs):
            mine = batch["target"] == k
            cost.add({name: column[mine] for name, column in batch.items()})
            written[k].update((key, rows) for key, rows, m in zip(keys, batch["rows"].tolist(), mine, strict=True)
                              if m)
    line.finish()
    return written
