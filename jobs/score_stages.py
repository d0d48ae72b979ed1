"""The stages of `tilescope score` that run inside Ray Data tasks, and the driver's progress line.

Batches are `dict[str, np.ndarray]`; one batch is one chunk (see storage/archive_source.py).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pyarrow as pa

from storage.fs import resolve
from storage.results import (
    CHUNK,
    DATA,
    DECODE_MS,
    ERROR,
    IMAGE_ID,
    LAST,
    ROWS,
    SHARD,
    SOURCE,
    STATUS,
    results_schema,
    results_table,
    write_chunk,
)
from xray.decode import decode_many

CARRIED = (IMAGE_ID, SOURCE, SHARD, CHUNK, LAST, ROWS)


def decode_chunk(batch: dict[str, np.ndarray], size: int, max_pixels: int) -> dict[str, np.ndarray]:
    """raw member bytes -> pixels (N, 1, size, size) uint8 + status/error/decode_ms; bytes dropped."""
    pixels, status, error, millis = decode_many(list(batch[DATA]), list(batch[ERROR]), size, max_pixels)
    out = {name: batch[name] for name in CARRIED}
    out.update({"pixels": pixels, STATUS: np.array(status, dtype=object), ERROR: np.array(error, dtype=object),
                DECODE_MS: millis})
    return out


def write_chunks(batch: dict[str, np.ndarray], out_uri: str, endpoint: str | None, labels: list[str],
                 model: str, artifact_sha256: str, precision: str, run_id: str,
                 heatmap_shape: tuple[int, int, int] | None = None) -> dict[str, np.ndarray]:
    """Write each chunk in the batch as one Parquet file; returns one summary row per chunk.

    Refuses to write a chunk that is not whole (a split chunk would overwrite its own rows).
    """
    out = resolve(out_uri, endpoint)
    schema = results_schema(labels, heatmap_shape)
    n = len(batch[IMAGE_ID])
    keys = list(zip(batch[SHARD].tolist(), batch[CHUNK].tolist(), strict=True))
    summary: dict[str, list] = {"shard": [], "chunk": [], "rows": [], "errors": []}
    for key in dict.fromkeys(keys):
        idx = np.array([i for i in range(n) if keys[i] == key])
        expected = int(batch[ROWS][idx[0]])
        if len(idx) != expected:
            raise RuntimeError(f"chunk {key} arrived split ({len(idx)} of {expected} rows); refusing to write")
        table = results_table(batch, idx, schema, model, artifact_sha256, precision, run_id)
        write_chunk(out, key[0], int(key[1]), bool(batch[LAST][idx[0]]), table)
        summary["shard"].append(key[0])
        summary["chunk"].append(int(key[1]))
        summary["rows"].append(len(idx))
        summary["errors"].append(int((batch[STATUS][idx] == "error").sum()))
    # Return the chunk's freed Arrow buffers to the OS: the writer is a long-lived worker (see iter_chunks).
    pa.default_memory_pool().release_unused()
    return {k: np.array(v) for k, v in summary.items()}


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
        if self.total and self.done > self.total:  # the archive holds images the metadata does not list
            eta, head = "?", f"{self.done} images ({self.total} listed)"
        elif self.total:
            left = max(self.total - self.done, 0)
            eta = f"{left / rate:.0f}s" if rate > 0 else "?"
            head = f"{self.done}/{self.total} images ({100.0 * self.done / self.total:.1f}%)"
        else:
            eta, head = "?", f"{self.done} images"
        return f"[score] {head}  {rate:.1f} images/s  errors {self.errors}  ETA {eta}"

    def finish(self) -> None:
        print(self.render(time.perf_counter()), file=self.stream, flush=True)
