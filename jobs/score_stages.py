"""The stages of `tilescope score` that run inside Ray Data tasks, and the driver's progress line and cost.

Batches are `dict[str, np.ndarray]`; one batch is one chunk (see storage/archive_source.py).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

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
    READ_CORE_MS,
    ROWS,
    SHARD,
    SOURCE,
    STATUS,
    WRITE_CORE_MS,
    RowStatus,
    results_schema,
    results_table,
    row_status,
    write_chunk,
)
from xray.codec.decode import decode_many

CARRIED = (IMAGE_ID, SOURCE, SHARD, CHUNK, LAST, ROWS, READ_CORE_MS)


def pixels_column(size: int, sizes: tuple[int, ...]) -> str:
    """The batch column holding an image decoded to `size`: `pixels` when the pass decodes to one size, else
    `pixels@<size>` (several models of different input sizes in one pass)."""
    return "pixels" if len(sizes) <= 1 else f"pixels@{size}"


def decode_chunk(batch: dict[str, np.ndarray], size: int, max_pixels: int,
                 sizes: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """raw member bytes -> pixels (N, 1, size, size) uint8 + status/error/decode_ms/decode_core_ms; bytes
    dropped. decode_core_ms: this thread's CPU time for the whole chunk (decoding is single-threaded), spread
    evenly over its N rows. With several `sizes` (a pass scoring models of different input sizes), each image is
    decoded once per size into `pixels@<size>` (pixels_column); a row is ok only where every size decoded."""
    sizes = sizes or (size,)
    started = time.thread_time()
    out = {name: batch[name] for name in CARRIED}
    decoded_all, reasons, millis_all = None, None, None
    for s in sizes:
        pixels, decoded, error, millis = decode_many(list(batch[DATA]), list(batch[ERROR]), s, max_pixels)
        out[pixels_column(s, sizes)] = pixels
        if decoded_all is None:
            decoded_all, reasons, millis_all = decoded, error, millis
        else:
            reasons = [r or e for r, e in zip(reasons, error, strict=True)]
            decoded_all, millis_all = decoded_all & decoded, millis_all + millis
    core_ms = (time.thread_time() - started) * 1000.0
    n = len(decoded_all)
    out.update({STATUS: row_status(decoded_all), ERROR: np.array(reasons, dtype=object),
                DECODE_MS: millis_all, DECODE_CORE_MS: np.full(n, core_ms / max(n, 1), dtype=np.float64)})
    return out


@dataclass(frozen=True)
class WriteTarget:
    """One model's run directory in a scoring pass, as the writer needs it. `prefix`: where the batch holds this
    model's columns ("" for a single-model pass; "<k>/" when several models score each chunk, actors/multi_scorer.py).
    `done`: (shard, chunk) already written there, left alone (a pass re-reads them for another model)."""

    out_uri: str
    labels: tuple[str, ...]
    model: str
    artifact_sha256: str
    run_id: str
    heatmap_shape: tuple[int, int, int] | None = None
    prefix: str = ""
    done: frozenset[tuple[str, int]] = frozenset()


def target_view(batch: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The batch as one model's scorer left it: the shared columns, and this model's columns without `prefix`."""
    if not prefix:
        return batch
    view = {name: column for name, column in batch.items() if "/" not in name}
    view.update({name[len(prefix):]: column for name, column in batch.items() if name.startswith(prefix)})
    return view


def write_chunks(batch: dict[str, np.ndarray], targets: list[WriteTarget], endpoint: str | None,
                 precision: str) -> dict[str, np.ndarray]:
    """Write each chunk in the batch as one Parquet file per target (a target's `done` chunks are skipped);
    returns one summary row per (target, chunk) written, `target` being its index in `targets`.

    Refuses to write a chunk that is not whole (a split chunk would overwrite its own rows). The summary
    row also sums what the chunk cost (ScoringCost.COLUMNS; writing it: this thread's CPU time for building and
    writing its Parquet file), for the run manifest.
    """
    n = len(batch[IMAGE_ID])
    keys = list(zip(batch[SHARD].tolist(), batch[CHUNK].tolist(), strict=True))
    summary: dict[str, list] = {"target": [], "shard": [], "chunk": [], "rows": [], "errors": [], "ok": [],
                                **{c: [] for c in ScoringCost.COLUMNS}}
    for index, target in enumerate(targets):
        out = resolve(target.out_uri, endpoint)
        view = target_view(batch, target.prefix)
        schema = results_schema(list(target.labels), target.heatmap_shape)
        for key in dict.fromkeys(keys):
            idx = np.array([i for i in range(n) if keys[i] == key])
            expected = int(view[ROWS][idx[0]])
            if len(idx) != expected:
                raise RuntimeError(f"chunk {key} arrived split ({len(idx)} of {expected} rows); refusing to write")
            if (key[0], int(key[1])) in target.done:
                continue
            started = time.thread_time()
            table = results_table(view, idx, schema, target.model, target.artifact_sha256, precision, target.run_id)
            write_chunk(out, key[0], int(key[1]), bool(view[LAST][idx[0]]), table)
            summary[WRITE_CORE_MS].append((time.thread_time() - started) * 1000.0)
            summary["target"].append(index)
            summary["shard"].append(key[0])
            summary["chunk"].append(int(key[1]))
            summary["rows"].append(len(idx))
            summary["errors"].append(int((view[STATUS][idx] == RowStatus.ERROR).sum()))
            summary["ok"].append(int((view[STATUS][idx] == RowStatus.OK).sum()))
            for column in ScoringCost.COLUMNS:
                if column != WRITE_CORE_MS:
                    summary[column].append(float(np.sum(view[column][idx], dtype=np.float64)) if column in view
                                           else 0.0)
    # Return the chunk's freed Arrow buffers to the OS: the writer is a long-lived worker (see iter_chunks).
    pa.default_memory_pool().release_unused()
    return {k: np.array(v) for k, v in summary.items()}


class ProgressLine:
    """Prints `images done/total, images/s, errors, ETA` at most every `every_s` seconds, to stdout.

    The rate and ETA come from the last minute of finished chunks, counted from the first one (cli/progress.py):
    a rate from the start would include the actors' start-up and model compilation, and early ETAs would run
    high. Until a second chunk has finished, and on the last line (finish()), the rate is the whole stream's.
    """

    def __init__(self, total: int | None, every_s: float, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.total = total
        self.every_s = every_s
        self.stream = stream  # None: sys.stdout as it is when a line is printed (tests swap it)
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
            print(self.render(now), file=self.stream or sys.stdout, flush=True)

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
        print(self.render(self.clock(), final=True), file=self.stream or sys.stdout, flush=True)


@dataclass
class ScoringCost:
    """What scoring this attempt's images cost, summed on the driver from the writer's per-chunk rows, and the CPU
    time of the whole run from the processes' own counters (actors/node_cpu.py).

    read_core_ms: the read tasks' CPU time (fetching and inflating the shards); decode_core_ms: decoding (thread
    time of the decode step, single-threaded); infer_core_ms: the scorer's process while it scored (every OpenVINO
    thread, tiling and the join of an ensemble included; model compilation excluded); write_core_ms: building and
    writing the Parquet files; decode_ms / infer_ms: the rows' wall times, summed. all_core_ms: every Ray
    process's and the driver's CPU time over the stream (set by the job).
    """

    COLUMNS = (READ_CORE_MS, DECODE_CORE_MS, INFER_CORE_MS, WRITE_CORE_MS, DECODE_MS, INFER_MS)

    images: int = 0
    ok: int = 0
    read_core_ms: float = 0.0
    decode_core_ms: float = 0.0
    infer_core_ms: float = 0.0
    write_core_ms: float = 0.0
    decode_ms: float = 0.0
    infer_ms: float = 0.0
    all_core_ms: float | None = None
    models_in_pass: int = 1
    other_infer_core_ms: float = 0.0
    other_write_core_ms: float = 0.0
    """The other models' inference and writing in the same pass (`tilescope score --model A --model B`): the
    pass's read, decode and CPU total are shared, so its accounting needs them."""

    def add(self, summary: dict[str, np.ndarray]) -> None:
        """One batch of the writer's summary rows (write_chunks)."""
        self.images += int(summary["rows"].sum())
        self.ok += int(summary["ok"].sum())
        for column in self.COLUMNS:
            setattr(self, column, getattr(self, column) + float(summary[column].sum()))

    def record(self, positions: int, decode_size: int, model_input_size: int, images_per_s: float,
               scorer_cpus: float, cores: float | None = None) -> dict:
        """The run manifest's `cost`: per-image figures of this attempt (null when it scored no image), so
        that an ensemble run and a single-model run compare from their manifests.

        With the run's `cores` (the cluster's CPUs), every core-ms of the stream is accounted for: cores / T =
        read + decode + inference + write + rest (the other CPU time of Ray's processes and the driver: Ray Data
        scheduling, object transfers, serialisation) + idle (cores not busy at all). Overhead = cores / T - decode -
        inference, and the pipeline efficiency = T * (decode + inference) / cores. With several models in one pass,
        inference there is every model's (the others' in other_models_infer_core_ms_per_image), and so is writing
        in `rest`'s subtraction: the figures are the pass's, the same in each model's manifest."""

        def per(total: float | None, n: int) -> float | None:
            return total / n if n and total is not None and math.isfinite(total) else None

        read, decode = per(self.read_core_ms, self.images), per(self.decode_core_ms, self.images)
        infer, write = per(self.infer_core_ms, self.ok), per(self.write_core_ms, self.images)
        others = per(self.other_infer_core_ms, self.ok) or 0.0
        own = None if decode is None or infer is None else decode + infer
        work = None if own is None else own + others  # the pass's decode and every model's inference
        spent = per(self.all_core_ms, self.images)
        wall = 1000.0 * cores / images_per_s if cores and images_per_s > 0 and self.images else None
        other_write = per(self.other_write_core_ms, self.images) or 0.0
        named = None if None in (read, write, work) else read + work + write + other_write
        return {
            "images": self.images, "ok_images": self.ok,
            "positions_per_image": positions,
            "decode_size": decode_size, "model_input_size": model_input_size,
            "read_core_ms_per_image": read, "decode_core_ms_per_image": decode, "infer_core_ms_per_image": infer,
            "write_core_ms_per_image": write,
            "core_ms_per_image": own,
            "models_in_pass": self.models_in_pass, "other_models_infer_core_ms_per_image": others if own else None,
            "other_models_write_core_ms_per_image": other_write if own else None,
            "infer_core_ms_per_position": None if infer is None else infer / positions,
            "rest_core_ms_per_image": None if spent is None or named is None else spent - named,
            "all_core_ms_per_image": spent,
            "idle_core_ms_per_image": None if spent is None or wall is None else wall - spent,
            "wall_core_ms_per_image": wall,
            "overhead_core_ms_per_image": None if wall is None or work is None else wall - work,
            "efficiency": None if wall is None or work is None else work / wall,
            "decode_ms_per_image": per(self.decode_ms, self.images), "infer_ms_per_image": per(self.infer_ms, self.ok),
            "images_per_s": images_per_s if self.images else None, "scorer_cpus": scorer_cpus, "cores": cores,
        }



def cost_line(record: dict) -> str:
    """The completion line's part for a `cost` record: per image, decode + inference, then the efficiency and
    where the overhead went ("" when nothing was scored)."""
    r = record
    if r["core_ms_per_image"] is None:
        return ""
    text = (f", {r['core_ms_per_image']:.1f} core-ms per image: decode {r['decode_core_ms_per_image']:.1f} + "
            f"{r['positions_per_image']} model run(s) {r['infer_core_ms_per_image']:.1f}")
    if r["efficiency"] is not None:
        text += f"; efficiency {r['efficiency']:.2f}, overhead {r['overhead_core_ms_per_image']:.1f} core-ms per image"
        if r["rest_core_ms_per_image"] is not None:
            text += (f" (read {r['read_core_ms_per_image']:.1f}, write {r['write_core_ms_per_image']:.1f}, Ray and "
                     f"driver {r['rest_core_ms_per_image']:.1f}, idle {r['idle_core_ms_per_image']:.1f})")
    return text
