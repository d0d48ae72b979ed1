"""The stages of `tilescope score` that run inside Ray Data tasks, and the driver's progress and counts.

Batches are `dict[str, np.ndarray]`; one batch is one chunk (see storage/archive_source.py).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.fs import resolve
from storage.results import results_schema, scan_progress, write_chunk
from xray.decode import decode_many

CARRIED = ("image_id", "source", "shard", "chunk", "last", "rows")


def decode_chunk(batch: dict[str, np.ndarray], size: int, max_pixels: int) -> dict[str, np.ndarray]:
    """raw member bytes -> pixels (N, 1, size, size) uint8 + status/error/decode_ms; bytes dropped."""
    pixels, status, error, millis = decode_many(list(batch["data"]), list(batch["error"]), size, max_pixels)
    out = {name: batch[name] for name in CARRIED}
    out.update(pixels=pixels, status=np.array(status, dtype=object), error=np.array(error, dtype=object),
               decode_ms=millis)
    return out


def write_chunks(batch: dict[str, np.ndarray], out_uri: str, endpoint: str | None, labels: list[str],
                 model: str, artifact_sha256: str, precision: str, run_id: str,
                 heatmap_shape: tuple[int, int, int] | None = None) -> dict[str, np.ndarray]:
    """Write each chunk in the batch as one Parquet file; returns one summary row per chunk.

    Refuses to write a chunk that is not whole (a split chunk would overwrite its own rows).
    """
    out = resolve(out_uri, endpoint)
    schema = results_schema(labels, heatmap_shape)
    n = len(batch["image_id"])
    keys = list(zip(batch["shard"].tolist(), batch["chunk"].tolist(), strict=True))
    summary: dict[str, list] = {"shard": [], "chunk": [], "rows": [], "errors": []}
    for key in dict.fromkeys(keys):
        idx = np.array([i for i in range(n) if keys[i] == key])
        expected = int(batch["rows"][idx[0]])
        if len(idx) != expected:
            raise RuntimeError(f"chunk {key} arrived split ({len(idx)} of {expected} rows); refusing to write")
        columns = {
            "image_id": batch["image_id"][idx], "source": batch["source"][idx],
            "status": batch["status"][idx], "error": batch["error"][idx],
            **{f.name: batch[f.name][idx] for f in schema if f.name.startswith("prob_")},
            "model": [model] * len(idx), "artifact_sha256": [artifact_sha256] * len(idx),
            "precision": [precision] * len(idx), "run_id": [run_id] * len(idx),
            "decode_ms": batch["decode_ms"][idx], "infer_ms": batch["infer_ms"][idx],
        }
        if heatmap_shape is not None:
            heat = np.asarray(batch["heatmap"][idx], dtype=np.float32)
            columns["heatmap"] = [None if np.isnan(row).all() else row.tolist() for row in heat]
            columns["tile_max"] = batch["tile_max"][idx]
        arrays = [pa.array(_nullable(columns[f.name]), type=f.type) for f in schema]
        table = pa.Table.from_arrays(arrays, schema=schema)
        write_chunk(out, key[0], int(key[1]), bool(batch["last"][idx[0]]), table)
        summary["shard"].append(key[0])
        summary["chunk"].append(int(key[1]))
        summary["rows"].append(len(idx))
        summary["errors"].append(int((batch["status"][idx] == "error").sum()))
    # Return the chunk's freed Arrow buffers to the OS: the writer is a long-lived worker (see iter_chunks).
    pa.default_memory_pool().release_unused()
    return {k: np.array(v) for k, v in summary.items()}


def _nullable(values) -> list:
    """numpy -> list with NaN probabilities (error rows) as nulls."""
    if isinstance(values, list):
        return values
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        return [None if np.isnan(v) else float(v) for v in arr]
    return arr.tolist()


class ProgressLine:
    """Prints `images done/total, images/s, errors, ETA` at most every `every_s` seconds, to stdout."""

    def __init__(self, total: int | None, every_s: float, stream=sys.stdout) -> None:
        self.total = total
        self.every_s = every_s
        self.stream = stream
        self.done = 0
        self.errors = 0
        self.t0 = time.perf_counter()
        self.last_print = self.t0

    def update(self, rows: int, errors: int) -> None:
        self.done += rows
        self.errors += errors
        now = time.perf_counter()
        if now - self.last_print >= self.every_s:
            self.last_print = now
            print(self.render(now), file=self.stream, flush=True)

    def render(self, now: float) -> str:
        elapsed = max(now - self.t0, 1e-9)
        rate = self.done / elapsed
        if self.total:
            left = max(self.total - self.done, 0)
            eta = f"{left / rate:.0f}s" if rate > 0 else "?"
            head = f"{self.done}/{self.total} images ({100.0 * self.done / self.total:.1f}%)"
        else:
            eta, head = "?", f"{self.done} images"
        return f"[score] {head}  {rate:.1f} images/s  errors {self.errors}  ETA {eta}"

    def finish(self) -> None:
        print(self.render(time.perf_counter()), file=self.stream, flush=True)


@dataclass(frozen=True)
class ResultCounts:
    rows: int
    ok: int
    errors: int
    files: int
    image_ids: frozenset[str]
    top_errors: dict[str, int]


def count_results(out) -> ResultCounts:
    """Read back only image_id/status/error of every chunk file: the counts come from storage, not memory."""
    files = scan_progress(out).files
    rows = ok = errors = 0
    ids: set[str] = set()
    reasons: Counter[str] = Counter()
    for path in files:
        with out.fs.open_input_file(path) as f:
            table = pq.read_table(f, columns=["image_id", "status", "error"])
        status = table.column("status").to_pylist()
        rows += len(status)
        ok += status.count("ok")
        errors += status.count("error")
        ids.update(table.column("image_id").to_pylist())
        for reason in table.column("error").to_pylist():
            if reason:
                reasons[reason.split(":")[0][:80]] += 1
    return ResultCounts(rows, ok, errors, len(files), frozenset(ids), dict(reasons.most_common(10)))
