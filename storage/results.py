"""The result row of `tilescope score`, both ways: its columns and schema, the chunk files it is written to,
the run manifest, and the counts read back from storage (the report's reading of a run: storage/scored_runs.py).

Layout under --out, one directory per model artifact so a second model writes beside the first:

    <out>/<model>-<sha12>/part-<shard>-<chunk:05d>[-last].parquet
    <out>/<model>-<sha12>/_run.json        the run's claim (run id, config), written first
    <out>/<model>-<sha12>/_manifest.json   counts, config, versions, throughput: the commit marker

A chunk file name derives from its inputs only, so a retried task overwrites rather than duplicates;
`-last` marks a shard's final chunk, so listing the directory tells which shards are complete. Names
starting with '_' or '.' are skipped by pyarrow/polars dataset readers.

A run is read back for a report by storage/scored_runs.py.
"""

from __future__ import annotations

import enum
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.fs import (
    Location,
    StorageError,
    list_files,
    read_json,  # noqa: F401  (the run's JSON files are read through here by jobs)
    write_bytes_atomic,
    write_json,  # noqa: F401
)
from xray.metadata.labels import prob_column

# 2: `precision` is what ran (read back from the compiled model), and `cpu_isa` names the CPU class it ran on.
RESULTS_SCHEMA_VERSION = 2


class RowStatus(enum.StrEnum):
    """A result row's `status`: scored, or an error row whose `error` column says why (one bad image, one row)."""

    OK = "ok"
    ERROR = "error"


def row_status(ok: np.ndarray) -> np.ndarray:
    """(N,) bool -> (N,) object array of RowStatus values, the `status` column as written."""
    return np.where(np.asarray(ok, dtype=bool), RowStatus.OK.value, RowStatus.ERROR.value).astype(object)
RUN_CLAIM = "_run.json"
RUN_MANIFEST = "_manifest.json"
# part-<shard>-<k>[-last].parquet holds chunk k; part-<shard>-<k>_<k2>[-last].parquet chunks k..k2 (compacted at
# commit). <shard> is the shard's path relative to the archive root, percent-encoded into one path component.
_CHUNK_RE = re.compile(r"^part-(?P<shard>.+)-(?P<k>\d{5})(?:_(?P<k2>\d{5}))?(?P<last>-last)?\.parquet$")


HEATMAP_SHAPE_KEY = b"tilescope.heatmap_shape"

# The result row's columns (see results_schema; the per-label `prob_<Label>` columns: labels.prob_column).
IMAGE_ID = "image_id"
SOURCE = "source"
STATUS = "status"
ERROR = "error"
MODEL = "model"
ARTIFACT_SHA256 = "artifact_sha256"
PRECISION = "precision"
CPU_ISA = "cpu_isa"
RUN_ID = "run_id"
DECODE_MS = "decode_ms"
INFER_MS = "infer_ms"
HEATMAP = "heatmap"
TILE_MAX = "tile_max"
# Batch-only columns, never written: the CPU time (core-ms) a chunk's decode and scoring took, spread evenly over
# its rows (decode over every row, scoring over its ok rows); the writer sums them per chunk for the run
# manifest's `cost` (jobs/score_stages.py, ScoringCost).
DECODE_CORE_MS = "decode_core_ms"
INFER_CORE_MS = "infer_core_ms"
# The same for reading (inflating and slicing the shard, storage/archive_source.py) and, in the writer's summary
# rows only, for writing the chunk's Parquet file.
READ_CORE_MS = "read_core_ms"
WRITE_CORE_MS = "write_core_ms"
# The columns a chunk carries from the archive to its file (storage/archive_source.py): which file a row goes
# to, whether that file is its shard's last, how many rows the whole chunk has, and the member's bytes.
SHARD = "shard"
CHUNK = "chunk"
LAST = "last"
ROWS = "rows"
DATA = "data"

PROB_PREFIX = prob_column("")


def results_schema(labels: list[str], heatmap_shape: tuple[int, int, int] | None = None) -> pa.Schema:
    """The versioned output schema: one row per input image.

    A tile-ensemble run adds `heatmap` (fixed-size list of L * C * C float32, (label, row, col) order; its
    shape [L, C, C] is JSON in the schema metadata under tilescope.heatmap_shape) and `tile_max` (float32).
    """
    fields = [
        pa.field(IMAGE_ID, pa.string(), nullable=False),
        pa.field(SOURCE, pa.string(), nullable=False),
        pa.field(STATUS, pa.string(), nullable=False),
        pa.field(ERROR, pa.string()),
        *[pa.field(prob_column(label), pa.float32()) for label in labels],
        pa.field(MODEL, pa.string(), nullable=False),
        pa.field(ARTIFACT_SHA256, pa.string(), nullable=False),
        pa.field(PRECISION, pa.string(), nullable=False),
        pa.field(CPU_ISA, pa.string(), nullable=False),
        pa.field(RUN_ID, pa.string(), nullable=False),
        pa.field(DECODE_MS, pa.float32()),
        pa.field(INFER_MS, pa.float32()),
    ]
    meta = {b"tilescope.results_schema_version": str(RESULTS_SCHEMA_VERSION).encode()}
    if heatmap_shape is not None:
        size = int(heatmap_shape[0] * heatmap_shape[1] * heatmap_shape[2])
        fields += [pa.field(HEATMAP, pa.list_(pa.float32(), size)), pa.field(TILE_MAX, pa.float32())]
        meta[HEATMAP_SHAPE_KEY] = json.dumps(list(heatmap_shape)).encode()
    return pa.schema(fields, metadata=meta)


def results_table(batch: dict[str, np.ndarray], rows: np.ndarray, schema: pa.Schema, model: str,
                  artifact_sha256: str, precision: str, run_id: str) -> pa.Table:
    """The rows `rows` (indices) of a scored batch as a Table of `schema` (from results_schema), stamped with
    the run; NaN probabilities (error rows) become nulls, and so does an all-NaN heatmap. `precision` and
    `cpu_isa` come from the batch (the scorer writes what ran); `precision` is only the fallback."""
    n = len(rows)
    columns = {
        IMAGE_ID: batch[IMAGE_ID][rows], SOURCE: batch[SOURCE][rows],
        STATUS: batch[STATUS][rows], ERROR: batch[ERROR][rows],
        **{f.name: batch[f.name][rows] for f in schema if f.name.startswith(PROB_PREFIX)},
        MODEL: [model] * n, ARTIFACT_SHA256: [artifact_sha256] * n,
        PRECISION: batch[PRECISION][rows] if PRECISION in batch else [precision] * n,
        CPU_ISA: batch[CPU_ISA][rows] if CPU_ISA in batch else ["unknown"] * n, RUN_ID: [run_id] * n,
        DECODE_MS: batch[DECODE_MS][rows], INFER_MS: batch[INFER_MS][rows],
    }
    if HEATMAP in schema.names:
        heat = np.asarray(batch[HEATMAP][rows], dtype=np.float32)
        columns[HEATMAP] = [None if np.isnan(row).all() else row.tolist() for row in heat]
        columns[TILE_MAX] = batch[TILE_MAX][rows]
    arrays = [pa.array(_nullable(columns[f.name]), type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _nullable(values) -> list:
    """numpy -> list with NaN probabilities (error rows) as nulls."""
    if isinstance(values, list):
        return values
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        return [None if np.isnan(v) else float(v) for v in arr]
    return arr.tolist()


def error_reason(error: str) -> str:
    """An error row's reason: the text before its first ':', at most 80 characters (manifest and report)."""
    return error.split(":")[0][:80]


def safe_component(name: str) -> str:
    """A name from an artifact or an input as one harmless path component: letters, digits and `._-` kept,
    anything else (`/`, `..` as a whole, control characters) replaced, no leading dot (hidden, or `..`)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return cleaned or "_"


def model_dir_name(model: str, artifact_sha: str) -> str:
    return f"{safe_component(model)}-{artifact_sha[:12]}"


def chunk_file_name(shard: str, k: int, last: bool, k2: int | None = None) -> str:
    """The file of chunk k (or of chunks k..k2) of a shard; the shard's relative path is percent-encoded, so
    names stay one component and plain shard names (images_001.tar.gz) are kept as they are."""
    span = f"{k:05d}" if k2 is None or k2 == k else f"{k:05d}_{k2:05d}"
    return f"part-{quote(shard, safe='')}-{span}{'-last' if last else ''}.parquet"


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_chunk(out: Location, shard: str, k: int, last: bool, table: pa.Table) -> str:
    """Write one chunk's rows atomically; returns the file name."""
    name = chunk_file_name(shard, k, last)
    write_bytes_atomic(out.join(name), parquet_bytes(table))
    return name


@dataclass(frozen=True)
class ChunkFile:
    """One results file: chunks first..last_chunk of a shard; `ends_shard` when it holds the shard's last."""

    path: str
    shard: str
    first: int
    last_chunk: int
    ends_shard: bool

    @property
    def chunks(self) -> range:
        return range(self.first, self.last_chunk + 1)


@dataclass(frozen=True)
class Progress:
    """What is already on storage: chunk indices per shard and the shards known complete."""

    chunks: dict[str, frozenset[int]]
    complete: frozenset[str]
    files: tuple[str, ...]
    chunk_files: tuple[ChunkFile, ...] = ()
    n_chunks: dict[str, int] = field(default_factory=dict)
    """shard -> its number of chunks, for the shards whose last chunk is on storage."""


def parse_chunk_file(path: str) -> ChunkFile | None:
    m = _CHUNK_RE.match(path.rsplit("/", 1)[-1])
    if not m:
        return None
    k = int(m["k"])
    return ChunkFile(path, unquote(m["shard"]), k, int(m["k2"]) if m["k2"] else k, bool(m["last"]))


def scan_progress(out: Location) -> Progress:
    chunks: dict[str, set[int]] = defaultdict(set)
    n_chunks: dict[str, int] = {}
    found = []
    for path in list_files(out, recursive=False):
        f = parse_chunk_file(path)
        if f is None:
            continue
        found.append(f)
        chunks[f.shard].update(f.chunks)
        if f.ends_shard:
            n_chunks[f.shard] = f.last_chunk + 1
    complete = {s for s, n in n_chunks.items() if chunks[s] >= set(range(n))}
    return Progress({s: frozenset(v) for s, v in chunks.items()}, frozenset(complete),
                    tuple(sorted(f.path for f in found)), tuple(sorted(found, key=lambda f: f.path)), n_chunks)


@dataclass(frozen=True)
class ResultCounts:
    rows: int
    ok: int
    errors: int
    files: int
    image_ids: frozenset[str]
    top_errors: dict[str, int]
    duplicate_sources: tuple[str, ...] = ()
    """Sources with more than one row (first few): exactly-once is broken when this is not empty."""
    rows_per_file: dict[str, int] = field(default_factory=dict)


def read_result_file(out: Location, path: str, columns: list[str] | None) -> pa.Table:
    """One results file, or a StorageError naming it and the way out (a corrupt file blocks the commit)."""
    try:
        with out.fs.open_input_file(path) as f:
            return pq.read_table(f, columns=columns)
    except (OSError, pa.ArrowInvalid) as exc:
        name = path.rsplit("/", 1)[-1]
        raise StorageError(f"{out.uri}/{name}: unreadable results file ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); delete it and rerun the same "
                           "command to score its chunk again") from exc


def count_results(out: Location, files: Iterable[str] | None = None) -> ResultCounts:
    """Read back only image_id/source/status/error of every results file: the counts come from storage."""
    files = list(scan_progress(out).files if files is None else files)
    rows = ok = errors = 0
    ids: set[str] = set()
    sources: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    per_file: dict[str, int] = {}
    for path in files:
        table = read_result_file(out, path, [IMAGE_ID, SOURCE, STATUS, ERROR])
        status = table.column(STATUS).to_pylist()
        per_file[path] = len(status)
        rows += len(status)
        ok += status.count(RowStatus.OK)
        errors += status.count(RowStatus.ERROR)
        ids.update(table.column(IMAGE_ID).to_pylist())
        sources.update(table.column(SOURCE).to_pylist())
        for reason in table.column(ERROR).to_pylist():
            if reason:
                reasons[error_reason(reason)] += 1
    duplicates = tuple(sorted(s for s, n in sources.items() if n > 1)[:10])
    return ResultCounts(rows, ok, errors, len(files), frozenset(ids), dict(reasons.most_common(10)), duplicates,
                        per_file)


def count_precisions(out: Location, files: Iterable[str] | None = None) -> list[dict]:
    """What the rows of a run say ran: [{"precision", "cpu_isa", "rows"}] for each pair, most rows first, read
    back from storage (a run resumed on other nodes can mix them). Files written before schema version 2 have
    no `cpu_isa` column and count as "unknown"."""
    files = list(scan_progress(out).files if files is None else files)
    pairs: Counter[tuple[str, str]] = Counter()
    for path in files:
        try:
            with out.fs.open_input_file(path) as f:
                parquet = pq.ParquetFile(f)
                names = parquet.schema_arrow.names
                table = parquet.read(columns=[c for c in (PRECISION, CPU_ISA) if c in names])
        except (OSError, pa.ArrowInvalid):
            # Again through the reader that turns a bad file into a StorageError naming it and the way out.
            table = read_result_file(out, path, None)
            names = table.column_names
        n = table.num_rows
        precision = table.column(PRECISION).to_pylist() if PRECISION in names else ["unknown"] * n
        isa = table.column(CPU_ISA).to_pylist() if CPU_ISA in names else ["unknown"] * n
        pairs.update(zip(precision, isa, strict=True))
    return [{"precision": p, "cpu_isa": c, "rows": n} for (p, c), n in sorted(pairs.items(), key=lambda x: -x[1])]
