"""Committing a scoring run: verify that every input is accounted for exactly once, compact the chunk files,
then (the caller) write `_manifest.json`.

Verification, before anything is committed:
- every planned shard has all its chunks through its `-last` one (a write that storage lost leaves a gap);
- every chunk written in this attempt is on storage with the rows the pipeline produced for it;
- no chunk is held by two files, and no `source` has two rows.
Anything else raises a StorageError that says what is missing; nothing is committed, and rerunning the same
command scores exactly what is missing (the scan skips only chunks that are on storage).

Compaction: a shard's chunk files (one per ~64 images) are rewritten as files of up to COMPACT_TARGET_BYTES
(64 MiB of Arrow data) each — one file per shard unless the shard is larger — named
`part-<shard>-<first>_<last>[-last].parquet` by the chunks they hold, so a compacted file is as deterministic
as a chunk file and resume keeps working. Each file is written atomically before its chunk files are deleted;
a crash in between leaves a chunk held twice, which `repair_overlaps` resolves on the next commit by deleting
the chunk files a compacted file already holds (it was written from them).
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import pyarrow as pa

from storage.fs import Location, StorageError, list_files, write_bytes_atomic
from storage.results import (
    ChunkFile,
    Progress,
    ResultCounts,
    chunk_file_name,
    count_results,
    parquet_bytes,
    read_result_file,
    scan_progress,
)
from storage.run_lease import Holder
from storage.run_manifest import RunManifest, write_manifest

COMPACT_TARGET_BYTES = 64 * 2**20


def repair_overlaps(out: Location, progress: Progress) -> int:
    """Delete chunk files whose chunks a compacted file of the same shard already holds; returns how many.

    Raises StorageError when two compacted files overlap (not something tilescope writes).
    """
    by_shard: dict[str, list[ChunkFile]] = defaultdict(list)
    for f in progress.chunk_files:
        by_shard[f.shard].append(f)
    doomed = []
    for shard, files in by_shard.items():
        ranges = [f for f in files if f.first != f.last_chunk]
        for a in ranges:
            for b in ranges:
                if a.path < b.path and set(a.chunks) & set(b.chunks):
                    raise StorageError(f"{out.uri}: {a.path.rsplit('/', 1)[-1]} and {b.path.rsplit('/', 1)[-1]} hold "
                                       f"the same chunks of shard {shard}; delete one and rerun")
        covered = {k for f in ranges for k in f.chunks}
        doomed += [f.path for f in files if f.first == f.last_chunk and f.first in covered]
    for path in doomed:
        out.fs.delete_file(path)
    return len(doomed)


def verify_complete(out: Location, progress: Progress, shards: Sequence[str],
                    written: Mapping[tuple[str, int], int], counts: ResultCounts) -> None:
    """Raise StorageError naming what is missing or duplicated (see the module docstring)."""
    problems = []
    for name in shards:
        if name in progress.complete:
            continue
        have = progress.chunks.get(name, frozenset())
        n = progress.n_chunks.get(name)
        if n is None:
            problems.append(f"shard {name}: its last chunk is not on storage ({len(have)} chunks are)")
        else:
            gaps = sorted(set(range(n)) - have)
            problems.append(f"shard {name}: chunks {gaps[:8]}{' ...' if len(gaps) > 8 else ''} of {n} are not on "
                            "storage")
    held: dict[tuple[str, int], list[str]] = defaultdict(list)
    for f in progress.chunk_files:
        for k in f.chunks:
            held[(f.shard, k)].append(f.path)
    twice = sorted(key for key, paths in held.items() if len(paths) > 1)
    if twice:
        problems.append(f"{len(twice)} chunks are held by two files, e.g. shard {twice[0][0]} chunk {twice[0][1]}")
    for (shard, k), rows in sorted(written.items()):
        paths = held.get((shard, k), [])
        if len(paths) == 1 and paths[0] in counts.rows_per_file:
            f = next(c for c in progress.chunk_files if c.path == paths[0])
            if f.first == f.last_chunk and counts.rows_per_file[paths[0]] != rows:
                problems.append(f"shard {shard} chunk {k}: {counts.rows_per_file[paths[0]]} rows on storage, "
                                f"{rows} produced")
    if counts.duplicate_sources:
        problems.append(f"sources with more than one row: {', '.join(counts.duplicate_sources[:5])}")
    if problems:
        raise StorageError(f"{out.uri}: the run is not complete, nothing was committed: " + "; ".join(problems[:10])
                           + ". Rerun the same command: it scores what is missing")


def compact(out: Location, progress: Progress, target_bytes: int = COMPACT_TARGET_BYTES) -> int:
    """Rewrite every complete shard's chunk files as files of up to target_bytes; returns files written."""
    written = 0
    for shard in sorted(progress.complete):
        files = sorted((f for f in progress.chunk_files if f.shard == shard), key=lambda f: f.first)
        if len(files) == 1:
            continue
        groups: list[list[tuple[ChunkFile, pa.Table]]] = [[]]
        size = 0
        for f in files:
            table = read_result_file(out, f.path, None)
            if groups[-1] and size + table.nbytes > target_bytes:
                groups.append([])
                size = 0
            groups[-1].append((f, table))
            size += table.nbytes
        keep = set()
        for group in groups:
            first, last = group[0][0], group[-1][0]
            name = chunk_file_name(shard, first.first, last.ends_shard, last.last_chunk)
            keep.add(out.join(name).path)
            if len(group) == 1:
                continue  # already a file of its own
            table = pa.concat_tables([t for _, t in group])
            write_bytes_atomic(out.join(name), parquet_bytes(table))
            written += 1
        for f in files:
            if f.path not in keep:
                out.fs.delete_file(f.path)
    return written


_TEMPORARY = re.compile(r"^\..+\.tmp-[0-9a-f]{8}$")


def remove_leftovers(out: Location) -> int:
    """Delete temporary files (`.<name>.tmp-<hex>`, storage/fs.py write_bytes_atomic) that a killed writer or a
    full disk left in the run directory; returns how many. Called only by the lease holder (storage/run_lease.py),
    so no writer of this run is still writing one."""
    doomed = [path for path in list_files(out, recursive=False) if _TEMPORARY.match(posixpath.basename(path))]
    for path in doomed:
        out.fs.delete_file(path)
    return len(doomed)


@dataclass(frozen=True)
class Verified:
    """A committed run checked again: its manifest (rewritten when a repair changed the counts) and what was said."""

    manifest: RunManifest
    message: str


def verify_and_compact(out: Location, shards: Sequence[str], written: Mapping[tuple[str, int], int],
                       holder: Holder) -> ResultCounts:
    """Before a commit: every chunk of every shard on storage with the rows written (verify_complete), compacted
    to one file per shard, leftovers removed, and the rows counted again from storage; raises StorageError when
    compaction changed the count (nothing is committed then)."""
    progress = scan_progress(out)
    before = count_results(out, progress.files)
    verify_complete(out, progress, shards, written, before)
    holder.verify("compaction")
    compact(out, progress)
    remove_leftovers(out)
    counts = count_results(out)
    if counts.duplicate_sources or counts.rows != before.rows:
        raise StorageError(f"{out.uri}: {before.rows} rows before compaction, {counts.rows} after; nothing was "
                           "committed, rerun the same command")
    return counts


def verify_committed(out: Location, committed: RunManifest, shards: Sequence[str], holder: Holder) -> Verified | None:
    """A rerun of a committed run: remove chunk files a compacted file already holds (a crash, or a run that raced
    this one before leases) and temporary leftovers, recount from storage and rewrite the manifest if anything
    changed. None when rows of a shard are missing: the caller scores them again. Duplicated sources that no
    repair explains raise StorageError naming them."""
    progress = scan_progress(out)
    if any(name not in progress.complete for name in shards):
        return None
    overlaps = repair_overlaps(out, progress)
    leftovers = remove_leftovers(out)
    counts = count_results(out)
    if counts.duplicate_sources:
        raise StorageError(f"{out.uri}: committed, but sources have more than one row "
                           f"({', '.join(counts.duplicate_sources[:5])}); delete the run directory and score again")
    same = (counts.rows, counts.ok, counts.errors, counts.files) == (committed.rows, committed.ok, committed.errors,
                                                                    committed.files)
    if not (overlaps or leftovers) and same:
        return Verified(committed, f"run {committed.run_id} is already complete at {out.uri}: {committed.rows} rows "
                                   f"({committed.errors} errors), verified on storage; nothing to do")
    repaired = replace(committed, rows=counts.rows, ok=counts.ok, errors=counts.errors, files=counts.files,
                       error_reasons=counts.top_errors)
    holder.verify("rewriting the manifest")
    write_manifest(out, repaired)
    return Verified(repaired, f"run {committed.run_id} at {out.uri} repaired: {overlaps} chunk files a compacted file "
                              f"already held and {leftovers} temporary files removed; {counts.rows} rows "
                              f"({committed.rows} before), each source once")
