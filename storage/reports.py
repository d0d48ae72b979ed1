"""A scoring run read back for a report, the few archive images a report draws, and the report's files.

A run is read through pyarrow.dataset with a column selection: image_id, source, status, error, prob_* and,
when present, tile_max; never images. The `heatmap` column of a tile-ensemble run (fixed_size_list<float32>
of n_labels * gh * gw values laid out (label, row, col), shape in the Parquet schema metadata key
`tilescope.heatmap_shape` as JSON [n_labels, gh, gw], labels in xray.labels.LABELS order) is read only for
the images whose heatmaps are drawn.
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from storage.archives import iter_members, list_shards
from storage.fs import (
    Location,
    StorageError,
    check_reachable,
    exists,
    list_files,
    read_bytes,
    resolve,
    write_bytes_atomic,
)
from storage.results import HEATMAP_SHAPE_KEY, RUN_CLAIM, RUN_MANIFEST, read_json, scan_progress

HEATMAP_COLUMN = "heatmap"
TILE_MAX_COLUMN = "tile_max"
_BASE_COLUMNS = ("image_id", "source", "status", "error")


@dataclass(frozen=True)
class ScoredRun:
    """The rows of one run needed for a report, sorted by (image_id, source); N rows, L labels."""

    uri: str
    manifest: dict | None  # None only for an uncommitted run read with allow_partial
    labels: tuple[str, ...]  # from the prob_* columns, in column order
    image_id: np.ndarray  # (N,) object
    source: np.ndarray  # (N,) object
    status: np.ndarray  # (N,) object: "ok" | "error"
    error: np.ndarray  # (N,) object: None or the reason
    probs: np.ndarray  # (N, L) float32, NaN on error rows
    tile_max: np.ndarray | None  # (N,) float32 when the run has the column
    heatmap_shape: tuple[int, int, int] | None  # (n_labels, gh, gw) when the run has heatmaps
    files: tuple[str, ...]  # chunk files (paths inside the run's filesystem)
    endpoint: str | None


def find_run(uri: str, endpoint: str | None) -> Location:
    """The run directory at uri, or the only run directory one level below it (a `score --out` root).

    Raises StorageError naming the choices when there are none or several.
    """
    loc = resolve(uri, endpoint)
    check_reachable(loc)
    if exists(loc.join(RUN_MANIFEST)) or exists(loc.join(RUN_CLAIM)) or scan_progress(loc).files:
        return loc
    runs = sorted({posixpath.dirname(p) for p in list_files(loc)
                   if posixpath.basename(p) in (RUN_CLAIM, RUN_MANIFEST)
                   and posixpath.dirname(posixpath.dirname(p)) == loc.path})
    if len(runs) == 1:
        return loc.join(posixpath.basename(runs[0]))
    if not runs:
        raise StorageError(f"{uri}: no scoring run here (no part-*.parquet, {RUN_CLAIM} or {RUN_MANIFEST}); "
                           "pass the run directory <out>/<model>-<sha12> written by `tilescope score`")
    names = ", ".join(posixpath.basename(r) for r in runs)
    raise StorageError(f"{uri}: holds several runs ({names}); pass one of them as --results")


def open_run(uri: str, endpoint: str | None = None, allow_partial: bool = False) -> ScoredRun:
    """Read the report columns of a run. Refuses an uncommitted run (no _manifest.json) unless allow_partial."""
    loc = find_run(uri, endpoint)
    manifest = read_json(loc, RUN_MANIFEST)
    if manifest is None and not allow_partial:
        raise ValueError(f"--results {loc.uri}: the run is not committed (no {RUN_MANIFEST}): it is still "
                         "running or was interrupted. Rerun the same `tilescope score` command to finish it, "
                         "or pass --allow-partial to report on the rows written so far")
    files = scan_progress(loc).files
    if not files:
        raise ValueError(f"--results {loc.uri}: the run has no part-*.parquet files")
    dataset = pads.dataset(list(files), filesystem=loc.fs, format="parquet")
    names = dataset.schema.names
    missing = [c for c in _BASE_COLUMNS if c not in names]
    prob_columns = [c for c in names if c.startswith("prob_")]
    if missing or not prob_columns:
        raise ValueError(f"--results {loc.uri}: not a tilescope results table (missing columns "
                         f"{missing + ([] if prob_columns else ['prob_*'])})")
    extra = [TILE_MAX_COLUMN] if TILE_MAX_COLUMN in names else []
    table = dataset.to_table(columns=[*_BASE_COLUMNS, *prob_columns, *extra])
    table = table.sort_by([("image_id", "ascending"), ("source", "ascending")])

    def floats(name: str) -> np.ndarray:
        return pc.fill_null(table.column(name).cast(pa.float32()), np.nan).to_numpy()

    probs = np.column_stack([floats(c) for c in prob_columns]).astype(np.float32, copy=False)
    return ScoredRun(
        uri=loc.uri, manifest=manifest, labels=tuple(c[len("prob_"):] for c in prob_columns),
        image_id=table.column("image_id").to_numpy(zero_copy_only=False),
        source=table.column("source").to_numpy(zero_copy_only=False),
        status=table.column("status").to_numpy(zero_copy_only=False),
        error=table.column("error").to_numpy(zero_copy_only=False),
        probs=probs, tile_max=floats(TILE_MAX_COLUMN) if extra else None,
        heatmap_shape=_heatmap_shape(dataset.schema, loc.uri), files=files, endpoint=endpoint)


def _heatmap_shape(schema: pa.Schema, uri: str) -> tuple[int, int, int] | None:
    if HEATMAP_COLUMN not in schema.names:
        return None
    raw = (schema.metadata or {}).get(HEATMAP_SHAPE_KEY)
    field = schema.field(HEATMAP_COLUMN)
    try:
        shape = tuple(int(v) for v in json.loads(raw))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--results {uri}: column {HEATMAP_COLUMN!r} without a valid "
                         f"{HEATMAP_SHAPE_KEY.decode()} schema metadata entry ({raw!r})") from exc
    if len(shape) != 3 or not pa.types.is_fixed_size_list(field.type) or field.type.list_size != int(np.prod(shape)):
        raise ValueError(f"--results {uri}: heatmap column {field.type} does not match shape {list(shape)}")
    return shape  # type: ignore[return-value]


def read_heatmaps(run: ScoredRun, image_ids: Iterable[str]) -> dict[str, np.ndarray]:
    """image id -> its (n_labels, gh, gw) float32 heatmap, for the ids that have one."""
    ids = sorted(set(image_ids))
    if run.heatmap_shape is None or not ids:
        return {}
    loc = resolve(run.uri, run.endpoint)
    dataset = pads.dataset(list(run.files), filesystem=loc.fs, format="parquet")
    wanted = pc.field("image_id").isin(ids) & pc.field(HEATMAP_COLUMN).is_valid()
    table = dataset.to_table(columns=["image_id", HEATMAP_COLUMN], filter=wanted)
    values = table.column(HEATMAP_COLUMN).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    maps = np.asarray(values, dtype=np.float32).reshape(table.num_rows, *run.heatmap_shape)
    return dict(zip(table.column("image_id").to_pylist(), maps, strict=True))


def fetch_images(archive: str, sources: dict[str, str], endpoint: str | None = None) -> dict[str, bytes]:
    """image id -> encoded bytes for the images named in `sources` (image id -> the run's `source` column).

    Reads only the shards that hold them (a `shard:member` source names its shard) and stops reading a
    shard once its images are found; loose files are read directly. Ids not found are left out.
    """
    found: dict[str, bytes] = {}
    shards = list_shards(archive, endpoint)
    by_shard: dict[str, set[str]] = {}
    for image_id, source in sources.items():
        by_shard.setdefault(source.split(":", 1)[0] if ":" in source else "", set()).add(image_id)
    for shard in shards:
        if shard.kind == "files":
            for uri in shard.files:
                if posixpath.basename(uri) in sources and posixpath.basename(uri) not in found:
                    found[posixpath.basename(uri)] = read_bytes(resolve(uri, endpoint))
            continue
        wanted = by_shard.get(shard.name, set()) - found.keys()
        for member in iter_members(shard, endpoint) if wanted else ():
            if member.image_id in wanted and member.data is not None:
                found[member.image_id] = member.data
                wanted.discard(member.image_id)
                if not wanted:
                    break
    return found


def write_table(out: Location, stem: str, table: pa.Table, formats: tuple[str, ...] = ("csv", "parquet")) -> list[str]:
    """Write the table as `stem.csv` and/or `stem.parquet`, each atomically; returns the names written."""
    names = []
    for fmt in formats:
        buf = io.BytesIO()
        if fmt == "csv":
            pacsv.write_csv(table, buf)
        elif fmt == "parquet":
            pq.write_table(table, buf, compression="zstd")
        else:
            raise ValueError(f"unknown table format {fmt!r} (csv, parquet)")
        write_bytes_atomic(out.join(f"{stem}.{fmt}"), buf.getvalue())
        names.append(f"{stem}.{fmt}")
    return names


def write_text(out: Location, name: str, text: str) -> str:
    write_bytes_atomic(out.join(name), text.encode("utf-8"))
    return name
