"""Predictions from elsewhere, read like a scored run: one Parquet or CSV file, or a directory of them, with an
image id column and one probability column per label, the form CheXNet reimplementations publish.

- id column: `image_id` or NIH's `Image Index`; a path (`images/00000001_000.png`) counts by its file name;
- probability columns: `prob_<Label>` (tilescope's own names), or else bare label names (`Effusion`,
  `Pleural_Thickening`, `Pleural Thickening`, NIH's `Infiltrate`), matched case-insensitively; when any
  `prob_` column is there the bare ones are left alone (files often carry the ground truth under them);
- values must be probabilities in [0, 1]; a row with a missing value is an error row ("no probability for ...").

Every label the file holds is reported; labels it lacks are absent from its run (deltas use the labels both
runs have). open_scored() decides between a tilescope run and such a file, so `--results` takes either.
"""

from __future__ import annotations

import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from storage.fs import Location, StorageError, check_reachable, list_files, resolve
from storage.results import row_status
from storage.scored_runs import ScoredRun, find_run, open_run
from xray.metadata.labels import LABELS, prob_column

ID_COLUMNS = ("image_id", "Image Index")
SUFFIXES = (".parquet", ".csv", ".csv.gz")
_PROB_PREFIX = prob_column("")
_ALIASES = {"infiltrate": "Infiltration"}
_BY_NAME = {label.lower(): label for label in LABELS} | _ALIASES


def is_prediction_file(path: str) -> bool:
    name = posixpath.basename(path)
    return name.lower().endswith(SUFFIXES) and not name.startswith(("_", "."))


def open_scored(uri: str, endpoint: str | None = None, allow_partial: bool = False) -> ScoredRun:
    """`--results`: a run directory of `tilescope score` (or a `score --out` holding one), or predictions from
    elsewhere (a Parquet/CSV file, or a directory of them that is no tilescope run)."""
    loc = resolve(uri, endpoint)
    check_reachable(loc)
    if is_prediction_file(loc.path) and loc.fs.get_file_info(loc.path).is_file:
        return open_predictions(uri, endpoint)
    try:
        find_run(uri, endpoint)
    except StorageError as exc:
        files = [p for p in list_files(loc, recursive=False) if is_prediction_file(p)]
        if not files:
            raise StorageError(f"{exc}; or a Parquet/CSV file (or directory of them) of predictions with an "
                               f"image id column ({' or '.join(ID_COLUMNS)}) and prob_<Label> columns") from exc
        return open_predictions(uri, endpoint)
    return open_run(uri, endpoint, allow_partial)


def open_predictions(uri: str, endpoint: str | None = None) -> ScoredRun:
    """Read a predictions file (or every one in a directory, `_`/`.` names skipped) as a ScoredRun."""
    loc = resolve(uri, endpoint)
    info = loc.fs.get_file_info(loc.path)
    files = [loc.path] if info.is_file else [p for p in list_files(loc, recursive=False) if is_prediction_file(p)]
    if not files:
        raise StorageError(f"--results {uri}: no {', '.join(SUFFIXES)} file here")
    tables = [_read(loc, path) for path in files]
    labels = tuple(label for label in LABELS if all(label in t[1] for t in tables))
    if not labels:
        raise ValueError(f"--results {uri}: no label is in every file (found "
                         f"{sorted({k for _, m, _ in tables for k in m})})")
    ids, sources, probs = [], [], []
    for table, columns, name in tables:
        ids.append(_image_ids(table))
        sources.append(np.array([f"{name}:{row:09d}" for row in range(table.num_rows)], dtype=object))
        probs.append(np.column_stack([_probabilities(table, columns[label], uri, name) for label in labels]))
    image_id, source = np.concatenate(ids), np.concatenate(sources)
    p = np.concatenate(probs).astype(np.float32) if probs else np.empty((0, len(labels)), np.float32)
    missing = np.isnan(p).any(axis=1) | (image_id == "")
    error = np.array([_missing_reason(row, labels) if bad else None for row, bad in zip(p, missing, strict=True)],
                     dtype=object)
    order = np.lexsort((source, image_id))
    return ScoredRun(uri=loc.uri, manifest=None, labels=labels, image_id=image_id[order], source=source[order],
                     status=row_status(~missing)[order], error=error[order],
                     probs=p[order], tile_max=None, heatmap_shape=None, files=tuple(files), endpoint=endpoint,
                     external=True)


def _read(loc: Location, path: str) -> tuple[pa.Table, dict[str, str], str]:
    """(table, label -> its column, file name)."""
    name = posixpath.basename(path)
    where = loc.uri if loc.path == path else f"{loc.uri}/{name}"
    try:
        if name.lower().endswith(".parquet"):
            with loc.fs.open_input_file(path) as f:
                table = pq.read_table(f)
        else:
            with loc.fs.open_input_stream(path, compression="detect") as f:
                table = pacsv.read_csv(f)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StorageError(f"--results {where}: unreadable ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
    return table, _label_columns(table.column_names, where), name


def _label_columns(names: list[str], where: str) -> dict[str, str]:
    prefixed = [n for n in names if n.lower().startswith(_PROB_PREFIX)]
    pool = {n: n[len(_PROB_PREFIX):] for n in prefixed} if prefixed else {n: n for n in names}
    found: dict[str, str] = {}
    for column, bare in pool.items():
        label = _BY_NAME.get(bare.strip().lower().replace(" ", "_").replace("-", "_"))
        if label is None:
            continue
        if label in found:
            raise ValueError(f"--results {where}: columns {found[label]!r} and {column!r} both name {label}")
        found[label] = column
    if not any(n in names for n in ID_COLUMNS):
        raise ValueError(f"--results {where}: no image id column ({' or '.join(ID_COLUMNS)}); columns are "
                         f"{names[:20]}")
    if not found:
        raise ValueError(f"--results {where}: no probability column (prob_<Label> or a label name such as "
                         f"Effusion); columns are {names[:20]}")
    return found


def _image_ids(table: pa.Table) -> np.ndarray:
    column = next(n for n in ID_COLUMNS if n in table.column_names)
    values = table.column(column).cast(pa.string()).to_pylist()
    return np.array([posixpath.basename(v.strip().replace("\\", "/")) if v else "" for v in values], dtype=object)


def _probabilities(table: pa.Table, column: str, uri: str, name: str) -> np.ndarray:
    data = table.column(column)
    if not (pa.types.is_floating(data.type) or pa.types.is_integer(data.type) or pa.types.is_null(data.type)):
        raise ValueError(f"--results {uri} ({name}): column {column!r} is {data.type}, not numbers")
    values = pc.fill_null(data.cast(pa.float64()), np.nan).to_numpy()
    bad = ~np.isnan(values) & ((values < 0.0) | (values > 1.0))
    if bad.any():
        raise ValueError(f"--results {uri} ({name}): column {column!r} holds {int(bad.sum())} values outside "
                         f"[0, 1] (e.g. {values[bad][0]:g}): probabilities expected; apply a sigmoid to logits")
    return values


def _missing_reason(row: np.ndarray, labels: tuple[str, ...]) -> str:
    gaps = [label for label, v in zip(labels, row, strict=True) if np.isnan(v)]
    return f"no probability for {', '.join(gaps)}" if gaps else "no image id"
