"""storage.run_commit + the chunk files of storage.results: a commit verifies that every chunk is on storage
exactly once, compaction keeps every row once under deterministic names, and resume reads compacted files."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from storage.fs import StorageError, resolve
from storage.results import chunk_file_name, count_results, parquet_bytes, scan_progress
from storage.run_commit import compact, repair_overlaps, verify_complete


def _table(shard: str, k: int, n: int) -> pa.Table:
    ids = [f"{shard}-{k}-{i}.png" for i in range(n)]
    return pa.table({"image_id": ids, "source": [f"{shard}:{i}" for i in ids], "status": ["ok"] * n,
                     "error": pa.array([None] * n, pa.string())})


def _write_run(root, shards: dict[str, int], per_chunk: int = 3) -> dict[tuple[str, int], int]:
    """Chunk files for each shard (name -> number of chunks); returns the rows written per chunk."""
    written = {}
    for shard, n in shards.items():
        for k in range(n):
            (root / chunk_file_name(shard, k, k == n - 1)).write_bytes(parquet_bytes(_table(shard, k, per_chunk)))
            written[(shard, k)] = per_chunk
    return written


def test_chunk_file_names_keep_plain_shards_and_encode_paths_into_one_component():
    assert chunk_file_name("images_001.tar.gz", 3, False) == "part-images_001.tar.gz-00003.parquet"
    assert chunk_file_name("b/images_001.tar.gz", 0, True, 4) == "part-b%2Fimages_001.tar.gz-00000_00004-last.parquet"
    assert chunk_file_name("files-00000", 2, True) == "part-files-00000-00002-last.parquet"


def test_a_complete_run_verifies_and_compacts_into_one_file_per_shard(tmp_path):
    written = _write_run(tmp_path, {"images_001.tar.gz": 4, "sub/images_001.tar.gz": 2})
    out = resolve(str(tmp_path))
    progress = scan_progress(out)
    assert progress.complete == {"images_001.tar.gz", "sub/images_001.tar.gz"}
    before = count_results(out)
    verify_complete(out, progress, ["images_001.tar.gz", "sub/images_001.tar.gz"], written, before)
    assert compact(out, progress) == 2
    assert sorted(os.listdir(tmp_path)) == ["part-images_001.tar.gz-00000_00003-last.parquet",
                                            "part-sub%2Fimages_001.tar.gz-00000_00001-last.parquet"]
    after = count_results(out)
    assert (after.rows, after.files, after.duplicate_sources) == (18, 2, ())
    again = scan_progress(out)  # resume sees the compacted files as the same chunks, complete
    assert again.complete == progress.complete and again.chunks == progress.chunks
    assert compact(out, again) == 0  # idempotent


def test_compaction_splits_a_shard_above_the_target_size(tmp_path):
    _write_run(tmp_path, {"s.tar": 4})
    out = resolve(str(tmp_path))
    one_chunk = _table("s.tar", 0, 3).nbytes
    assert compact(out, scan_progress(out), target_bytes=2 * one_chunk) == 2
    assert sorted(os.listdir(tmp_path)) == ["part-s.tar-00000_00001.parquet", "part-s.tar-00002_00003-last.parquet"]
    assert count_results(out).rows == 12


@pytest.mark.parametrize(("remove", "message"), [
    ("part-s.tar-00001.parquet", r"shard s.tar: chunks \[1\] of 3 are not on storage"),
    ("part-s.tar-00002-last.parquet", r"shard s.tar: its last chunk is not on storage \(2 chunks are\)"),
])
def test_a_lost_write_blocks_the_commit_and_names_the_gap(tmp_path, remove, message):
    written = _write_run(tmp_path, {"s.tar": 3})
    os.remove(tmp_path / remove)
    out = resolve(str(tmp_path))
    with pytest.raises(StorageError, match=r"nothing was committed: " + message + r".*Rerun the same command"):
        verify_complete(out, scan_progress(out), ["s.tar"], written, count_results(out))


def test_rows_short_of_what_was_produced_and_duplicate_sources_block_the_commit(tmp_path):
    written = _write_run(tmp_path, {"s.tar": 2})
    out = resolve(str(tmp_path))
    with pytest.raises(StorageError, match=r"shard s.tar chunk 1: 3 rows on storage, 5 produced"):
        verify_complete(out, scan_progress(out), ["s.tar"], {**written, ("s.tar", 1): 5}, count_results(out))
    (tmp_path / chunk_file_name("t.tar", 0, True)).write_bytes(parquet_bytes(_table("s.tar", 0, 3)))
    with pytest.raises(StorageError, match=r"sources with more than one row: s.tar:s.tar-0-0.png"):
        verify_complete(out, scan_progress(out), ["s.tar", "t.tar"], written, count_results(out))


def test_a_crash_between_compaction_and_cleanup_is_repaired_without_duplicates(tmp_path):
    _write_run(tmp_path, {"s.tar": 3})
    out = resolve(str(tmp_path))
    # the compacted file landed, the chunk files it was made from are still there
    merged = pa.concat_tables([_table("s.tar", k, 3) for k in range(3)])
    (tmp_path / chunk_file_name("s.tar", 0, True, 2)).write_bytes(parquet_bytes(merged))
    assert count_results(out).duplicate_sources  # as found after the crash
    assert repair_overlaps(out, scan_progress(out)) == 3
    counts = count_results(out)
    assert (counts.rows, counts.files, counts.duplicate_sources) == (9, 1, ())


def test_an_unreadable_results_file_is_named_with_the_way_out(tmp_path):
    _write_run(tmp_path, {"s.tar": 2})
    (tmp_path / "part-s.tar-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(StorageError, match=r"part-s.tar-00000.parquet: unreadable results file .* delete it and rerun"):
        count_results(resolve(str(tmp_path)))
