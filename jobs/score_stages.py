"""The stages of `tilescope score` that run inside Ray Data tasks, and the driver's progress line and cost.

Batches are `dict[str, np.ndarray]`; one batch is one chunk (see storage/archive_source.py).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cli.progress import WINDOW_S, RecentRate, format_duration
from storage.fs import resolve
from storage.results import (
    CHUNK,
    DATA,
    DECODE_CORE_MS,
    DECODE_MS,
    ERROR,
    IMAGE_ID,
    INFER_CORE_MS,
    INFER_MS,
    LAST,
    ROWS,
    SHARD,
    SOURCE,
    STATUS,
    RowStatus,
    results_schema,
    results_table,
    row_status,
    write_chunk,
)
from xray.codec.decode import decode_many

CARRIED = (IMAGE_ID, SOURCE, SHARD, CHUNK, LAST, ROWS)


def decode_chunk(batch: dict[str, np.ndarray], size: int, max_pixels: int) -> dict[str, np.ndarray]:
    """raw member bytes -> pixels (N, 1, size, size) uint8 + status/error/decode_ms/decode_core_ms; bytes
    dropped. decode_core_ms: this thread's CPU time for the whole chunk (decoding is single-threaded), spread
    evenly over its N rows."""
    started = time.thread_time()
    pixels, decoded, error, millis = decode_many(list(batch[DATA]), list(batch[ERROR]), size, max_pixels)
    core_ms = (time.thread_time() - started) * 1000.0
    out = {name: batch[name] for name in CARRIED}
    n = len(decoded)
    out.update({"pixels": pixels, STATUS: row_status(decoded), ERROR: np.array(error, dtype=object),
                DECODE_MS: millis, DECODE_CORE_MS: np.full(n, core_ms / max(n, 1), dtype=np.float64)})
    return out


def write_chunks(batch: dict[str, np.ndarray], out_uri: str, endpoint: str | None, labels: list[str],
                 model: str, artifact_sha256: str, precision: str, run_id: str,
                 heatmap_shape: tuple[int, int, int] | None = None) -> dict[str, np.ndarray]:
    """Write each chunk in the batch as one Parquet file; returns one summary row per chunk.

    Refuses to write a chunk that is not whole (a split chunk would overwrite its own rows). The summary
    row also sums what the chunk cost (ScoringCost.COLUMNS), for the run manifest.
    """
    out = resolve(out_uri, endpoint)
    schema = results_schema(labels, heatmap_shape)
    n = len(batch[IMAGE_ID])
    keys = list(zip(batch[SHARD].tolist(), batch[CHUNK].tolist(), strict=True))
    summary: dict[str, list] = {"shard": [], "chunk": [], "rows": [], "errors": [], "ok": [],
                                **{c: [] for c in ScoringCost.COLUMNS}}
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
        summary["errors"].append(int((batch[STATUS][idx] == RowStatus.ERROR).sum()))
        summary["ok"].append(int((batch[STATUS][idx] == RowStatus.OK).sum()))
        for column in ScoringCost.COLUMNS:
            summary[column].append(float(np.sum(batch[column][idx], dtype=np.float64)) if column in batch else 0.0)
    # Return the chunk's freed Arrow buffers to the OS: the writer is a long-lived worker (see iter_chunks).
    pa.default_memory_pool().release_unused()
    return {k: np.array(v) for k, v in summary.items()}


class ProgressLine:
    """Prints `images done/total, images/s, errors, ETA` at most every `every_s` seconds, to stdout.

    The rate and ETA come from the last minute of finished chunks, counted from the first one (cli/progress.py):
    a rate from the start would include the actors' start-up and model compilation, and early ETAs would run
    high. Until a second chunk has finished, and on the last line (finish()), the rate is the whole stream's.
    """

    def __init__(self, total: int | None, every_s: float, stream=sys.stdout,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.total = total
        self.every_s = every_s
        self.stream = stream
        self.clock = clock
        self.done = 0
        self.errors = 0
        self.t0 = clock()
        self.last_print = self.t0
        self.recent = RecentRate(max(WINDOW_S, 3 * every_s))

    def update(self, rows: int, errors: int) -> None:
        self.done += rows
        self.errors += errors
        now = self.clock()
        self.recent.add(rows, now)
        # The first line waits for a second chunk: from one chunk there is no recent rate, only one that
        # includes the start-up.
        if now - self.last_print >= self.every_s and self.recent.rate(now) is not None:
            self.last_print = now
            print(self.render(now), file=self.stream, flush=True)

    def render(self, now: float, final: bool = False) -> str:
        rate = None if final else self.recent.rate(now)
        if rate is None:  # the whole stream so far: at the end, or before a second chunk has finished
            rate = self.done / (now - self.t0) if now > self.t0 else None
        if self.total and self.done > self.total:  # the archive holds images the metadata does not list
            eta, head = "?", f"{self.done} images ({self.total} listed)"
        elif self.total:
            eta = format_duration(max(self.total - self.done, 0) / rate if rate else float("inf"))
            head = f"{self.done}/{self.total} images ({100.0 * self.done / self.total:.1f}%)"
        else:
            eta, head = "?", f"{self.done} images"
        speed = f"{rate:.1f} images/s" if rate is not None else "? images/s"
        tail = f"in {format_duration(now - self.t0)}" if final else f"ETA {eta}"
        return f"[score] {head}  {speed}  errors {self.errors}  {tail}"

    def finish(self) -> None:
        print(self.render(self.clock(), final=True), file=self.stream, flush=True)


@dataclass
class ScoringCost:
    """What scoring this attempt's images cost, summed on the driver from the writer's per-chunk rows.

    decode_core_ms: CPU time of decoding (thread time of the decode step, single-threaded); infer_core_ms: CPU
    time of the scorer's process while it scored (every OpenVINO thread, tiling and the join of an ensemble
    included; model compilation excluded); decode_ms / infer_ms: the rows' wall times, summed.
    """

    COLUMNS = (DECODE_CORE_MS, INFER_CORE_MS, DECODE_MS, INFER_MS)

    images: int = 0
    ok: int = 0
    decode_core_ms: float = 0.0
    infer_core_ms: float = 0.0
    decode_ms: float = 0.0
    infer_ms: float = 0.0

    def add(self, summary: dict[str, np.ndarray]) -> None:
        """One batch of the writer's summary rows (write_chunks)."""
        self.images += int(summary["rows"].sum())
        self.ok += int(summary["ok"].sum())
        for column in self.COLUMNS:
            setattr(self, column, getattr(self, column) + float(summary[column].sum()))

    def record(self, positions: int, decode_size: int, model_input_size: int, images_per_s: float,
               scorer_cpus: float) -> dict:
        """The run manifest's `cost`: per-image figures of this attempt (null when it scored no image), so
        that an ensemble run and a single-model run compare from their manifests."""

        def per(total: float, n: int) -> float | None:
            return total / n if n and math.isfinite(total) else None

        decode, infer = per(self.decode_core_ms, self.images), per(self.infer_core_ms, self.ok)
        return {
            "images": self.images, "ok_images": self.ok,
            "positions_per_image": positions,
            "decode_size": decode_size, "model_input_size": model_input_size,
            "decode_core_ms_per_image": decode, "infer_core_ms_per_image": infer,
            "core_ms_per_image": None if decode is None or infer is None else decode + infer,
            "infer_core_ms_per_position": None if infer is None else infer / positions,
            "decode_ms_per_image": per(self.decode_ms, self.images), "infer_ms_per_image": per(self.infer_ms, self.ok),
            "images_per_s": images_per_s if self.images else None, "scorer_cpus": scorer_cpus,
        }
