"""Reading `report --ground-truth` tables (CSV, CSV.gz or Parquet; local or s3://) and `--label-map` files
(YAML or JSON), as plain values for xray.metadata.expert_labels and xray.metadata.label_maps to parse.

Every cell is read as text (a YES/NO column stays YES/NO, an image id like 00000013_008.png stays itself), so
the parsers see the file as written.
"""

from __future__ import annotations

import posixpath

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from storage.fs import StorageError, check_reachable, read_bytes, resolve
from xray.metadata.expert_labels import ExpertTable, parse_expert_table
from xray.metadata.label_maps import LabelMap, label_map_from_mapping, parse_label_map

TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
MAP_SUFFIXES = (".yaml", ".yml", ".json")


def read_columns(uri: str, endpoint: str | None = None) -> dict[str, list[str | None]]:
    """A table file -> {column: cells as text (None where empty in Parquet)}, in the file's column order."""
    name = posixpath.basename(uri.rstrip("/")).lower()
    if not name.endswith(TABLE_SUFFIXES):
        raise ValueError(f"--ground-truth {uri}: expected a .csv, .csv.gz or .parquet file")
    loc = resolve(uri, endpoint)
    check_reachable(loc)
    try:
        if name.endswith(".parquet"):
            with loc.fs.open_input_file(loc.path) as f:
                table = pq.read_table(f)
        else:
            with loc.fs.open_input_stream(loc.path, compression="detect") as f:
                # Every column as text: the reads stay as written (YES/NO, 1/0, empty).
                first = pacsv.open_csv(f).schema.names
            with loc.fs.open_input_stream(loc.path, compression="detect") as f:
                table = pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in first}, strings_can_be_null=False))
    except FileNotFoundError as exc:
        raise StorageError(f"--ground-truth {uri}: no such file") from exc
    except (OSError, pa.ArrowInvalid) as exc:
        raise StorageError(f"--ground-truth {uri}: unreadable ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
    return {c: [None if v is None else str(v) for v in table.column(c).to_pylist()] for c in table.column_names}


def read_ground_truth(uri: str, label_map: LabelMap | None, endpoint: str | None = None) -> ExpertTable:
    """One --ground-truth file, parsed (its label columns from the map when one is given)."""
    return parse_expert_table(read_columns(uri, endpoint), uri, label_map)


def read_label_map(value: str, endpoint: str | None = None) -> LabelMap:
    """A --label-map value: a YAML/JSON file (local or s3://) of `Expert label: outputs`, or the map inline
    (`Nodule or mass: max(Nodule, Mass); Pneumothorax: Pneumothorax`)."""
    if value.strip().lower().endswith(MAP_SUFFIXES) and "\n" not in value and ";" not in value:
        try:
            data = read_bytes(resolve(value.strip(), endpoint))
        except OSError as exc:
            reason = str(exc).splitlines()[0].replace(f"{value.strip()}: ", "") if str(exc) else "unreadable"
            raise StorageError(f"--label-map {value}: {reason}") from exc
        try:
            body = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise ValueError(f"--label-map {value}: not YAML ({str(exc).splitlines()[0]})") from exc
        return label_map_from_mapping(body, f"--label-map {value}")
    return parse_label_map(value, f"--label-map {value!r}")
