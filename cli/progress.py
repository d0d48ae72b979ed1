"""Progress lines the drivers print: rates and ETAs from a recent window, and train-tiles' line per round.

A rate averaged from the start includes start-up (Ray, actors, model compilation) and runs low for the
whole job, so early ETAs run high; a window of the last minute follows what the pool does now. Pure: a
clock is passed in, nothing here imports Ray.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

WINDOW_S = 60.0
"""Seconds of history a rate is measured over."""
MIN_SPAN_S = 2.0
"""A rate needs points this far apart: chunks that finish together would give a burst's rate."""


def format_duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`; `?` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class RecentRate:
    """Units per second over the last `window_s` seconds of `add()` calls.

    The window starts at the first call, not at construction: the time before the first unit finished is
    start-up, not throughput. Until the points span `min_span_s` there is no rate yet (None).
    """

    def __init__(self, window_s: float = WINDOW_S, min_span_s: float = MIN_SPAN_S) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self.total = 0.0
        self.points: deque[tuple[float, float]] = deque()
        """(time, total units so far), oldest first; the oldest is kept as the window's base."""

    def add(self, units: float, now: float) -> None:
        self.total += units
        self.points.append((now, self.total))
        while len(self.points) > 2 and now - self.points[1][0] >= self.window_s:
            self.points.popleft()

    def rate(self, now: float) -> float | None:
        if len(self.points) < 2:
            return None
        t0, base = self.points[0]
        if self.points[-1][0] - t0 < self.min_span_s:
            return None
        return (self.total - base) / (now - t0)


class RoundProgress:
    """train-tiles' driver line: one per round, i.e. each time every position has one more epoch, then one
    when every position is exported. Fed by the driver from what its trainer actors return, so no actor
    prints anything and Ray's log dedup folds nothing.

        [train-tiles] round 2/5: 8/20 epochs (0/4 positions trained), 824 tiles/s on 2 actors, val mean AUROC
        0.61-0.74, ETA 1m10s

    tiles/s is the pool's training speed over the epochs since the previous line: each actor's tiles per second
    of training (start-up, checkpoints and waiting excluded), times the actors. The AUROC range is over the
    positions' latest validation mean AUROC. The ETA counts the epochs and exports left, each at the recent
    mean wall time of a unit of its kind, spread over the actors. With `verbose`, each epoch and export also
    gets its own line.
    """

    def __init__(self, n_positions: int, epochs: int, n_trainers: int, stream: TextIO | None = None,
                 verbose: bool = False, clock: Callable[[], float] = time.perf_counter) -> None:
        self.n_positions = n_positions
        self.epochs = epochs
        self.n_trainers = max(1, n_trainers)
        self.stream = stream if stream is not None else sys.stdout
        self.verbose = verbose
        self.clock = clock
        self.done = [0] * n_positions
        self.auroc: dict[int, float] = {}
        self.exported: set[int] = set()
        self.started: dict[int, float] = {}
        self.durations: dict[str, deque[float]] = {"epoch": deque(maxlen=4 * self.n_trainers),
                                                   "export": deque(maxlen=4 * self.n_trainers)}
        self.round = 0
        self.tiles_since = 0.0
        self.train_seconds_since = 0.0

    def unit_started(self, position: int) -> None:
        self.started[position] = self.clock()

    def unit_lost(self, position: int) -> None:
        self.started.pop(position, None)

    def epoch_finished(self, position: int, epochs_done: int, trained: dict | None) -> None:
        """An epoch unit returned: the position's epochs now, and the epoch's history record (None when the
        position had been trained already, e.g. on a rerun)."""
        self._timed("epoch", position, counted=trained is not None)
        self.done[position] = epochs_done
        if trained is not None:
            self.auroc[position] = float(trained["val_mean_auroc"])
            self.tiles_since += float(trained["images_per_s"]) * float(trained["seconds"])
            self.train_seconds_since += float(trained["seconds"])
            if self.verbose:
                self._print(f"[p{position:03d}] epoch {epochs_done}/{self.epochs} loss {trained['loss']:.4f} "
                            f"val mean AUROC {trained['val_mean_auroc']:.4f} {trained['images_per_s']:.1f} tiles/s")
        reached = min(self.done)
        if reached > self.round:
            self.round = reached
            self._print(self.render())

    def export_finished(self, position: int) -> None:
        self._timed("export", position, counted=True)
        self.exported.add(position)
        self.done[position] = max(self.done[position], self.epochs)
        if self.verbose:
            self._print(f"[p{position:03d}] exported FP32 + INT8 ({len(self.exported)}/{self.n_positions})")
        if len(self.exported) == self.n_positions:
            self._print(f"[train-tiles] exported {self.n_positions}/{self.n_positions} positions to FP32 + INT8 "
                        f"IR; joining")

    def render(self) -> str:
        total = self.n_positions * self.epochs
        epochs = sum(min(d, self.epochs) for d in self.done)
        trained = sum(d >= self.epochs for d in self.done)
        speed = self.tiles_since / self.train_seconds_since if self.train_seconds_since > 0 else 0.0
        self.tiles_since = self.train_seconds_since = 0.0
        parts = [f"[train-tiles] round {self.round}/{self.epochs}: {epochs}/{total} epochs ({trained}/"
                 f"{self.n_positions} positions trained)"]
        if speed > 0:
            actors = f"{self.n_trainers} actor" + ("s" if self.n_trainers != 1 else "")
            parts.append(f"{speed * self.n_trainers:.0f} tiles/s on {actors}")
        if self.auroc:
            low, high = min(self.auroc.values()), max(self.auroc.values())
            parts.append(f"val mean AUROC {low:.2f}-{high:.2f}")
        parts.append(f"ETA {format_duration(self.eta_seconds())}")
        return ", ".join(parts)

    def eta_seconds(self) -> float:
        epoch_s = _mean(self.durations["epoch"])
        export_s = _mean(self.durations["export"]) or epoch_s
        if epoch_s is None or export_s is None:
            return math.inf
        epochs_left = sum(max(self.epochs - d, 0) for d in self.done)
        exports_left = self.n_positions - len(self.exported)
        return (epochs_left * epoch_s + exports_left * export_s) / self.n_trainers

    def _timed(self, kind: str, position: int, counted: bool) -> None:
        start = self.started.pop(position, None)
        if start is not None and counted:
            self.durations[kind].append(self.clock() - start)

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def _mean(values: deque[float]) -> float | None:
    return sum(values) / len(values) if values else None


@contextmanager
def stage(job: str, what: str, stream: TextIO | None = None,
          clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """`[job] what ...` when a step starts and `[job] what: done in 12s` when it ends, so a step of seconds or
    minutes (NNCF calibration, starting Ray, compiling a model) is never silent."""
    out = stream or sys.stdout
    print(f"[{job}] {what} ...", file=out, flush=True)
    t0 = clock()
    yield
    print(f"[{job}] {what}: done in {format_duration(clock() - t0)}", file=out, flush=True)


class BatchLine:
    """Progress within a training epoch: at most one line every `every_s` seconds (none for a short epoch), with
    images/s and the epoch's ETA."""

    def __init__(self, job: str, epochs: int, every_s: float = 10.0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.job, self.epochs, self.every_s = job, epochs, every_s
        self.stream = stream or sys.stdout
        self.clock = clock
        self.epoch = 0
        self.t0 = self.last = clock()

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.t0 = self.last = self.clock()

    def update(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.last < self.every_s or done >= total:
            return
        self.last = now
        rate = done / (now - self.t0) if now > self.t0 else 0.0
        eta = format_duration((total - done) / rate) if rate > 0 else "?"
        print(f"[{self.job}] epoch {self.epoch + 1}/{self.epochs}: {done}/{total} images "
              f"({100.0 * done / total:.0f}%), {rate:.1f} images/s, epoch ETA {eta}", file=self.stream, flush=True)


class CountLine:
    """Progress through `total` items of one step (NNCF's calibration passes, inference on evaluation images):
    at most one line every `every_s` seconds, none for a step shorter than that.

        [quantize] NNCF INT8 calibration, pass 2: 120/300 images (40%), 31.5 images/s, ETA 6s

    `tick()` counts one item; counting past `total` starts the next pass over the same items (NNCF may read
    its calibration set more than once), so the line names the pass from the second one on. `then`, if given,
    is printed once when the first pass ends (what the step does next without reading items).
    """

    def __init__(self, job: str, what: str, total: int, every_s: float = 10.0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, then: str | None = None) -> None:
        self.job, self.what, self.total, self.every_s, self.then = job, what, max(1, total), every_s, then
        self.stream = stream or sys.stdout
        self.clock = clock
        self.count = 0
        self.pass_start = self.last = clock()

    def tick(self, items: int = 1) -> None:
        for _ in range(items):
            if self.count and self.count % self.total == 0:
                self.pass_start = self.clock()
            self.count += 1
        now = self.clock()
        done = (self.count - 1) % self.total + 1
        if self.then is not None and self.count >= self.total:
            print(f"[{self.job}] {self.what}: {self.total}/{self.total} images read; {self.then}", file=self.stream,
                  flush=True)
            self.then = None
        if now - self.last < self.every_s or done >= self.total:
            return
        self.last = now
        rate = done / (now - self.pass_start) if now > self.pass_start else 0.0
        eta = format_duration((self.total - done) / rate) if rate > 0 else "?"
        passes = (self.count - 1) // self.total + 1
        what = self.what + (f", pass {passes}" if passes > 1 else "")
        print(f"[{self.job}] {what}: {done}/{self.total} images ({100.0 * done / self.total:.0f}%), "
              f"{rate:.1f} images/s, ETA {eta}", file=self.stream, flush=True)
