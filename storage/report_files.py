"""The files `tilescope report` writes: its tables (CSV and/or Parquet) and its text files (HTML, JSON)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from storage.fs import Location, write_bytes_atomic


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
