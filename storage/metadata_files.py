"""Read an archive's NIH metadata files (Data_Entry_2017.csv, split lists, bbox list) from local or S3.

The split lists and the bbox list are looked up next to the Data_Entry CSV, as NIH ships them.
"""

from __future__ import annotations

import posixpath

from storage.fs import StorageError, exists, read_bytes, resolve
from xray.metadata.nih import ArchiveMetadata, parse_bbox_list, parse_data_entry, parse_split_list

DATA_ENTRY = "Data_Entry_2017.csv"
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
SYNTH_MARKER = "tilescope_synth.json"
"""Written by `tilescope synth` beside its metadata: the archive is synthetic (the report says so)."""
BBOX_LIST = "BBox_List_2017.csv"


def default_metadata_uri(archive: str) -> str:
    """Data_Entry_2017.csv beside the shards (archive is a directory or prefix) or beside the one shard."""
    base = archive.rstrip("/")
    if base.endswith((".tar", ".tar.gz", ".tgz")):
        base = posixpath.dirname(base)
    return f"{base}/{DATA_ENTRY}"


def load_metadata(metadata_uri: str, endpoint: str | None = None) -> ArchiveMetadata:
    """Parse Data_Entry and, when present beside it, the split lists and the bbox list.

    Raises StorageError when the CSV is missing, ValueError (with line numbers) when it is malformed.
    """
    loc = resolve(metadata_uri, endpoint)
    if not exists(loc):
        raise StorageError(f"{metadata_uri}: metadata CSV not found (pass --metadata)")
    try:
        entries = parse_data_entry(read_bytes(loc), source=metadata_uri)
    except ValueError as exc:
        raise ValueError(f"--metadata: {exc}") from None
    parent = metadata_uri.rstrip("/").rsplit("/", 1)[0]

    def optional(name: str) -> bytes | None:
        sibling = resolve(f"{parent}/{name}", endpoint)
        return read_bytes(sibling) if exists(sibling) else None

    train_val = optional(TRAIN_VAL_LIST)
    test = optional(TEST_LIST)
    bbox = optional(BBOX_LIST)
    return ArchiveMetadata(
        entries=tuple(entries),
        train_val=tuple(parse_split_list(train_val, TRAIN_VAL_LIST)) if train_val is not None else None,
        test=tuple(parse_split_list(test, TEST_LIST)) if test is not None else None,
        bboxes=tuple(parse_bbox_list(bbox, BBOX_LIST)) if bbox is not None else (),
    )
