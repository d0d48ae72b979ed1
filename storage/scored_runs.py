"""A scored run read back for `tilescope report`: the rows it needs, never images.

A run is read back through pyarrow.dataset with a column selection: image_id, source, status, error, prob_*
and, when present, tile_max; never images. The `heatmap` column of a tile-ensemble run (fixed_size_list<float32>
of n_labels * gh * gw values laid out (label, row, col), shape in the Parquet schema metadata key
`tilescope.heatmap_shape` as JSON [n_labels, gh, gw], labels in xray.metadata.labels.LABELS order) is read only for
the images whose heatmaps are drawn.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from storage.fs import Location, StorageError, check_reachable, exists, list_files, resolve, uri_of
from storage.results import (
    ERROR,
    HEATMAP,
    HEATMAP_SHAPE_KEY,
    IMAGE_ID,
    PROB_PREFIX,
    RUN_CLAIM,
    RUN_MANIFEST,
    SOURCE,
    STATUS,
    TILE_MAX,
    scan_progress,
)
from storage.run_manifest import RunManifest, read_manifest

_BASE_COLUMNS = (IMAGE_ID, SOURCE, STATUS, ERROR)


@dataclass(frozen=True)
class ScoredRun:
    """The rows of one run needed for a report, sorted by (image_id, source); N rows, L labels."""

    uri: str
    manifest: RunManifest | None  # None only for an uncommitted run read with allow_partial
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
    external: bool = False  # predictions from elsewhere (storage/prediction_files.py): no manifest, no artifact


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


def check_result_files(loc: Location, files: list[str]) -> None:
    """Every part file is a results table of one layout: string id columns, floating prob_* columns, the same
    prob_* columns in each. pyarrow.dataset takes the first file's schema and casts the others to it, so a
    wrong-typed file would otherwise change the figures silently; this names it instead (ValueError)."""
    import pyarrow.parquet as pq

    probs: set[str] | None = None
    for path in files:
        where = f"--results {uri_of(loc, path)}"
        try:
            with loc.fs.open_input_file(path) as f:
                schema = pq.read_schema(f)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ValueError(f"{where}: not a readable Parquet file ({' '.join(str(exc).split())[:200]}); move it "
                             "out of the run directory, and rerun `tilescope score` to rescore its chunk") from exc
        bad = [f"{name} is {schema.field(name).type}" for name in _BASE_COLUMNS
               if name in schema.names and not pa.types.is_string(schema.field(name).type)
               and not pa.types.is_large_string(schema.field(name).type)
               and not (name == ERROR and pa.types.is_null(schema.field(name).type))]
        here = {n for n in schema.names if n.startswith(PROB_PREFIX)}
        bad += [f"{name} is {schema.field(name).type}" for name in sorted(here)
                if not pa.types.is_floating(schema.field(name).type)]
        if probs is not None and here != probs:
            bad.append(f"its prob_* columns differ from the run's other files ({len(here)} vs {len(probs)})")
        if bad:
            raise ValueError(f"{where}: not a tilescope results file ({'; '.join(bad)[:300]}); move it out of the run "
                             "directory, and rerun `tilescope score` to rescore its chunk")
        probs = here if probs is None else probs


def open_run(uri: str, endpoint: str | None = None, allow_partial: bool = False) -> ScoredRun:
    """Read the report columns of a run. Refuses an uncommitted run (no _manifest.json) unless allow_partial."""
    loc = find_run(uri, endpoint)
    manifest = read_manifest(loc)
    if manifest is None and not allow_partial:
        raise ValueError(f"--results {loc.uri}: the run is not committed (no {RUN_MANIFEST}): it is still "
                         "running or was interrupted. Rerun the same `tilescope score` command to finish it, "
                         "or pass --allow-partial to report on the rows written so far")
    files = scan_progress(loc).files
    if not files:
        raise ValueError(f"--results {loc.uri}: the run has no part-*.parquet files")
    check_result_files(loc, list(files))
    dataset = pads.dataset(list(files), filesystem=loc.fs, format="parquet")
    names = dataset.schema.names
    missing = [c for c in _BASE_COLUMNS if c not in names]
    prob_columns = [c for c in names if c.startswith(PROB_PREFIX)]
    if missing or not prob_columns:
        raise ValueError(f"--results {loc.uri}: not a tilescope results table (missing columns "
                         f"{missing + ([] if prob_columns else [PROB_PREFIX + '*'])})")
    extra = [TILE_MAX] if TILE_MAX in names else []
    table = dataset.to_table(columns=[*_BASE_COLUMNS, *prob_columns, *extra])
    table = table.sort_by([(IMAGE_ID, "ascending"), (SOURCE, "ascending")])

    def floats(name: str) -> np.ndarray:
        return pc.fill_null(table.column(name).cast(pa.float32()), np.nan).to_numpy()

    probs = np.column_stack([floats(c) for c in prob_columns]).astype(np.float32, copy=False)
    return ScoredRun(
        uri=loc.uri, manifest=manifest, labels=tuple(c[len(PROB_PREFIX):] for c in prob_columns),
        image_id=table.column(IMAGE_ID).to_numpy(zero_copy_only=False),
        source=table.column(SOURCE).to_numpy(zero_copy_only=False),
        status=table.column(STATUS).to_numpy(zero_copy_only=False),
        error=table.column(ERROR).to_numpy(zero_copy_only=False),
        probs=probs, tile_max=floats(TILE_MAX) if extra else None,
        heatmap_shape=_heatmap_shape(dataset.schema, loc.uri), files=files, endpoint=endpoint)


def _heatmap_shape(schema: pa.Schema, uri: str) -> tuple[int, int, int] | None:
    if HEATMAP not in schema.names:
        return None
    raw = (schema.metadata or {}).get(HEATMAP_SHAPE_KEY)
    field = schema.field(HEATMAP)
    try:
        shape = tuple(int(v) for v in json.loads(raw))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--results {uri}: column {HEATMAP!r} without a valid "
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
    wanted = pc.field(IMAGE_ID).isin(ids) & pc.field(HEATMAP).is_valid()
    table = dataset.to_table(columns=[IMAGE_ID, HEATMAP], filter=wanted)
    values = table.column(HEATMAP).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    maps = np.asarray(values, dtype=np.float32).reshape(table.num_rows, *run.heatmap_shape)
    return dict(zip(table.column(IMAGE_ID).to_pylist(), maps, strict=True))
