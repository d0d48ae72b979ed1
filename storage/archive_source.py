"""A Ray Data datasource that streams archive shards as chunks of raw image bytes.

A gzip tar cannot be split, so each shard is one read task; but a read task only inflates and slices
(cheap), yielding chunks of at most `chunk_size` members and `chunk_bytes` image bytes. Decoding (the
expensive part) happens downstream, so 12 big shards still keep every core of a large cluster busy.

Chunks are the unit of exactly-once output: chunk k of a shard always holds the same members (archive
order), its Parquet file has a deterministic name, and chunks already written are skipped on resume
(their members are still inflated past, but not sent or decoded).

Ray Data coalesces a read task's tables into blocks of about DataContext.target_max_block_size and slices
by rows any block of 1.5x that or more, which would cut a chunk in two. Chunks are bounded in bytes and the
job sets the block target with `read_block_target`, so a block always holds one or more whole chunks.

Block contract (whole chunks only), columns:
  image_id str, source str, shard str, chunk int64, last bool (chunk is the shard's last),
  rows int64 (members in this chunk, so a writer can check it holds the whole chunk),
  data binary (null on error), error str (null unless the member is unusable),
  read_core_ms float64 (the read task's CPU time for this chunk, spread evenly over its rows: fetching and
  inflating its members, and those of chunks skipped as already written before it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from storage.archives import Member, Shard, iter_members
from storage.results import CHUNK, DATA, ERROR, IMAGE_ID, LAST, READ_CORE_MS, ROWS, SHARD, SOURCE

CHUNK_SCHEMA = pa.schema([
    (IMAGE_ID, pa.string()),
    (SOURCE, pa.string()),
    (SHARD, pa.string()),
    (CHUNK, pa.int64()),
    (LAST, pa.bool_()),
    (ROWS, pa.int64()),
    (DATA, pa.binary()),
    (ERROR, pa.string()),
    (READ_CORE_MS, pa.float64()),
])


def _chunk_table(shard: Shard, k: int, members: list[Member], last: bool, core_ms: float) -> pa.Table:
    n = len(members)
    return pa.table({
        IMAGE_ID: [m.image_id for m in members],
        SOURCE: [m.source for m in members],
        SHARD: [shard.name] * n,
        CHUNK: [k] * n,
        LAST: [last] * n,
        ROWS: [n] * n,
        DATA: [m.data for m in members],
        ERROR: [m.error for m in members],
        READ_CORE_MS: [core_ms / max(n, 1)] * n,
    }, schema=CHUNK_SCHEMA)


def read_block_target(chunk_bytes: int) -> int:
    """The DataContext.target_max_block_size under which no block of chunks of <= chunk_bytes is sliced.

    A read task's buffer is emitted once it exceeds the target T, so a block is at most T + one chunk;
    with T = 2 * chunk_bytes + slack (the slack covers the non-image columns) that stays below 1.5 T.
    """
    return 2 * chunk_bytes + 4 * 2**20


def iter_chunks(shard: Shard, chunk_size: int, chunk_bytes: int, done: frozenset[int],
                endpoint: str | None) -> Iterator[pa.Table]:
    """Yield the chunks of one shard not in done: at most chunk_size members and chunk_bytes image bytes
    each (a member larger than chunk_bytes alone becomes an error row). The last chunk is flagged; an empty
    shard yields one error row naming it, so that it is accounted for and its completion recorded."""
    pending: list[Member] = []
    pending_bytes = 0
    k = 0
    # CPU time of this generator's own work: the clock pauses while a yielded chunk is handed on.
    started = time.thread_time()
    for member in iter_members(shard, endpoint):
        size = len(member.data or b"")
        if size > chunk_bytes:
            member = Member(member.image_id, member.source, None,
                            f"member is {size} bytes, above the chunk limit of {chunk_bytes} bytes (--chunk-mb)")
            size = 0
        if len(pending) == chunk_size or (pending and pending_bytes + size > chunk_bytes):
            if k not in done:
                table = _chunk_table(shard, k, pending, False, (time.thread_time() - started) * 1000.0)
                yield table
                started = time.thread_time()
                # The yielded table is in the object store now. pyarrow's allocator (mimalloc) keeps freed
                # pages for reuse, so without this a long-lived read worker's heap grows towards its largest
                # blocks (docs/BENCHMARKS.md, scoring notes).
                pa.default_memory_pool().release_unused()
            pending, pending_bytes, k = [], 0, k + 1
        pending.append(member)
        pending_bytes += size
    if k == 0 and not pending:
        pending.append(Member(shard.name, shard.name, None, f"shard {shard.name} holds no members"))
    if k not in done:
        yield _chunk_table(shard, k, pending, True, (time.thread_time() - started) * 1000.0)


class ArchiveChunks(Datasource):
    """One read task per shard that still has chunks to score."""

    def __init__(self, shards: list[Shard], chunk_size: int, chunk_bytes: int, done: dict[str, frozenset[int]],
                 endpoint: str | None) -> None:
        super().__init__()
        self._shards = shards
        self._chunk_size = chunk_size
        self._chunk_bytes = chunk_bytes
        self._done = done
        self._endpoint = endpoint

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, **_: object) -> list[ReadTask]:
        tasks = []
        for shard in self._shards:
            done = self._done.get(shard.name, frozenset())

            def read(shard: Shard = shard, done: frozenset[int] = done) -> Iterator[pa.Table]:
                yield from iter_chunks(shard, self._chunk_size, self._chunk_bytes, done, self._endpoint)

            meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(shard.uri,))
            tasks.append(ReadTask(read, meta, schema=CHUNK_SCHEMA))
        return tasks
