"""The scoring output on local disk or S3: one Parquet file per chunk, and a run manifest written last.

Layout under --out, one directory per model artifact so a second model writes beside the first:

    <out>/<model>-<sha12>/part-<shard>-<chunk:05d>[-last].parquet
    <out>/<model>-<sha12>/_run.json        the run's claim (run id, config), written first
    <out>/<model>-<sha12>/_manifest.json   counts, config, versions, throughput: the commit marker

A chunk file name derives from its inputs only, so a retried task overwrites rather than duplicates;
`-last` marks a shard's final chunk, so listing the directory tells which shards are complete. Names
starting with '_' or '.' are skipped by pyarrow/polars dataset readers.
"""

from __future__ import annotations

import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from storage.fs import Location, exists, list_files, read_bytes, write_bytes_atomic
from xray.labels import prob_column

RESULTS_SCHEMA_VERSION = 1
RUN_CLAIM = "_run.json"
RUN_MANIFEST = "_manifest.json"
_CHUNK_RE = re.compile(r"^part-(?P<shard>.+)-(?P<k>\d{5})(?P<last>-last)?\.parquet$")


HEATMAP_SHAPE_KEY = b"tilescope.heatmap_shape"


def results_schema(labels: list[str], heatmap_shape: tuple[int, int, int] | None = None) -> pa.Schema:
    """The versioned output schema: one row per input image.

    A tile-ensemble run adds `heatmap` (fixed-size list of L * C * C float32, (label, row, col) order; its
    shape [L, C, C] is JSON in the schema metadata under tilescope.heatmap_shape) and `tile_max` (float32).
    """
    fields = [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        *[pa.field(prob_column(label), pa.float32()) for label in labels],
        pa.field("model", pa.string(), nullable=False),
        pa.field("artifact_sha256", pa.string(), nullable=False),
        pa.field("precision", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("decode_ms", pa.float32()),
        pa.field("infer_ms", pa.float32()),
    ]
    meta = {b"tilescope.results_schema_version": str(RESULTS_SCHEMA_VERSION).encode()}
    if heatmap_shape is not None:
        size = int(heatmap_shape[0] * heatmap_shape[1] * heatmap_shape[2])
        fields += [pa.field("heatmap", pa.list_(pa.float32(), size)), pa.field("tile_max", pa.float32())]
        meta[HEATMAP_SHAPE_KEY] = json.dumps(list(heatmap_shape)).encode()
    return pa.schema(fields, metadata=meta)


def model_dir_name(model: str, artifact_sha: str) -> str:
    return f"{model}-{artifact_sha[:12]}"


def chunk_file_name(shard: str, k: int, last: bool) -> str:
    return f"part-{shard}-{k:05d}{'-last' if last else ''}.parquet"


def write_chunk(out: Location, shard: str, k: int, last: bool, table: pa.Table) -> str:
    """Write one chunk's rows atomically; returns the file name."""
    name = chunk_file_name(shard, k, last)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(out.join(name), buf.getvalue())
    return name


@dataclass(frozen=True)
class Progress:
    """What is already on storage: chunk indices per shard and the shards known complete."""

    chunks: dict[str, frozenset[int]]
    complete: frozenset[str]
    files: tuple[str, ...]


def scan_progress(out: Location) -> Progress:
    chunks: dict[str, set[int]] = defaultdict(set)
    last: dict[str, int] = {}
    files = []
    for path in list_files(out, recursive=False):
        m = _CHUNK_RE.match(path.rsplit("/", 1)[-1])
        if not m:
            continue
        files.append(path)
        k = int(m["k"])
        chunks[m["shard"]].add(k)
        if m["last"]:
            last[m["shard"]] = k
    complete = {s for s, k in last.items() if chunks[s] >= set(range(k + 1))}
    return Progress({s: frozenset(v) for s, v in chunks.items()}, frozenset(complete), tuple(sorted(files)))


def write_json(loc: Location, name: str, body: dict) -> None:
    write_bytes_atomic(loc.join(name), json.dumps(body, indent=2, sort_keys=True, default=str).encode())


def read_json(loc: Location, name: str) -> dict | None:
    target = loc.join(name)
    return json.loads(read_bytes(target)) if exists(target) else None
