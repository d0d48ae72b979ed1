"""storage.archive_source: chunks bounded in members and bytes, and never cut by Ray Data's block shaping."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pytest

from storage.archive_source import iter_chunks, read_block_target
from storage.archives import list_shards

PNG = b"\x89PNG\r\n\x1a\n"


def _shard(tmp_path: Path, sizes: list[int]) -> Path:
    with tarfile.open(tmp_path / "images_001.tar.gz", "w:gz") as tar:
        for k, size in enumerate(sizes):
            data = PNG + bytes(size - len(PNG))
            info = tarfile.TarInfo(f"images/{k:08d}_000.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return tmp_path


def _chunks(tmp_path: Path, chunk_size: int, chunk_bytes: int, done=frozenset()) -> list[pa.Table]:
    (shard,) = list_shards(str(tmp_path))
    return list(iter_chunks(shard, chunk_size, chunk_bytes, done, None))


def test_chunks_close_at_the_member_count_or_the_byte_limit(tmp_path: Path) -> None:
    _shard(tmp_path, [100] * 5 + [400] * 3 + [100] * 2)
    chunks = _chunks(tmp_path, chunk_size=4, chunk_bytes=900)
    assert [t.num_rows for t in chunks] == [4, 3, 3]  # 4 by count; 100+400+400 = 900 bytes; the rest
    for k, t in enumerate(chunks):
        assert t.column("chunk").to_pylist() == [k] * t.num_rows
        assert t.column("rows").to_pylist() == [t.num_rows] * t.num_rows
        assert sum(len(d) for d in t.column("data").to_pylist() if d) <= 900
    assert [t.column("last")[0].as_py() for t in chunks] == [False, False, True]
    ids = [i for t in chunks for i in t.column("image_id").to_pylist()]
    assert ids == [f"{k:08d}_000.png" for k in range(10)]  # archive order, nothing lost
    for t in chunks:  # the read task's CPU time, spread evenly over the chunk's rows
        read = t.column("read_core_ms").to_pylist()
        assert len(set(read)) == 1 and read[0] >= 0.0


def test_a_member_above_the_byte_limit_is_one_error_row(tmp_path: Path) -> None:
    _shard(tmp_path, [100, 5000, 100])
    rows = [r for t in _chunks(tmp_path, chunk_size=64, chunk_bytes=1000) for r in t.to_pylist()]
    assert [r["image_id"] for r in rows] == ["00000000_000.png", "00000001_000.png", "00000002_000.png"]
    big = rows[1]
    assert big["data"] is None and "5000 bytes, above the chunk limit of 1000 bytes" in big["error"]
    assert rows[0]["error"] is None and rows[2]["error"] is None


def test_finished_chunks_are_skipped_but_keep_their_numbering(tmp_path: Path) -> None:
    _shard(tmp_path, [100] * 7)
    chunks = _chunks(tmp_path, chunk_size=3, chunk_bytes=10_000, done=frozenset({0, 2}))
    assert [t.column("chunk")[0].as_py() for t in chunks] == [1]
    assert chunks[0].column("image_id").to_pylist() == [f"{k:08d}_000.png" for k in (3, 4, 5)]


@pytest.mark.parametrize("sizes", [[600_000] * 400, [30 * 2**20] * 9, [2**20] * 50 + [31 * 2**20] * 5])
def test_ray_data_block_shaping_never_cuts_a_chunk(sizes: list[int]) -> None:
    # Ray Data's own output buffer, as a read task uses it, fed chunk tables of <= chunk_bytes.
    from ray.data._internal.output_buffer import BlockOutputBuffer, OutputBlockSizeOption

    chunk_bytes = 32 * 2**20
    tables, pending, k = [], [], 0
    for size in sizes:
        if len(pending) == 64 or (pending and sum(pending) + size > chunk_bytes):
            tables.append(pa.table({"chunk": [k] * len(pending), "data": [b"x" * s for s in pending]}))
            pending, k = [], k + 1
        pending.append(size)
    tables.append(pa.table({"chunk": [k] * len(pending), "data": [b"x" * s for s in pending]}))
    buffer = BlockOutputBuffer(OutputBlockSizeOption.of(target_max_block_size=read_block_target(chunk_bytes)))
    blocks = []
    for t in tables:
        buffer.add_block(t)
        while buffer.has_next():
            blocks.append(buffer.next())
    buffer.finalize()
    while buffer.has_next():
        blocks.append(buffer.next())
    seen: dict[int, int] = {}
    for block in blocks:
        for chunk in set(block.column("chunk").to_pylist()):
            assert chunk not in seen, f"chunk {chunk} cut across blocks"
            seen[chunk] = block.column("chunk").to_pylist().count(chunk)
    assert seen == {c: t.num_rows for c, t in enumerate(tables)}
